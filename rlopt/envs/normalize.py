"""Running observation normalisation and return-based reward scaling (VecNormalize semantics).

Statistics are plain float64 arrays, part of every checkpoint, and frozen at evaluation time.
"""

from __future__ import annotations

import numpy as np


class RunningMeanStd:
    """Streaming mean/variance with the parallel (Chan et al.) batch update."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = epsilon

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, np.float64)
        batch_count = batch.shape[0]
        if batch_count == 1:  # the common single-env case: the same update in the fewest array ops
            delta = batch[0] - self.mean
            total = self.count + 1.0
            self.mean = self.mean + delta / total
            self.var = (self.var * self.count + delta * delta * (self.count / total)) / total
            self.count = total
            return
        batch_mean = batch.mean(0)
        batch_var = np.square(batch - batch_mean).mean(0)
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": float(self.count)}

    def load_state_dict(self, state: dict) -> None:
        self.mean = np.array(state["mean"], np.float64)
        self.var = np.array(state["var"], np.float64)
        self.count = float(state["count"])


class ObsNormalizer:
    """(obs - mean) / sqrt(var + eps), clipped to +-clip; stats update only when `update=True`."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, eps: float = 1e-8):
        self.rms = RunningMeanStd(shape)
        self.clip, self.eps = clip, eps

    def __call__(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        if update:
            self.rms.update(obs)
        out = obs - self.rms.mean
        out /= np.sqrt(self.rms.var + self.eps)
        np.maximum(out, -self.clip, out=out)  # np.clip is slower
        np.minimum(out, self.clip, out=out)
        return out.astype(np.float32)

    def state_dict(self) -> dict:
        return self.rms.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state)


class RewardScaler:
    """Divide rewards by the running std of the discounted return, then clip (NormalizeReward(gamma))."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8):
        self.rms = RunningMeanStd(())
        self.returns = np.zeros(num_envs, np.float64)
        self.gamma, self.clip, self.eps = gamma, clip, eps

    def __call__(self, rewards: np.ndarray, ended: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + rewards
        self.rms.update(self.returns)
        self.returns[ended] = 0.0
        scaled = rewards / np.sqrt(self.rms.var + self.eps)
        return np.minimum(np.maximum(scaled, -self.clip), self.clip).astype(np.float32)

    def state_dict(self) -> dict:
        return {**self.rms.state_dict(), "returns": self.returns.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state)
        self.returns = np.array(state["returns"], np.float64)
