"""Synthetic tasks (spec alignment.md §8.2–8.3): gold rewards, SFT corruption mix, held-out prompts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rlopt.alignment.tasks import (
    SYMBOLS,
    add2_reward,
    bt_preference,
    get_task,
    parse_completion,
    sort5_exact,
    sort5_reward,
)

PROMPT = "3 8 1 8 5 |"


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("1 3 5 8 8 <eos>", 1.0),  # the sorted answer
        ("1 3 5 8 8 <eos> 9 9 <pad>", 1.0),  # nothing after <eos> counts
        ("1 3 5 8 8", 0.5),  # no <eos>: −0.5
        ("3 8 1 8 5 <eos>", 0.2),  # the prompt's order: only position 4 (8) matches
        ("1 3 5 8 <eos>", 0.8 - 0.1),  # one digit short
        ("1 3 5 8 8 8 <eos>", 1.0 - 0.1),  # one too many
        ("<eos>", -0.5),  # empty: 0 matches, length penalty 0.5
        ("1 3 + 8 8 <eos>", 0.8),  # a non-digit never matches but counts in the length
        ("9 9 9 9 9 9 9 9", -0.8),  # 0 matches − 0.3 (length 8) − 0.5 (no <eos>)
        ("<pad> 1 3 5 8 8 <eos>", 1.0),  # padding is ignored
    ],
)
def test_sort5_gold_reward(completion, expected):
    assert sort5_reward(PROMPT, completion) == pytest.approx(expected)


def test_sort5_reward_is_clipped_and_exact_solve():
    long_wrong = " ".join(["+"] * 30)  # 0 − 2.5 − 0.5 → −1
    assert sort5_reward(PROMPT, long_wrong) == -1.0
    assert sort5_exact(PROMPT, "1 3 5 8 8 <eos>") and not sort5_exact(PROMPT, "1 3 5 8 8")
    assert parse_completion("13 5<eos>x") == (["1", "3", "5"], True)


def test_add2_gold_reward():
    assert add2_reward("4 2 + 1 7 =", "5 9 <eos>") == 1.0
    assert add2_reward("4 2 + 1 7 =", "5 9") == 0.0  # no <eos>
    assert add2_reward("4 2 + 1 7 =", "6 9 <eos>") == 0.0
    assert add2_reward("9 9 + 9 9 =", "1 9 8 <eos> 7") == 1.0
    assert add2_reward("0 + 0 =", "0 <eos>") == 1.0


def test_vocabulary_has_sixteen_symbols_in_spec_order():
    assert len(SYMBOLS) == 16 and SYMBOLS[:3] == ["<pad>", "<bos>", "<eos>"]


@pytest.mark.parametrize("name", ["sort5", "add2"])
def test_eval_prompts_fixed_and_held_out(name):
    task = get_task(name)
    first, again = task.eval_prompts(200), task.eval_prompts(200)
    assert first == again and len(set(first)) == 200
    train = task.train_prompts(3000, seed=0, exclude_eval=200)
    assert not set(train) & set(first)
    assert task.train_prompts(50, seed=1) != task.train_prompts(50, seed=2)


def test_sort5_sft_mix_matches_the_spec():
    """p_good of the answers are correct; corruptions split 40/30/30 into permutation / replace / drop-dup."""
    task = get_task("sort5")
    examples = task.sft_examples(6000, seed=0, p_good=0.3)
    kinds = Counter()
    for ex in examples:
        assert ex["completion"].endswith("<eos>")
        digits = ex["completion"].split()[:-1]
        target = sorted(c for c in ex["prompt"] if c.isdigit())
        if digits == target:
            kinds["good"] += 1
        elif len(digits) != 5:
            kinds["drop_dup"] += 1
        elif sorted(digits) == target:
            kinds["permutation"] += 1  # (a permutation can be the sorted order: counted as good)
        else:
            kinds["replace"] += 1
    n = len(examples)
    assert kinds["good"] / n == pytest.approx(0.3 + 0.7 * 0.4 * 0.02, abs=0.03)
    assert kinds["permutation"] / n == pytest.approx(0.7 * 0.4, abs=0.03)
    assert kinds["replace"] / n == pytest.approx(0.7 * 0.3, abs=0.03)
    assert kinds["drop_dup"] / n == pytest.approx(0.7 * 0.3, abs=0.03)


def test_add2_sft_mix():
    task = get_task("add2")
    examples = task.sft_examples(4000, seed=0)
    correct = [add2_reward(ex["prompt"], ex["completion"]) for ex in examples]
    assert np.mean(correct) == pytest.approx(0.5, abs=0.03)


def test_bt_oracle_probability():
    rng = np.random.default_rng(0)
    wins = np.mean([bt_preference(0.6, 0.5, 0.1, rng) for _ in range(20_000)])
    assert wins == pytest.approx(1 / (1 + np.exp(-1.0)), abs=0.01)
    assert bt_preference(1.0, -1.0, 1e-3, rng) and not bt_preference(-1.0, 1.0, 1e-3, rng)


def test_unknown_task_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown task 'sort6'"):
        get_task("sort6")


def test_sample_preference_pairs(tmp_path):
    pytest.importorskip("transformers")
    from rlopt.alignment.models import build_tiny_model, load_causal_lm, load_tokenizer
    from rlopt.alignment.tasks import sample_preference_pairs

    path = build_tiny_model(tmp_path / "m", seed=0)
    model, tok = load_causal_lm(path), load_tokenizer(path)
    task = get_task("sort5")
    prompts = task.train_prompts(64, seed=5)
    sharp = sample_preference_pairs(task, model, tok, prompts, temperature=1e-6, seed=0)
    assert 0 < len(sharp) <= 64
    for row in sharp:
        assert row["chosen"] != row["rejected"]  # identical pairs are dropped
        assert row["gold_chosen"] >= row["gold_rejected"]  # a near-noiseless oracle follows the gold order
        assert row["gold_chosen"] == task.reward(row["prompt"], row["chosen"])
    noisy = sample_preference_pairs(task, model, tok, prompts, temperature=100.0, seed=0)
    flipped = sum(r["gold_chosen"] < r["gold_rejected"] for r in noisy)
    assert flipped > 0  # at a high temperature the labels are close to coin flips
    assert sample_preference_pairs(task, model, tok, prompts, 0.1, seed=3) == sample_preference_pairs(
        task, model, tok, prompts, 0.1, seed=3
    )
