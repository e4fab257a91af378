"""Evaluate a saved run: load a checkpoint, run deterministic episodes, write eval.json, plots, video."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from rlopt.agents.base import EnvSpec
from rlopt.agents.evaluation import evaluate_policy
from rlopt.common.checkpoint import load_checkpoint, resolve_checkpoint
from rlopt.common.logging import read_metrics
from rlopt.config import load_config
from rlopt.envs.make import make_env
from rlopt.envs.normalize import ObsNormalizer
from rlopt.registry import get_algo


def load_agent(ckpt: Path):
    """(agent, obs normaliser or None, config, meta) from a checkpoint directory."""
    cfg = load_config(ckpt / "config.yaml")
    env = make_env(cfg.env.id, **cfg.env.kwargs)
    space = env.action_space
    device = cfg.device if torch.cuda.is_available() else "cpu"
    shape = int(env.observation_space.shape[0]), int(space.shape[0])
    spec = EnvSpec(*shape, space.low, space.high, 1, cfg.total_steps, device)
    env.close()
    agent = get_algo(cfg.algo).agent_cls(cfg.agent, spec)
    weights, state, meta = load_checkpoint(ckpt)
    agent.load_state_dict(weights)
    agent.eval()
    obs_norm = None
    if state["normalizer"]["obs"] is not None:
        obs_norm = ObsNormalizer((spec.obs_dim,))
        obs_norm.load_state_dict(state["normalizer"]["obs"])
    return agent, obs_norm, cfg, meta


def evaluate_run(
    run_dir: str | Path, episodes: int = 10, checkpoint: str | None = None, video: bool = False, seed: int | None = None
) -> dict:
    run_dir = Path(run_dir)
    if video:
        os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering without a display
    ckpt = resolve_checkpoint(run_dir, checkpoint)
    agent, obs_norm, cfg, meta = load_agent(ckpt)
    step = int(meta["step"])
    video_path = run_dir / "videos" / f"{cfg.algo}-{cfg.env.id}-step{step}.mp4" if video else None
    result = evaluate_policy(
        agent,
        cfg.env.id,
        obs_norm,
        episodes,
        cfg.seed + 10_000 if seed is None else seed,
        cfg.env.kwargs,
        video_path=video_path,
    )
    report = {
        "mean_return": result["mean_return"],
        "std_return": result["std_return"],
        "episodes": episodes,
        "env_id": cfg.env.id,
        "algo": cfg.algo,
        "step": step,
        "checkpoint": ckpt.name,
        "mean_length": result["mean_length"],
        "returns": result["returns"],
    }
    if video_path is not None and video_path.exists():
        report["video"] = str(video_path)
    plot = plot_learning_curve(run_dir)
    if plot is not None:
        report["plot"] = str(plot)
    (run_dir / "eval.json").write_text(json.dumps(report, indent=1))
    return report


def plot_learning_curve(run_dir: Path) -> Path | None:
    """plots/learning_curve.png from metrics.jsonl: training episode return and eval return vs env steps."""
    rows = read_metrics(run_dir)
    train = [(r["step"], r["episode/return"]) for r in rows if r.get("episode/return") is not None]
    evals = [(r["step"], r["eval/return"]) for r in rows if r.get("eval/return") is not None]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="training episodes (stochastic)")
    if evals:
        ax.plot(*zip(*evals), "o-", label="evaluation (deterministic)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    path = run_dir / "plots" / "learning_curve.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
