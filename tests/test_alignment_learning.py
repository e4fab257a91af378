"""Alignment learning check (spec alignment.md §8.4, DPO row): on sort-5 (standard coverage), SFT a tiny
reference, label pairs of its samples with the gold BT oracle (T = 0.1), run DPO — the gold reward of
held-out prompts must rise by ≥ 0.1 at KL(π‖ref) ≤ 5 nats."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")

import datasets  # noqa: E402

from rlopt.alignment.dpo import DPOConfig, DPOTrainer  # noqa: E402
from rlopt.alignment.evaluation import evaluate_policy  # noqa: E402
from rlopt.alignment.models import build_tiny_model, load_causal_lm, load_tokenizer  # noqa: E402
from rlopt.alignment.sft import SFTConfig, SFTTrainer  # noqa: E402
from rlopt.alignment.tasks import get_task, sample_preference_pairs  # noqa: E402


def gold_and_kl(policy, ref, tok, task, prompts) -> tuple[float, float]:
    """Mean gold reward of 2 samples per prompt and the mean sequence log-ratio (k1) to the reference on them."""
    metrics = evaluate_policy(policy, ref, tok, task, prompts, samples_per_prompt=2, seed=123)
    return metrics["gold_reward"], metrics["kl_k1"]


@pytest.mark.slow
def test_dpo_improves_gold_reward_on_sort5(tmp_path):
    torch.manual_seed(0)
    task = get_task("sort5")
    path = build_tiny_model(tmp_path / "init", seed=0)
    model, tok = load_causal_lm(path), load_tokenizer(path)
    common = dict(report_to="none", save_strategy="no", disable_tqdm=True, seed=0)
    SFTTrainer(
        model,
        SFTConfig(
            output_dir=str(tmp_path / "sft"),
            per_device_train_batch_size=128,
            num_train_epochs=2,
            learning_rate=3e-3,
            lr_scheduler_type="cosine",
            **common,
        ),
        datasets.Dataset.from_list(task.sft_examples(8000, seed=0)),
        tok,
    ).train()
    model.save_pretrained(tmp_path / "sft_model")
    ref = load_causal_lm(tmp_path / "sft_model").eval()
    prompts = task.eval_prompts(256)
    sft_gold, _ = gold_and_kl(ref, ref, tok, task, prompts)

    pairs = sample_preference_pairs(task, ref, tok, task.train_prompts(3000, seed=7), temperature=0.1, seed=0)
    policy = load_causal_lm(tmp_path / "sft_model")
    DPOTrainer(
        policy,
        DPOConfig(
            output_dir=str(tmp_path / "dpo"),
            per_device_train_batch_size=64,
            num_train_epochs=2,
            learning_rate=1e-3,
            beta=0.1,
            **common,
        ),
        datasets.Dataset.from_list(pairs),
        tok,
        ref_model=ref,
    ).train()
    dpo_gold, kl = gold_and_kl(policy, ref, tok, task, prompts)
    print(f"sort-5: SFT gold {sft_gold:.3f} -> DPO gold {dpo_gold:.3f} at KL {kl:.2f} nats ({len(pairs)} pairs)")
    assert dpo_gold >= sft_gold + 0.1 and 0 <= kl <= 5.0, (sft_gold, dpo_gold, kl)
