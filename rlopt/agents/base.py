"""What every agent gives the shared loops: env facts in, acting/updating/state out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor, nn


@dataclass
class EnvSpec:
    """The facts about an environment an agent is built from."""

    obs_dim: int
    act_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    num_envs: int = 1
    total_steps: int = 1_000_000  # schedules (lr annealing, MDPO t_k) span the run
    device: str = "cpu"  # off-policy agents may train on CUDA; on-policy agents act and learn on CPU


class Agent(nn.Module):
    """Base class. Subclasses set `kind` ("on_policy" | "off_policy") and implement:

    on-policy:  rollout_policy() -> NumPy acting fn (actions, logp, values); update(batch, iteration, num_iterations)
    off-policy: explore(obs) -> env actions; update(replay_batch) -> metrics
    both:       deterministic_action(obs) -> env actions; optim_state() / load_optim_state()
    Networks are submodules, so `state_dict()` holds every weight (saved as model.safetensors).
    """

    kind = "on_policy"
    normalize_obs = False
    normalize_reward = False

    def deterministic_action(self, obs: Tensor) -> Tensor:
        raise NotImplementedError

    def optim_state(self) -> dict:
        """Optimiser states and counters (everything but the weights) needed to resume exactly."""
        return {}

    def load_optim_state(self, state: dict) -> None:
        pass
