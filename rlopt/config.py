"""YAML + dotted `key=value` overrides -> typed, validated dataclasses.

The dataclass is the schema (defaults are the reference defaults), the YAML is the experiment.
Every problem is one `ConfigError` that names the offending key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad config: unknown key, wrong type or out-of-range value. The message names the key."""


def check(condition: bool, key: str, message: str) -> None:
    """Raise a ConfigError for `key` unless `condition` holds (used in `__post_init__`)."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


@dataclass
class EnvConfig:
    id: str = "Hopper-v5"
    num_envs: int = 1
    vectorization: str = "sync"  # "sync" (fastest on few cores) or "async" (one process per env)
    kwargs: dict = field(default_factory=dict)  # passed to gymnasium.make

    def __post_init__(self):
        check(self.num_envs >= 1, "env.num_envs", f"must be >= 1, got {self.num_envs}")
        check(self.vectorization in ("sync", "async"), "env.vectorization", "must be 'sync' or 'async'")


@dataclass
class LogConfig:
    every_steps: int = 10_000  # env steps between metric rows (episode stats are always logged)
    progress: bool = True  # console progress bar
    tensorboard: bool = True
    wandb: bool = False  # opt-in; needs `pip install wandb`
    wandb_project: str = "rlopt"


@dataclass
class EvalConfig:
    every_steps: int = 0  # 0 = only at the end of training
    episodes: int = 10

    def __post_init__(self):
        check(self.every_steps >= 0, "eval.every_steps", "must be >= 0")
        check(self.episodes >= 1, "eval.episodes", "must be >= 1")


@dataclass
class CheckpointConfig:
    every_steps: int = 100_000  # 0 = only at the end
    keep: int = 3  # most recent checkpoints kept on disk (0 = keep all)
    save_buffer: bool = True  # off-policy: store the replay buffer so resume is exact


@dataclass
class RunConfig:
    algo: str
    agent: Any  # the algorithm's own config dataclass (see rlopt.registry)
    env: EnvConfig = field(default_factory=EnvConfig)
    seed: int = 0
    total_steps: int = 1_000_000
    run_dir: str = ""  # empty = runs/<algo>-<env>-s<seed>
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads; 0 = auto (1 for on-policy agents, torch's default otherwise)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self):
        check(self.total_steps >= 1, "total_steps", f"must be >= 1, got {self.total_steps}")
        check(self.threads >= 0, "threads", "must be >= 0")
        cuda = self.device.startswith("cuda")
        check(self.device == "cpu" or cuda, "device", f"must be cpu or cuda[:N], got {self.device!r}")
        if not self.run_dir:
            self.run_dir = f"runs/{self.algo}-{self.env.id}-s{self.seed}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type `tp`, or raise a ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: expected {tp}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return build(tp, value, prefix=key + ".")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}: expected a bool, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an int, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                as_float = float(value.replace("_", ""))
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
        raise ConfigError(f"{key}: expected an int, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a float, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # PyYAML reads "1e-4" as a string
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a float, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def build(cls: type, values: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a plain dict; unknown keys and bad types are ConfigErrors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key for {cls.__name__} (valid keys: {', '.join(sorted(names))})"
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {err}") from None


def parse_overrides(overrides: list[str]) -> dict:
    """['agent.lr=1e-4', 'seed=3'] -> {'agent': {'lr': 0.0001}, 'seed': 3} (values parsed as YAML)."""
    nested: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{item}: overrides are key=value (e.g. agent.lr=1e-4)")
        key, raw = item.split("=", 1)
        if not key:
            raise ConfigError(f"{item}: empty key")
        value = yaml.safe_load(raw) if raw != "" else ""
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is not a section")
        node[parts[-1]] = value
    return nested


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; `update` wins. Returns a new dict."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "kwargs":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> RunConfig:
    """Load a run config from a YAML file (or `base` dict) plus dotted overrides."""
    from rlopt.registry import get_algo

    data = dict(base or {})
    if path is not None:
        data = merge(data, read_yaml(path))
    data = merge(data, parse_overrides(overrides or []))
    if "algo" not in data:
        raise ConfigError("algo: missing (e.g. algo: ppo)")
    spec = get_algo(str(data["algo"]))
    agent_values = data.pop("agent", {}) or {}
    if not isinstance(agent_values, dict):
        raise ConfigError("agent: expected a mapping")
    agent = build(spec.config_cls, agent_values, prefix="agent.")
    rest = {k: v for k, v in data.items() if k != "algo"}
    return build(RunConfig, {"algo": spec.name, "agent": agent, **rest})


def to_dict(cfg: Any) -> dict:
    """The fully resolved config as plain data (tuples as lists), re-loadable by `load_config`."""

    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
