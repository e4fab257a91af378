"""Deep RL agents on gymnasium: one on-policy and one off-policy loop shared by every algorithm.

Public names are imported lazily, so `import rlopt.agents` stays cheap:
`from rlopt.agents import MDPOAgent, MDPOConfig, train`.
"""

import importlib

_EXPORTS = {
    "PPOAgent": "ppo",
    "PPOConfig": "ppo",
    "SACAgent": "sac",
    "SACConfig": "sac",
    "MDPOAgent": "mdpo",
    "MDPOConfig": "mdpo",
    "MDPOOffAgent": "mdpo_off",
    "MDPOOffConfig": "mdpo_off",
    "train": "loops",
    "evaluate_policy": "evaluation",
    "evaluate_run": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rlopt.agents' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rlopt.agents.{_EXPORTS[name]}"), name)
