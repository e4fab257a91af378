"""Advantage and return estimators: pure functions on time-major [T, N] tensors."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    ended: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016, arXiv:1506.02438).

    rewards, values, next_values, terminated, ended: [T, N]. `next_values[t]` is V of the real
    next observation (the final observation when the episode was truncated at t); `terminated`
    zeroes that bootstrap, `ended` (terminated or truncated) cuts the lambda-trace.
    Returns (advantages, returns = advantages + values), both [T, N].
    """
    not_terminal = 1.0 - terminated.to(rewards.dtype)
    continues = 1.0 - ended.to(rewards.dtype)
    deltas = rewards + gamma * not_terminal * next_values - values
    decay = (gamma * gae_lambda) * continues
    advantages = torch.empty_like(rewards)
    if rewards.device.type == "cpu":  # the backward recursion on NumPy views: ~10x fewer dispatches
        out, d, c = advantages.numpy(), deltas.numpy(), decay.numpy()
        running = np.zeros_like(out[0])
        for t in range(out.shape[0] - 1, -1, -1):
            running = d[t] + c[t] * running
            out[t] = running
    else:
        running = torch.zeros_like(rewards[0])
        for t in range(rewards.shape[0] - 1, -1, -1):
            running = deltas[t] + decay[t] * running
            advantages[t] = running
    return advantages, advantages + values


def discounted_returns(rewards: Tensor, ended: Tensor, gamma: float, last_value: Tensor | None = None) -> Tensor:
    """Reward-to-go sum_k gamma^k r_{t+k} within each episode: [T, N] -> [T, N]."""
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0]) if last_value is None else last_value.clone()
    continues = 1.0 - ended.to(rewards.dtype)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * continues[t] * running
        out[t] = running
    return out


def explained_variance(predicted: Tensor, target: Tensor) -> float:
    """1 - Var[target - predicted] / Var[target] (nan when the target is constant)."""
    var = target.var()
    return float("nan") if var == 0 else float(1.0 - (target - predicted).var() / var)
