"""Evaluation metrics: against itself a policy has KL exactly 0; a moved policy has positive KL; ranges hold."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers")

from rlopt.alignment.evaluation import evaluate_policy  # noqa: E402
from rlopt.alignment.models import build_tiny_model, load_causal_lm, load_tokenizer  # noqa: E402
from rlopt.alignment.tasks import get_task  # noqa: E402


@pytest.fixture
def tiny(tmp_path):
    path = build_tiny_model(tmp_path / "m", seed=0)
    return load_causal_lm(path), load_tokenizer(path)


def test_policy_against_itself(tiny):
    model, tok = tiny
    task = get_task("sort5")
    prompts = task.eval_prompts(32)
    m = evaluate_policy(model, copy.deepcopy(model), tok, task, prompts, samples_per_prompt=2, seed=4)
    assert m["samples"] == 64
    assert abs(m["kl_k1"]) < 1e-5 and abs(m["kl_k3"]) < 1e-5
    assert -1.0 <= m["gold_reward"] <= 1.0 and m["gold_reward_se"] > 0
    assert 0.0 <= m["eos_rate"] <= 1.0 and 0.0 <= m["exact_rate"] <= 1.0 and m["length"] > 0
    assert 0.0 <= m["win_rate_vs_ref"] <= 1.0


def test_kl_grows_when_the_policy_moves(tiny):
    model, tok = tiny
    task = get_task("sort5")
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved.lm_head.weight.add_(0.5 * torch.randn_like(moved.lm_head.weight))
    m = evaluate_policy(
        moved, model, tok, task, task.eval_prompts(32), samples_per_prompt=2, proxy_reward=lambda p, c: [1.5] * len(p)
    )
    assert m["kl_k1"] > 0.05 and m["kl_k3"] > 0.0 and m["proxy_reward"] == pytest.approx(1.5)
