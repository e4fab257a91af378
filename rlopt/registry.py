"""Algorithm name -> (config class, agent class): one table for the whole suite."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from rlopt.config import ConfigError

# name -> (module, config class, agent class)
_ALGOS = {
    "ppo": ("rlopt.agents.ppo", "PPOConfig", "PPOAgent"),
    "mdpo_on": ("rlopt.agents.mdpo", "MDPOConfig", "MDPOAgent"),
    "mdpo_off": ("rlopt.agents.mdpo_off", "MDPOOffConfig", "MDPOOffAgent"),
    "sac": ("rlopt.agents.sac", "SACConfig", "SACAgent"),
}


@dataclass(frozen=True)
class AlgoSpec:
    name: str
    config_cls: type
    agent_cls: type


def algo_names() -> list[str]:
    return sorted(_ALGOS)


def get_algo(name: str) -> AlgoSpec:
    if name not in _ALGOS:
        raise ConfigError(f"algo: unknown algorithm {name!r} (known: {', '.join(algo_names())})")
    module, config_name, agent_name = _ALGOS[name]
    mod = importlib.import_module(module)
    return AlgoSpec(name, getattr(mod, config_name), getattr(mod, agent_name))
