"""Helpers shared by test modules (importable as `tests.helpers`; pytest puts the repo root on the path)."""

from __future__ import annotations

import pytest
import torch


def assert_same_loss_and_grads(model, ours, theirs, n: int = 4) -> tuple[float, float]:
    """Feed the first `n` examples through each trainer's own tokenisation and collator, and check that the
    losses agree to 1e-6 and every parameter gradient to float tolerance; returns (ours, theirs) losses."""
    results = []
    for trainer in (ours, theirs):
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
        model.zero_grad()
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        results.append((loss.item(), [p.grad.detach().clone() for p in model.parameters()]))
    (loss_ours, grads_ours), (loss_theirs, grads_theirs) = results
    assert loss_ours == pytest.approx(loss_theirs, abs=1e-6)
    for a, b in zip(grads_ours, grads_theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    return loss_ours, loss_theirs
