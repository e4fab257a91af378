"""Bradley–Terry reward model: loss and gradients equal the installed TRL RewardTrainer's on the same batch,
and scoring texts reads the last real token whatever the padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

import datasets  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402

from rlopt.alignment.models import build_tiny_model, load_tokenizer  # noqa: E402
from rlopt.alignment.reward_model import RewardConfig, RewardTrainer, score  # noqa: E402
from rlopt.alignment.tasks import get_task, spaced  # noqa: E402
from tests.helpers import assert_same_loss_and_grads  # noqa: E402


def pairs(n=8):
    task, rng = get_task("sort5"), np.random.default_rng(0)
    return datasets.Dataset.from_list(
        [
            {
                "prompt": p,
                "chosen": " " + spaced([*task.answer(p), "<eos>"]),
                "rejected": " " + spaced([*task.corrupt(p, rng), "<eos>"]),
            }
            for p in task.train_prompts(n, seed=0)
        ]
    )


@pytest.mark.parametrize("center", [None, 0.01])
def test_reward_loss_and_gradients_equal_trl(tmp_path, center):
    import trl

    path = build_tiny_model(tmp_path / "rm", seed=0, reward_model=True)
    model, tok = AutoModelForSequenceClassification.from_pretrained(path), load_tokenizer(path)
    data = pairs()
    ours = RewardTrainer(
        model,
        RewardConfig(output_dir=str(tmp_path / "o"), report_to="none", center_rewards_coefficient=center),
        data,
        tok,
    )
    theirs = trl.RewardTrainer(
        model=model,
        args=trl.RewardConfig(
            output_dir=str(tmp_path / "t"), report_to="none", bf16=False, center_rewards_coefficient=center
        ),
        train_dataset=data,
        processing_class=tok,
    )
    assert_same_loss_and_grads(model, ours, theirs)


def test_score_reads_the_last_real_token(tmp_path):
    path = build_tiny_model(tmp_path / "rm", seed=0, reward_model=True)
    model, tok = AutoModelForSequenceClassification.from_pretrained(path).eval(), load_tokenizer(path)
    prompts, completions = ["3 8 1 |", "1 2 3 4 5 |"], ["1 3 8 <eos>", "1 <eos>"]
    batched = score(model, tok, prompts, completions)
    alone = torch.cat([score(model, tok, [p], [c]) for p, c in zip(prompts, completions)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    assert tok.padding_side == "left"  # restored
