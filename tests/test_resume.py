"""Exact resume: a run stopped at N and resumed to 2N equals an uninterrupted run to 2N."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rlopt.agents.loops import train
from rlopt.common.checkpoint import list_checkpoints, load_checkpoint
from rlopt.config import load_config

pytest.importorskip("mujoco")


def metric_rows(run_dir, skip_eval_at=None):
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = {k: v for k, v in json.loads(line).items() if not k.startswith("perf/")}
        if skip_eval_at is not None and row["step"] == skip_eval_at and "eval/return" in row:
            continue  # the final evaluation of the first, shorter run
        rows.append(row)
    return rows


def assert_same_run(full, resumed, step, skip_eval_at=None):
    rows_full, rows_resumed = metric_rows(full), metric_rows(resumed, skip_eval_at)
    assert len(rows_full) > 3
    assert rows_full == rows_resumed
    w_full = load_file(str(full / "checkpoints" / f"step_{step}" / "model.safetensors"))
    w_resumed = load_file(str(resumed / "checkpoints" / f"step_{step}" / "model.safetensors"))
    assert w_full.keys() == w_resumed.keys()
    for key in w_full:
        assert torch.equal(w_full[key], w_resumed[key]), key


def test_ppo_resume_is_exact(tmp_path):
    overrides = [
        "agent.rollout_steps=64",
        "agent.num_minibatches=4",
        "agent.update_epochs=2",
        "env.num_envs=2",
        "log.every_steps=128",
        "eval.every_steps=256",
        "eval.episodes=1",
        "log.progress=false",
        "log.tensorboard=false",
        "checkpoint.every_steps=0",
        "total_steps=1024",
    ]
    path = "configs/agents/ppo/InvertedPendulum-v5.yaml"
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train(load_config(path, [*overrides, f"run_dir={full}"]))
    train(load_config(path, [*overrides, f"run_dir={resumed}"]), stop_at=512)
    assert [p.name for p in list_checkpoints(resumed / "checkpoints")] == ["step_512"]
    train(load_config(resumed / "config.yaml"), resume=True)
    assert_same_run(full, resumed, 1024)


def test_sac_resume_with_replay_buffer_is_exact(tmp_path):
    overrides = [
        "agent.learning_starts=100",
        "agent.batch_size=32",
        "agent.hidden=[32,32]",
        "log.every_steps=50",
        "eval.every_steps=200",
        "eval.episodes=1",
        "log.progress=false",
        "log.tensorboard=false",
        "checkpoint.every_steps=0",
    ]
    path = "configs/agents/sac/Pendulum-v1.yaml"
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train(load_config(path, [*overrides, "total_steps=600", f"run_dir={full}"]))
    train(load_config(path, [*overrides, "total_steps=300", f"run_dir={resumed}"]))
    _, state, meta = load_checkpoint(resumed / "checkpoints" / "step_300")
    assert meta["step"] == 300 and state["extra"]["buffer"]["size"] == 300
    train(load_config(resumed / "config.yaml", ["total_steps=600"]), resume=True)  # extend the finished run
    assert_same_run(full, resumed, 600, skip_eval_at=300)


def test_checkpoint_holds_everything(tmp_path):
    cfg = load_config(
        "configs/agents/mdpo_off/Pendulum-v1.yaml",
        [
            "agent.learning_starts=50",
            "agent.batch_size=16",
            "agent.hidden=[16,16]",
            "total_steps=100",
            "log.progress=false",
            "log.tensorboard=false",
            f"run_dir={tmp_path}",
            "eval.every_steps=0",
            "eval.episodes=1",
        ],
    )
    train(cfg)
    weights, state, meta = load_checkpoint(tmp_path / "checkpoints" / "step_100")
    assert meta["step"] == 100 and meta["iteration"] == 50
    assert {"actor", "critic", "updates"} <= set(state["optim"])
    assert state["optim"]["updates"] == 50
    assert state["extra"]["buffer"]["size"] == 100
    assert {"python", "numpy", "torch"} <= set(state["rng"])
    assert state["env"]["envs"][0]["np_random"] is not None
    assert any(k.startswith("old_actor.") for k in weights)
    assert not list(tmp_path.glob("checkpoints/.tmp_*"))  # atomic write leaves no temp dir


def test_async_vector_env_matches_sync_transitions(tmp_path):
    """The async (one process per env) backend yields the same episodes as the in-process one."""
    from rlopt.config import EnvConfig
    from rlopt.envs.make import VecEnv

    results = {}
    for mode in ("sync", "async"):
        envs = VecEnv(EnvConfig(id="Pendulum-v1", num_envs=2, vectorization=mode))
        envs.reset(seed=5)
        actions = np.linspace(-2, 2, 2 * 210).reshape(210, 2, 1).astype(np.float32)
        trace = [envs.step(a) for a in actions]
        envs.close()
        results[mode] = trace
    for sync, asyn in zip(results["sync"], results["async"], strict=True):
        np.testing.assert_allclose(sync.obs, asyn.obs, rtol=1e-6)
        np.testing.assert_allclose(sync.final_obs, asyn.final_obs, rtol=1e-6)
        np.testing.assert_array_equal(sync.truncated, asyn.truncated)
        assert sync.episode_returns == pytest.approx(asyn.episode_returns)
    assert any(step.truncated.all() for step in results["sync"])  # Pendulum truncates at 200 steps
