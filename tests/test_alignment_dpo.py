"""DPO on transformers.Trainer: loss and gradients equal the installed TRL DPOTrainer's on the same model
and batch (sigmoid loss), and a malformed dataset is one clear error naming the columns."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

import datasets  # noqa: E402

from rlopt.alignment.dpo import DPOConfig, DPOTrainer  # noqa: E402
from rlopt.alignment.models import build_tiny_model, load_causal_lm, load_tokenizer  # noqa: E402
from rlopt.alignment.tasks import get_task, spaced  # noqa: E402
from tests.helpers import assert_same_loss_and_grads  # noqa: E402


def preference_dataset(n: int = 8) -> datasets.Dataset:
    task, rng = get_task("sort5"), np.random.default_rng(0)
    rows = []
    for prompt in task.train_prompts(n, seed=0):
        rows.append(
            {
                "prompt": prompt,
                "chosen": " " + spaced([*task.answer(prompt), "<eos>"]),
                "rejected": " " + spaced(task.corrupt(prompt, rng)),  # no <eos>: both trainers append one
            }
        )
    return datasets.Dataset.from_list(rows)


def small_config(out, **overrides) -> DPOConfig:
    """The short CPU run these tests train: batch 4, lr 1e-2, a log line per step, no saving."""
    values = dict(
        output_dir=str(out),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        save_strategy="no",
        logging_steps=1,
        report_to="none",
    )
    return DPOConfig(**{**values, **overrides})


@pytest.fixture
def models(tmp_path):
    path = build_tiny_model(tmp_path / "sft", seed=0)
    policy, ref = load_causal_lm(path), load_causal_lm(path)
    torch.manual_seed(1)
    with torch.no_grad():  # move the policy off the reference so z != 0
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return path, policy, ref


def test_dpo_loss_and_gradients_equal_trl(models, tmp_path):
    import trl

    path, policy, ref = models
    tok = load_tokenizer(path)
    data = preference_dataset()
    common = dict(per_device_train_batch_size=4, report_to="none", bf16=False, beta=0.1)
    ours = DPOTrainer(policy, DPOConfig(output_dir=str(tmp_path / "ours"), **common), data, tok, ref_model=ref)
    theirs = trl.DPOTrainer(
        model=policy,
        ref_model=ref,
        args=trl.DPOConfig(output_dir=str(tmp_path / "trl"), **common),
        train_dataset=data,
        processing_class=tok,
    )
    loss_ours, _ = assert_same_loss_and_grads(policy, ours, theirs)
    assert abs(loss_ours - np.log(2)) > 1e-3  # the policy differs from the reference


def test_precomputed_reference_columns_replace_the_reference_model(models, tmp_path):
    path, policy, ref = models
    tok = load_tokenizer(path)
    trainer = DPOTrainer(
        policy, DPOConfig(output_dir=str(tmp_path / "a"), report_to="none"), preference_dataset(), tok, ref_model=ref
    )
    rows = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(rows)
    with torch.no_grad():
        loss_model = trainer.compute_loss(policy, batch)
        ref_chosen, ref_rejected = trainer.pair_logps(ref, batch)
        shift = torch.tensor([0.0, 3.0, -2.0, 7.5])  # any per-prompt constant cancels (§1.3)
        for row, c, r, s in zip(rows, ref_chosen, ref_rejected, shift):
            row["ref_chosen_logps"], row["ref_rejected_logps"] = float(c + s), float(r + s)
        loss_columns = trainer.compute_loss(policy, trainer.data_collator(rows))
    assert loss_columns.item() == pytest.approx(loss_model.item(), abs=1e-6)


def test_malformed_preference_dataset_is_one_clear_error(models, tmp_path):
    path, policy, ref = models
    bad = datasets.Dataset.from_list([{"prompt": "1 |", "chosen": " 1 <eos>", "loser": " 2"}])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['rejected'\]"):
        DPOTrainer(
            policy,
            DPOConfig(output_dir=str(tmp_path / "x"), report_to="none"),
            bad,
            load_tokenizer(path),
            ref_model=ref,
        )
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(output_dir=str(tmp_path / "y"), beta=0.0)


def test_resume_continues_exactly(models, tmp_path):
    """A 4-step run interrupted after step 2 and resumed from its checkpoint gives the same losses and final
    weights as the uninterrupted run (same schedule: the interruption is a stop, not a shorter max_steps)."""
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def __init__(self, step):
            self.step = step

        def on_step_end(self, args, state, control, **kwargs):
            steps_run.append(state.global_step)
            if state.global_step == self.step:
                control.should_save = True
                control.should_training_stop = True

    path, _, _ = models
    tok = load_tokenizer(path)
    data = preference_dataset(16)
    steps_run: list[int] = []

    def run(out, stop_at=None, resume=False):
        policy = load_causal_lm(path)
        trainer = DPOTrainer(policy, small_config(out, seed=3), data, tok, callbacks=[StopAt(stop_at or -1)])
        trainer.train(resume_from_checkpoint=resume or None)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        return losses, {k: v.clone() for k, v in policy.state_dict().items()}

    straight_losses, straight_weights = run(tmp_path / "straight")
    first_losses, _ = run(tmp_path / "split", stop_at=2)
    steps_run.clear()
    resumed_losses, resumed_weights = run(tmp_path / "split", resume=True)
    assert steps_run == [3, 4]  # it really continued from the step-2 checkpoint
    assert len(straight_losses) == 4 and straight_losses[0] != straight_losses[-1]
    assert first_losses == pytest.approx(straight_losses[:2], abs=1e-7)
    assert resumed_losses == pytest.approx(straight_losses, abs=1e-7)  # the history includes steps 1-2
    for name, value in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], value, atol=0, rtol=0, msg=name)


def test_dpo_logs_margins_and_accuracy(models, tmp_path):
    """The shared base averages each step's statistics into the Trainer's log lines: at the first step
    (policy = reference) the margin is 0 and the loss is log 2; later margins move."""
    path, _, _ = models
    tok = load_tokenizer(path)
    trainer = DPOTrainer(load_causal_lm(path), small_config(tmp_path / "log", max_steps=3), preference_dataset(12), tok)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all({"margin", "accuracy", "chosen_logps", "rejected_logps"} <= set(h) for h in logs)
    assert logs[0]["margin"] == pytest.approx(0.0, abs=1e-6) and logs[0]["loss"] == pytest.approx(np.log(2), abs=1e-4)
    assert logs[-1]["margin"] != 0.0 and 0.0 <= logs[-1]["accuracy"] <= 1.0


def test_precomputed_reference_gives_the_same_training(models, tmp_path):
    """precompute_ref_log_probs scores every pair with the reference once and frees it: same losses and
    weights as the run that evaluates the frozen reference at every step. The reference (the fixture's perturbed
    model) differs from the initial policy, so scoring with the policy instead would show."""
    path, moved, _ = models
    tok = load_tokenizer(path)
    results = []
    for precompute in (False, True):
        policy = load_causal_lm(path)
        args = small_config(tmp_path / f"pre{precompute}", precompute_ref_log_probs=precompute)
        trainer = DPOTrainer(policy, args, preference_dataset(12), tok, ref_model=copy.deepcopy(moved))
        assert (trainer.ref_model is None) == precompute
        trainer.train()
        results.append(([h["loss"] for h in trainer.state.log_history if "loss" in h], policy.state_dict()))
    (loss_a, w_a), (loss_b, w_b) = results
    # the precomputed log-probs come from other batches (other padding widths): float noise only
    assert loss_a == pytest.approx(loss_b, abs=5e-5) and len(loss_a) == 4
    # Adam turns float noise in near-zero gradients into whole steps of single weights: compare the updates
    w_0 = load_causal_lm(path).state_dict()
    gap = sum((w_a[k] - w_b[k]).square().sum() for k in w_a).sqrt()
    update = sum((w_a[k] - w_0[k]).square().sum() for k in w_a).sqrt()
    assert gap < 1e-2 * update
