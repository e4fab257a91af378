"""Config loading: every problem is one ConfigError naming the key; dotted overrides are typed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlopt.config import ConfigError, RunConfig, dump_yaml, load_config, parse_overrides, to_dict

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "agents"


def config_error(base: dict | None = None, overrides: list[str] | None = None) -> str:
    """The message of the single ConfigError that loading raises (an error of any other type fails the test)."""
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides, base=base)
    assert info.value.__cause__ is None  # one error, not a re-raised chain
    return str(info.value)


@pytest.mark.parametrize(
    ("base", "overrides", "key", "owner"),
    [
        ({"algo": "ppo", "learning_rate": 1e-3}, None, "learning_rate", "RunConfig"),
        ({"algo": "ppo", "agent": {"lrr": 1e-3}}, None, "agent.lrr", "PPOConfig"),
        ({"algo": "sac"}, ["agent.clip_coef=0.2"], "agent.clip_coef", "SACConfig"),  # a PPO key on SAC
        ({"algo": "mdpo_on"}, ["env.idd=Hopper-v5"], "env.idd", "EnvConfig"),
        ({"algo": "mdpo_off"}, ["log.every=5"], "log.every", "LogConfig"),
    ],
)
def test_unknown_key(base, overrides, key, owner):
    message = config_error(base, overrides)
    assert message.startswith(key + ":"), message
    assert owner in message


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["agent.lr=fast"], "agent.lr"),
        (["agent.lr=true"], "agent.lr"),  # a bool is not a float
        (["env.num_envs=four"], "env.num_envs"),
        (["seed=1.5"], "seed"),  # a non-integral float is not an int
        (["agent.hidden=64"], "agent.hidden"),  # a scalar is not a list
        (["agent.hidden=[64, wide]"], "agent.hidden[1]"),
        (["agent.normalize_obs=maybe"], "agent.normalize_obs"),
        (["env=3"], "env"),
    ],
)
def test_wrong_type(overrides, key):
    message = config_error({"algo": "ppo"}, overrides)
    assert message.startswith(key + ":"), message


@pytest.mark.parametrize(
    ("algo", "overrides", "key"),
    [
        ("ppo", ["agent.gamma=1.5"], "agent.gamma"),
        ("ppo", ["agent.clip_coef=0"], "agent.clip_coef"),
        ("ppo", ["agent.lr=-1e-4"], "agent.lr"),
        ("mdpo_on", ["agent.inner_steps=0"], "agent.inner_steps"),
        ("mdpo_off", ["agent.tau=2"], "agent.tau"),
        ("mdpo_off", ["agent.buffer_size=10", "agent.batch_size=256"], "agent.buffer_size"),
        ("sac", ["agent.alpha=0"], "agent.alpha"),
        ("sac", ["env.num_envs=0"], "env.num_envs"),
        ("sac", ["total_steps=0"], "total_steps"),
        ("sac", ["eval.episodes=0"], "eval.episodes"),
    ],
)
def test_out_of_range(algo, overrides, key):
    message = config_error({"algo": algo}, overrides)
    assert message.startswith(key + ":"), message


@pytest.mark.parametrize(
    ("algo", "key", "value"),
    [
        ("mdpo_on", "inner_steps", 0),
        ("mdpo_on", "vf_epochs", 0),
        ("sac", "target_frequency", 0),
        ("ppo", "max_grad_norm", -1.0),
    ],
)
def test_values_that_break_training_are_rejected(algo, key, value):
    message = config_error({"algo": algo}, [f"agent.{key}={value}"])
    assert message.startswith(f"agent.{key}:"), message


def test_unknown_or_missing_algo():
    assert config_error({"algo": "dqn"}).startswith("algo:")
    assert "dqn" in config_error({"algo": "dqn"})
    assert config_error({"seed": 1}).startswith("algo:")


def test_dotted_overrides():
    assert parse_overrides(["agent.lr=1e-4", "seed=3", "env.kwargs.frame_skip=2"]) == {
        "agent": {"lr": "1e-4"},  # YAML 1.1 reads 1e-4 as a string; the schema makes it a float
        "seed": 3,
        "env": {"kwargs": {"frame_skip": 2}},
    }
    cfg = load_config(None, ["agent.lr=1e-4", "env.num_envs=4", "seed=3", "agent.hidden=[32,32]"], base={"algo": "ppo"})
    assert isinstance(cfg, RunConfig) and cfg.algo == "ppo"
    assert type(cfg.agent.lr) is float and cfg.agent.lr == 1e-4
    assert type(cfg.env.num_envs) is int and cfg.env.num_envs == 4
    assert type(cfg.seed) is int and cfg.seed == 3
    assert cfg.agent.hidden == (32, 32) and isinstance(cfg.agent.hidden, tuple)
    assert cfg.agent.gamma == 0.99  # untouched fields keep the dataclass defaults
    assert cfg.run_dir == "runs/ppo-Hopper-v5-s3"
    for bad in (["agent.lr"], ["=3"]):
        with pytest.raises(ConfigError):
            parse_overrides(bad)


def test_overrides_win_over_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("algo: sac\nseed: 1\nagent: {q_lr: 0.002, batch_size: 64}\nenv: {id: Pendulum-v1}\n")
    cfg = load_config(path, ["agent.q_lr=5e-4", "env.num_envs=2"])
    assert cfg.agent.q_lr == 5e-4 and cfg.agent.batch_size == 64  # sibling keys of an override survive
    assert cfg.env.id == "Pendulum-v1" and cfg.env.num_envs == 2 and cfg.seed == 1


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.algo == path.parent.name
    assert path.stem.startswith(cfg.env.id)  # configs/agents/<algo>/<env id>[-variant].yaml
    # the resolved config written next to a run reloads to the same config
    assert load_config(None, base=yaml.safe_load(dump_yaml(cfg))) == cfg
    assert load_config(None, base=to_dict(cfg)) == cfg


def test_config_dir_is_not_empty():
    assert {p.parent.name for p in CONFIG_DIR.glob("*/*.yaml")} >= {"ppo", "sac", "mdpo_on", "mdpo_off"}
