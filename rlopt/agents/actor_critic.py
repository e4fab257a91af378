"""The Gaussian actor + separate value net shared by the on-policy agents (PPO, MDPO-on)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from rlopt.agents.base import Agent, EnvSpec
from rlopt.agents.networks import GaussianActor, NumpyMLP, ValueNet
from rlopt.config import ConfigError


class GaussianActorCritic(Agent):
    """pi(a|s) = N(mu(s), diag(exp(log_std))) with a state-independent log-std, and V(s); separate MLPs."""

    kind = "on_policy"

    def __init__(self, spec: EnvSpec, hidden: tuple[int, ...], orthogonal: bool = True, log_std_init: float = 0.0):
        super().__init__()
        if spec.device != "cpu":
            raise ConfigError("device: on-policy agents act with NumPy and train on CPU (64-64 nets are fastest there)")
        self.actor = GaussianActor(spec.obs_dim, spec.act_dim, hidden, orthogonal=orthogonal, log_std_init=log_std_init)
        self.critic = ValueNet(spec.obs_dim, hidden, orthogonal=orthogonal)

    def rollout_policy(self):
        """A NumPy acting function for one rollout: obs [N, O] -> (actions [N, A], logp [N], values [N])."""
        nets = NumpyMLP(self.actor.mean_net, self.critic.net)  # one stacked pass for mu(s) and V(s)
        log_std = self.actor.log_std.detach().numpy().astype(np.float64)
        std = np.exp(log_std)
        const = -(log_std.sum() + 0.5 * len(log_std) * math.log(2 * math.pi))

        def act(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            noise = np.random.standard_normal((obs.shape[0], len(std)))
            out = nets(obs)
            actions = out[0, :, : len(std)] + std * noise
            logp = const - 0.5 * np.square(noise).sum(-1)  # ((a - mu) / std)^2 = noise^2
            return actions.astype(np.float32), logp.astype(np.float32), out[1, :, 0].astype(np.float32)

        return act

    def deterministic_action(self, obs: Tensor) -> Tensor:
        return self.actor(obs)[0]


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip: float | None) -> Tensor:
    """0.5 mean of max((V - R)^2, (V_old + clip(V - V_old, +-eps) - R)^2), or of (V - R)^2 without clip."""
    if clip is None:
        return 0.5 * (values - returns).square().mean()
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - returns).square(), (clipped - returns).square()).mean()


def value_loss_grad(
    values: np.ndarray, old_values: np.ndarray, returns: np.ndarray, clip: float | None
) -> tuple[float, np.ndarray]:
    """NumPy twin of `value_loss` for the fast paths: (loss, d loss / d values), [B] in, (float, [B]) out."""
    n = values.shape[0]
    error = values - returns
    if clip is None:
        return 0.5 * float(np.square(error).mean()), error / n
    delta = values - old_values
    clipped_error = old_values + np.clip(delta, -clip, clip) - returns
    sq, clipped_sq = np.square(error), np.square(clipped_error)
    inside = np.abs(delta) <= clip  # the clipped branch passes gradient only inside the clip range
    grad = np.where(sq >= clipped_sq, error, clipped_error * inside)
    return 0.5 * float(np.maximum(sq, clipped_sq).mean()), grad / n


def linear_fraction(iteration: int, num_iterations: int) -> float:
    """1 - k / K: the linear decay used for learning-rate annealing and MDPO's step size."""
    return 1.0 - iteration / max(num_iterations, 1)
