"""`accelerate launch` with configs/accelerate/cpu_2proc.yaml: two CPU processes (DDP over gloo) take the
same DPO steps as one process with the same global batch (first loss and the weights after two steps)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("accelerate")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "dpo_first_step.py"


@pytest.mark.slow
def test_two_process_first_step_equals_one_process(tmp_path):
    if shutil.which("accelerate") is None:
        pytest.skip("the accelerate CLI is not on PATH")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    single_cmd = [sys.executable, str(SCRIPT), str(one), "--batch", "8", "--steps", "2"]
    subprocess.run(single_cmd, cwd=ROOT, check=True, capture_output=True)
    subprocess.run(
        [
            "accelerate",
            "launch",
            "--config_file",
            "configs/accelerate/cpu_2proc.yaml",
            str(SCRIPT),
            str(two),
            "--batch",
            "4",
            "--steps",
            "2",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    single, double = json.loads(one.read_text()), json.loads(two.read_text())
    assert (single["world_size"], double["world_size"]) == (1, 2)
    assert double["loss"] == pytest.approx(single["loss"], abs=1e-6)
    first, second = load_file(one.with_suffix(".safetensors")), load_file(two.with_suffix(".safetensors"))
    assert sorted(first) == sorted(second)
    assert single["moved"] > 1e-5  # the steps changed the weights, so equal weights mean equal updates
    # plain SGD (lr 0.05) in the script: measured 1.5e-8 apart here; a process that used only its half batch
    # ends 2e-3 away, and the steps move the weights by 2.5e-3
    for name in first:
        torch.testing.assert_close(second[name], first[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("name", ["cpu_2proc", "multi_gpu", "zero2", "zero3", "fsdp"])
def test_accelerate_configs_parse(name):
    """Every shipped accelerate config loads with accelerate's own parser (only cpu_2proc is run here)."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.num_processes >= 2 and config.num_machines == 1


@pytest.mark.parametrize("env, name", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_sharding_config_that_accelerate_ignores_is_one_clear_error(monkeypatch, env, name):
    """accelerate silently trains unsharded when FSDP/DeepSpeed cannot apply (no CUDA); we refuse instead."""
    from rlopt.alignment.trainer import check_sharding_applied

    check_sharding_applied(fsdp_enabled=False, deepspeed_enabled=False)  # nothing asked: fine
    monkeypatch.setenv(env, "true")
    with pytest.raises(ValueError, match=f"asks for {name}, but accelerate did not apply it"):
        check_sharding_applied(fsdp_enabled=False, deepspeed_enabled=False)
    check_sharding_applied(fsdp_enabled=True, deepspeed_enabled=True)  # asked and applied: fine


def launch_env(config_file: Path) -> dict[str, str]:
    """The environment `accelerate launch --config_file <config_file>` gives its processes (accelerate's own
    launcher code, called without launching)."""
    try:
        from accelerate.commands.launch import _validate_launch_command, launch_command_parser
        from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env
    except ImportError as error:  # private helpers: a later accelerate may move them
        pytest.skip(f"accelerate's launcher helpers moved: {error}")
    args = launch_command_parser().parse_args(["--config_file", str(config_file), "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


@pytest.mark.parametrize(
    "name, flag, error",
    [("zero3", "zero3_init_flag", "DeepSpeed ZeRO-3"), ("fsdp", "fsdp_cpu_ram_efficient_loading", "meta device")],
)
def test_shipped_sharded_configs_keep_the_reference_loadable(monkeypatch, tmp_path, name, flag, error):
    """Under the shipped zero3/fsdp configs every process loads the reference whole; flipping the one flag that
    would partition it at load time (ZeRO-3 init) or leave it on the meta device (FSDP's RAM-efficient loading)
    is one clear error when a trainer is built, not a crash in its first reference forward."""
    import yaml

    from rlopt.alignment.trainer import check_sharding_supported

    shipped = ROOT / "configs" / "accelerate" / f"{name}.yaml"
    config = yaml.safe_load(shipped.read_text())
    section = config["deepspeed_config" if name == "zero3" else "fsdp_config"]
    assert section[flag] is False
    for key, value in launch_env(shipped).items():
        monkeypatch.setenv(key, value)
    check_sharding_supported()
    section[flag] = True
    flipped = tmp_path / f"{name}.yaml"
    flipped.write_text(yaml.safe_dump(config))
    for key, value in launch_env(flipped).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=error):
        check_sharding_supported()


def test_fsdp_launch_env_on_cpu_fails_when_the_trainer_is_built(monkeypatch, tmp_path):
    """What `accelerate launch --config_file configs/accelerate/fsdp.yaml` sets, on this CPU machine."""
    from rlopt.alignment.dpo import DPOConfig, DPOTrainer
    from rlopt.alignment.models import build_tiny_model, load_causal_lm, load_tokenizer
    from tests.test_alignment_dpo import preference_dataset

    path = build_tiny_model(tmp_path / "m", seed=0)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    args = DPOConfig(output_dir=str(tmp_path / "out"), report_to="none")
    with pytest.raises(ValueError, match="asks for FSDP"):
        DPOTrainer(load_causal_lm(path), args, preference_dataset(4), load_tokenizer(path))
