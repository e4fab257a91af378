"""The tiny offline model and tokenizer of spec alignment.md §8.1: built locally, saved as an HF folder,
loaded back through the same `from_pretrained` path a hub id takes."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from rlopt.alignment.models import (  # noqa: E402
    build_tiny_model,
    count_parameters,
    load_causal_lm,
    load_tokenizer,
    tiny_tokenizer,
)
from rlopt.alignment.tasks import SYMBOLS  # noqa: E402


def test_tokenizer_round_trip_and_ids():
    tok = tiny_tokenizer()
    assert len(tok) == 16
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    ids = tok("3 8 1 8 5 |")["input_ids"]
    assert ids == [SYMBOLS.index(s) for s in "3 8 1 8 5 |".split()]
    assert tok.decode(ids + [2, 0]) == "3 8 1 8 5 | <eos> <pad>"
    assert tok.decode(ids + [2, 0], skip_special_tokens=True) == "3 8 1 8 5 |"
    batch = tok(["1 2 |", "4 + 5 6 ="], padding=True)
    assert batch["input_ids"][0][:2] == [0, 0] and batch["attention_mask"][0][:2] == [0, 0]  # left padding


def test_tiny_model_folder_loads_like_a_hub_checkpoint(tmp_path):
    path = build_tiny_model(tmp_path / "tiny", seed=3)
    model, tok = load_causal_lm(path), load_tokenizer(path)
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert 80_000 < count_parameters(model) < 150_000  # ~0.1 M (spec §8.1)
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()  # untied head
    assert tok.padding_side == "left" and tok.pad_token_id == 0
    again = load_causal_lm(build_tiny_model(tmp_path / "again", seed=3))
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)  # same seed, same weights
    other = load_causal_lm(build_tiny_model(tmp_path / "other", seed=4))
    assert not torch.equal(model.lm_head.weight, other.lm_head.weight)
    ids = torch.tensor([tok("3 8 1 8 5 |")["input_ids"]])
    assert model(ids).logits.shape == (1, 6, 16)


def test_tiny_reward_model_folder(tmp_path):
    from transformers import AutoModelForSequenceClassification

    path = build_tiny_model(tmp_path / "rm", reward_model=True)
    rm = AutoModelForSequenceClassification.from_pretrained(path)
    assert rm.config.num_labels == 1 and rm.config.pad_token_id == 0
    scores = rm(torch.tensor([[3, 4, 5, 15, 4, 2]])).logits
    assert scores.shape == (1, 1)
