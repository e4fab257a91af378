"""VPO (spec §5.7) and APO (§6.6) inside the trainers: reductions to (online/iterative) DPO and the exact
size of the added terms."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import datasets  # noqa: E402

from rlopt.alignment.apo import apo_reference_columns, sequence_pair_logps  # noqa: E402
from rlopt.alignment.dpo import DPOConfig, DPOTrainer  # noqa: E402
from rlopt.alignment.models import build_tiny_model, load_causal_lm, load_tokenizer  # noqa: E402
from rlopt.alignment.online import OnlineDPOConfig, OnlineDPOTrainer  # noqa: E402
from rlopt.alignment.tasks import get_task, spaced  # noqa: E402
from rlopt.alignment.vpo import OnlineVPOConfig, OnlineVPOTrainer, VPOConfig, VPOTrainer  # noqa: E402

TASK = get_task("sort5")


def pairs(n=8):
    rng = np.random.default_rng(0)
    return datasets.Dataset.from_list(
        [
            {
                "prompt": p,
                "chosen": " " + spaced([*TASK.answer(p), "<eos>"]),
                "rejected": " " + spaced([*TASK.corrupt(p, rng), "<eos>"]),
            }
            for p in TASK.train_prompts(n, seed=0)
        ]
    )


@pytest.fixture
def models(tmp_path):
    path = build_tiny_model(tmp_path / "m", seed=0)
    policy, ref = load_causal_lm(path), load_causal_lm(path)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return path, policy, ref, load_tokenizer(path)


def args(tmp_path, cls, **kw):
    return cls(output_dir=str(tmp_path / "o"), report_to="none", per_device_train_batch_size=4, **kw)


def test_offline_vpo_is_dpo_plus_the_value_term(models, tmp_path):
    _, policy, ref, tok = models
    data = pairs()
    dpo = DPOTrainer(policy, args(tmp_path, DPOConfig, beta=0.2), data, tok, ref_model=ref)
    batch = dpo.data_collator([dpo.train_dataset[i] for i in range(4)])
    with torch.no_grad():
        loss_dpo = dpo.compute_loss(policy, batch)
        chosen, _ = dpo.pair_logps(policy, batch)
        ref_chosen, _ = dpo.pair_logps(ref, batch)
        for alpha in (0.0, 0.5):
            vpo = VPOTrainer(policy, args(tmp_path, VPOConfig, beta=0.2, alpha=alpha), data, tok, ref_model=ref)
            expected = loss_dpo - alpha * 0.2 * (chosen - ref_chosen).mean()  # s = −1: pessimism
            assert vpo.compute_loss(policy, batch).item() == pytest.approx(expected.item(), abs=1e-6)
    assert abs((chosen - ref_chosen).mean().item()) > 1e-3


def test_online_vpo_adds_the_calibrated_value_of_reference_samples(models, tmp_path):
    path, policy, ref, tok = models
    prompts = datasets.Dataset.from_list([{"prompt": p} for p in TASK.train_prompts(8, seed=0)])
    gold = lambda p, c: TASK.gold_rewards(p, c)
    batch = {"prompts": TASK.eval_prompts(8)}
    losses, seen = {}, {}
    for alpha in (0.0, 0.3):
        trainer = OnlineVPOTrainer(
            policy, args(tmp_path, OnlineVPOConfig, alpha=alpha), prompts, tok, gold, ref_model=copy.deepcopy(ref)
        )
        terms = trainer.extra_terms
        trainer.extra_terms = lambda model, p, terms=terms: seen.update(terms(model, p)) or dict(seen)
        torch.manual_seed(11)
        losses[alpha] = trainer.compute_loss(policy, batch).item()
    value = 0.1 * (seen["cal_policy"] - seen["cal_ref"]).mean().item()  # β = 0.1
    assert abs(value) > 1e-4
    assert losses[0.3] == pytest.approx(losses[0.0] + 0.3 * value, abs=1e-6)  # s = +1: optimism
    # α = 0 is online DPO: the pair is drawn before the calibration sample, so the same seed gives the same loss
    online = OnlineDPOTrainer(policy, args(tmp_path, OnlineDPOConfig), prompts, tok, gold, ref_model=ref)
    torch.manual_seed(11)
    assert online.compute_loss(policy, batch).item() == pytest.approx(losses[0.0], abs=1e-6)


def test_apo_columns_reduce_to_iterative_dpo(models, tmp_path):
    """α = 0: the extrapolated reference is π_t, so DPO on the APO columns equals DPO against π_t; with
    π_{t−1} = π_t any α gives the same; and the columns are (1+α) L_t − α L_{t−1} exactly."""
    _, current, previous, tok = models
    data = pairs()
    zero = apo_reference_columns(data, tok, current, previous, alpha=0.0)
    w, lose = sequence_pair_logps(current, zero, tok.pad_token_id)
    torch.testing.assert_close(torch.tensor(zero["ref_chosen_logps"]), w)
    same = apo_reference_columns(data, tok, current, current, alpha=0.7)
    torch.testing.assert_close(torch.tensor(same["ref_rejected_logps"]), lose)
    mixed = apo_reference_columns(data, tok, current, previous, alpha=0.3)
    pw, _ = sequence_pair_logps(previous, mixed, tok.pad_token_id)
    torch.testing.assert_close(torch.tensor(mixed["ref_chosen_logps"]), 1.3 * w - 0.3 * pw, atol=1e-5, rtol=1e-5)

    policy = copy.deepcopy(current)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cols = DPOTrainer(policy, args(tmp_path, DPOConfig), zero, tok)
    moving = DPOTrainer(policy, args(tmp_path, DPOConfig), data, tok, ref_model=current)
    rows = [cols.train_dataset[i] for i in range(4)]
    with torch.no_grad():
        a = cols.compute_loss(policy, cols.data_collator(rows))
        b = moving.compute_loss(policy, moving.data_collator([moving.train_dataset[i] for i in range(4)]))
    assert a.item() == pytest.approx(b.item(), abs=1e-6)
