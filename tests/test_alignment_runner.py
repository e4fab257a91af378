"""Alignment runs through the command line (train.py / evaluate.py / plot-frontier) on tiny budgets: every
shipped config loads, bad configs are one clear error naming the key, SFT -> RM/DPO/VPO/XPO/online VPO/APO
chain end to end, LoRA, and exact resume of an online run (stopped at step 2, resumed to 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from safetensors.torch import load_file  # noqa: E402

from rlopt.alignment.frontier import upper_envelope  # noqa: E402
from rlopt.alignment.runner import load_alignment_config  # noqa: E402
from rlopt.cli import evaluate_main, plot_frontier_main, train_main  # noqa: E402
from rlopt.config import ConfigError, read_yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "alignment").glob("*/*.yaml"))
SMALL_EVAL = ["evaluation.prompts=16", "evaluation.samples_per_prompt=1", "evaluation.periodic_prompts=8"]
QUIET = ["report_to=none", "disable_tqdm=true", "save_strategy=no", *SMALL_EVAL]


def train(config: str, out: Path, *overrides: str, stop_at: int = 0) -> int:
    argv = ["--config", str(ROOT / "configs" / "alignment" / config), f"output_dir={out}", *QUIET, *overrides]
    if stop_at:
        argv += ["--stop-at", str(stop_at)]
    return train_main(argv)


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("align") / "sft"
    assert (
        train("sft/sort5.yaml", out, "dataset.num_examples=512", "max_steps=8", "per_device_train_batch_size=64") == 0
    )
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_load(path):
    run = load_alignment_config(read_yaml(path))
    assert run.spec.algo == path.parent.name and run.spec.task == "sort5"
    assert run.args.output_dir.startswith("runs/alignment/")


@pytest.mark.parametrize(
    "override, names",
    [
        ("learnin_rate=1e-3", "learnin_rate"),
        ("max_steps=abc", "max_steps"),
        ("beta=-1", "beta"),
        ("task=sort9", "task"),
        ("reward.source=oracle", "reward.source"),
        ("dataset.tempo=1", "dataset.tempo"),
        ("lr_scheduler_type=wobbly", "wobbly"),
    ],
)
def test_bad_alignment_config_is_one_error_naming_the_key(override, names):
    data = read_yaml(ROOT / "configs" / "alignment" / "xpo" / "sort5.yaml")
    key, value = override.split("=")
    from rlopt.config import merge, parse_overrides

    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_alignment_config(merge(data, parse_overrides([f"{key}={value}"])))


def test_missing_model_folder_and_bad_dataset_are_clear(tmp_path, sft_dir, capsys):
    code = train("dpo/sort5.yaml", tmp_path / "x", f"model_name_or_path={tmp_path / 'nope'}")
    assert code == 2 and "model_name_or_path" in capsys.readouterr().err
    code = train("xpo/sort5.yaml", tmp_path / "r", f"model_name_or_path={sft_dir}", "resume_from_checkpoint=true")
    assert code == 2 and "no checkpoint" in capsys.readouterr().err
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(json.dumps({"prompt": "1 2 3 4 5 |", "chosen": " 1 2 3 4 5"}) + "\n")
    with pytest.raises(ValueError, match="rejected"):
        train("dpo/sort5.yaml", tmp_path / "y", "model_name_or_path=tiny", f"dataset.path={bad}")


def test_sft_run_writes_model_config_and_eval(sft_dir):
    assert (sft_dir / "model.safetensors").is_file() and (sft_dir / "tokenizer.json").is_file()
    result = json.loads((sft_dir / "eval.json").read_text())
    assert result["algo"] == "sft" and result["samples"] == 16
    assert {"gold_reward", "kl_k1", "kl_k3", "exact_rate", "eos_rate", "win_rate_vs_ref"} <= set(result)
    assert (sft_dir / "data" / "train" / "dataset_info.json").is_file()  # the generated dataset, saved


@pytest.mark.parametrize(
    "config, extra",
    [
        ("rm/sort5.yaml", ["dataset.num_examples=200", "max_steps=3"]),
        ("dpo/sort5.yaml", ["dataset.num_examples=200", "max_steps=3", "evaluation.every_steps=2"]),
        ("vpo/sort5.yaml", ["dataset.num_examples=200", "max_steps=2"]),
        ("xpo/sort5.yaml", ["max_steps=2", "per_device_train_batch_size=8", "evaluation.every_steps=1"]),
        ("online_vpo/sort5.yaml", ["max_steps=2", "per_device_train_batch_size=8"]),
        ("apo/sort5.yaml", ["rounds=2", "prompts_per_round=32", "num_train_epochs=1", "dataset.num_examples=64"]),
    ],
)
def test_chain_from_the_sft_folder(sft_dir, tmp_path, config, extra):
    """Each method trains from the SFT output folder (the reference defaults to it) and evaluates."""
    algo = config.split("/")[0]
    source = ["dataset.generator=" + str(sft_dir)] if algo == "rm" else [f"model_name_or_path={sft_dir}"]
    out = tmp_path / algo
    assert train(config, out, *source, *extra) == 0
    result = json.loads((out / "eval.json").read_text())
    if algo == "rm":
        assert 0.0 <= result["heldout_accuracy"] <= 1.0 and result["heldout_pairs"] > 0
        return
    assert result["reference"] == str(sft_dir) and result["kl_k3"] >= 0.0  # k3 terms are never negative
    history = [json.loads(x) for x in (out / "eval_history.jsonl").read_text().splitlines()]
    x = "round" if algo == "apo" else "step"
    assert history[0][x] == 0 and history[0]["kl_k1"] == pytest.approx(0.0, abs=1e-5)
    assert [h[x] for h in history][-1] == (2 if algo in ("apo", "xpo") else history[-1][x])
    # evaluate.py on the folder reproduces the final evaluation
    assert evaluate_main([str(out), "--prompts", "16", "--samples", "1"]) == 0
    again = json.loads((out / "eval.json").read_text())
    assert again["gold_reward"] == pytest.approx(result["gold_reward"]) and again["kl_k1"] == pytest.approx(
        result["kl_k1"], abs=1e-5
    )


def test_lora_xpo_reference_is_the_base(sft_dir, tmp_path):
    """LoRA: adapters are trained, the reference is the policy with adapters disabled (= the SFT folder), and
    the saved model is merged; at step 0 the KL to the reference is exactly 0."""
    pytest.importorskip("peft")
    out = tmp_path / "lora"
    code = train(
        "xpo/sort5.yaml",
        out,
        f"model_name_or_path={sft_dir}",
        "max_steps=3",
        "per_device_train_batch_size=8",
        "learning_rate=5e-2",
        "lora.r=4",
        "evaluation.every_steps=3",
        "save_strategy=steps",
        "save_steps=3",
    )
    assert code == 0
    # a checkpoint of a LoRA run holds the adapters only; evaluate.py merges them onto the base
    assert (out / "checkpoint-3" / "adapter_config.json").is_file()
    assert evaluate_main([str(out), "--checkpoint", "checkpoint-3", "--prompts", "16", "--samples", "1"]) == 0
    from_checkpoint = json.loads((out / "eval.json").read_text())
    assert evaluate_main([str(out), "--prompts", "16", "--samples", "1"]) == 0
    assert json.loads((out / "eval.json").read_text())["kl_k1"] == pytest.approx(from_checkpoint["kl_k1"], abs=1e-4)
    history = [json.loads(x) for x in (out / "eval_history.jsonl").read_text().splitlines()]
    assert history[0]["kl_k1"] == pytest.approx(0.0, abs=1e-6)
    merged, base = load_file(out / "model.safetensors"), load_file(sft_dir / "model.safetensors")
    assert set(merged) == set(base)  # a plain model folder, no adapter weights left
    changed = [k for k in base if not (merged[k] == base[k]).all()]
    assert changed and all("attn" in k or "mlp" in k for k in changed), changed  # only LoRA-targeted layers moved


def test_online_resume_is_exact(sft_dir, tmp_path):
    common = [
        f"model_name_or_path={sft_dir}",
        "max_steps=4",
        "per_device_train_batch_size=8",
        "save_strategy=steps",
        "save_steps=2",
        "evaluation.every_steps=2",
    ]
    assert train("xpo/sort5.yaml", tmp_path / "full", *common) == 0
    assert train("xpo/sort5.yaml", tmp_path / "split", *common, stop_at=2) == 0
    assert train_main(["--resume", str(tmp_path / "split")]) == 0
    full, split = (
        load_file(tmp_path / "full" / "model.safetensors"),
        load_file(tmp_path / "split" / "model.safetensors"),
    )
    assert all((full[k] == split[k]).all() for k in full)
    rows = lambda d: (tmp_path / d / "eval_history.jsonl").read_text().splitlines()  # noqa: E731
    assert rows("full") == rows("split")


def test_plot_frontier(sft_dir, tmp_path, capsys):
    assert upper_envelope([(1.0, 0.5), (0.5, 0.2), (2.0, 0.4), (3.0, 0.7)]) == [(0.5, 0.2), (1.0, 0.5), (3.0, 0.7)]
    out = tmp_path / "frontier.png"
    assert plot_frontier_main([str(sft_dir), str(tmp_path / "missing"), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert out.is_file() and summary["groups"]["sft"]["points"] >= 1
    assert plot_frontier_main([str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_lora_reference_context_is_the_base_model(sft_dir):
    peft = pytest.importorskip("peft")
    import torch

    from rlopt.alignment.models import load_causal_lm, reference

    base = load_causal_lm(sft_dir).eval()
    policy = peft.get_peft_model(load_causal_lm(sft_dir), peft.LoraConfig(r=4, task_type="CAUSAL_LM")).eval()
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_()
    ids = torch.tensor([[4, 5, 6, 7, 8, 15]])
    with torch.no_grad():
        adapted = policy(input_ids=ids).logits
        with reference(None, policy) as ref:
            off = ref(input_ids=ids).logits
        expected = base(input_ids=ids).logits
    assert not torch.allclose(adapted, expected, atol=1e-3)
    torch.testing.assert_close(off, expected)
    with pytest.raises(ValueError, match="no reference"):
        with reference(None, base):
            pass
