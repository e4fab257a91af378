"""Storage: the on-policy rollout (time-major, preallocated) and the off-policy replay buffer."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class Rollout:
    """One on-policy batch, time-major [T, N, ...]. `next_values[t]` is V(s_{t+1}) of the real next obs."""

    obs: Tensor
    actions: Tensor
    logp: Tensor
    values: Tensor
    rewards: Tensor
    terminated: Tensor
    ended: Tensor
    next_values: Tensor

    @classmethod
    def empty(cls, steps: int, num_envs: int, obs_dim: int, act_dim: int) -> Rollout:
        f = lambda *shape: torch.zeros(steps, num_envs, *shape)
        b = lambda: torch.zeros(steps, num_envs, dtype=torch.bool)
        return cls(f(obs_dim), f(act_dim), f(), f(), f(), b(), b(), f())


@dataclass
class Batch:
    """Flat [B, ...] on-policy training data after advantage estimation."""

    obs: Tensor
    actions: Tensor
    logp: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor

    def __getitem__(self, idx: Tensor) -> Batch:
        return Batch(*(getattr(self, f.name)[idx] for f in fields(self)))

    def __len__(self) -> int:
        return self.obs.shape[0]

    def split(self, size: int) -> list[Batch]:
        """Consecutive views of `size` rows (the last may be shorter)."""
        parts = [getattr(self, f.name).split(size) for f in fields(self)]
        return [Batch(*row) for row in zip(*parts)]


def shuffled_minibatches(batch: Batch, minibatch_size: int) -> list[Batch]:
    """One epoch: a random permutation of the batch (one gather per field), cut into minibatch views."""
    return batch[torch.randperm(len(batch))].split(minibatch_size)


@dataclass
class ReplayBatch:
    obs: Tensor  # [B, obs_dim]
    actions: Tensor  # [B, act_dim] env-scale actions
    rewards: Tensor  # [B]
    next_obs: Tensor  # [B, obs_dim] real next observation (final obs at episode ends)
    terminated: Tensor  # [B] float, 1 only for true terminations (truncation bootstraps)


class ReplayBuffer:
    """Preallocated circular buffer of transitions; stores `terminated` only, never truncation."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: str | torch.device = "cpu"):
        self.capacity = capacity
        self.obs = torch.zeros(capacity, obs_dim, device=device)
        self.next_obs = torch.zeros(capacity, obs_dim, device=device)
        self.actions = torch.zeros(capacity, act_dim, device=device)
        self.rewards = torch.zeros(capacity, device=device)
        self.terminated = torch.zeros(capacity, device=device)
        self.pos = 0
        self.size = 0

    def add(self, obs: Tensor, actions: Tensor, rewards: Tensor, next_obs: Tensor, terminated: Tensor) -> None:
        """Add a batch of N transitions ([N, ...] tensors, moved to the buffer's device)."""
        n = obs.shape[0]
        if self.pos + n <= self.capacity:  # contiguous rows: slice copies (a third of the cost of index_put)
            idx = slice(self.pos, self.pos + n)
        else:  # wraps around the end
            idx = (torch.arange(n, device=self.obs.device) + self.pos) % self.capacity
        for field, value in (
            (self.obs, obs),
            (self.actions, actions),
            (self.rewards, rewards),
            (self.next_obs, next_obs),
            (self.terminated, terminated),
        ):
            field[idx] = value.to(field.device)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> ReplayBatch:
        idx = torch.randint(0, self.size, (batch_size,), device=self.obs.device)
        fields = (self.obs, self.actions, self.rewards, self.next_obs, self.terminated)
        return ReplayBatch(*(f.index_select(0, idx) for f in fields))  # half the cost of t[idx] on CPU

    def state_dict(self) -> dict:
        n = self.size
        return {
            "obs": self.obs[:n],
            "next_obs": self.next_obs[:n],
            "actions": self.actions[:n],
            "rewards": self.rewards[:n],
            "terminated": self.terminated[:n],
            "pos": self.pos,
            "size": n,
        }

    def load_state_dict(self, state: dict) -> None:
        n = int(state["size"])
        for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
            getattr(self, name)[:n] = state[name]
        self.pos, self.size = int(state["pos"]), n
