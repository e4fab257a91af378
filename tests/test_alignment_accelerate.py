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
