"""Shared test set-up: one CPU thread, deterministic kernels, and every RNG seeded per test."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


@pytest.fixture(autouse=True)
def seed_everything():
    """Reseed python, numpy and torch before each test so its outcome does not depend on test order."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
