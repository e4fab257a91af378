"""Deterministic evaluation on a fresh environment, with optional MP4 recording."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from rlopt.envs.make import make_env
from rlopt.envs.normalize import ObsNormalizer


def evaluate_policy(
    agent,
    env_id: str,
    obs_norm: ObsNormalizer | None,
    episodes: int,
    seed: int,
    env_kwargs: dict | None = None,
    video_path: str | Path | None = None,
    fps: int | None = None,
) -> dict:
    """Run `episodes` episodes with the deterministic action; normaliser statistics stay frozen.

    Touches no global RNG, so evaluating in the middle of training does not change the run.
    With `video_path`, the first episode is rendered offscreen and written as an MP4.
    """
    env = None
    if video_path:
        try:  # offscreen rendering needs EGL/OSMesa; without it, evaluate anyway and say why
            env = make_env(env_id, render_mode="rgb_array", **(env_kwargs or {}))
            env.reset(seed=seed)
            env.render()
        except Exception as err:  # noqa: BLE001 - any GL failure means "no video", not "no evaluation"
            warnings.warn(
                f"video skipped: offscreen rendering failed ({err}); MuJoCo envs need EGL or OSMesa (MUJOCO_GL)",
                stacklevel=2,
            )
            if env is not None:
                env.close()
            env, video_path = None, None
    if env is None:
        env = make_env(env_id, **(env_kwargs or {}))
    device = next(agent.parameters()).device
    returns, lengths, frames = [], [], []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            done, total, length = False, 0.0, 0
            while not done:
                if video_path and episode == 0:
                    frames.append(env.render())
                x = np.asarray(obs, np.float32).reshape(1, -1)
                if obs_norm is not None:
                    x = obs_norm(x, update=False)
                with torch.no_grad():
                    action = agent.deterministic_action(torch.from_numpy(x).to(device))[0].cpu().numpy()
                action = np.clip(action, env.action_space.low, env.action_space.high)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                length += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(length)
        if video_path and frames:
            write_video(video_path, frames, fps or int(env.metadata.get("render_fps", 30)))
    finally:
        env.close()
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "episodes": episodes,
        "returns": returns,
        "mean_length": float(np.mean(lengths)),
    }


def write_video(path: str | Path, frames: list[np.ndarray], fps: int) -> None:
    """Encode RGB frames to MP4 with imageio's bundled ffmpeg."""
    import imageio

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(str(path), frames, fps=fps, codec="libx264", macro_block_size=1)
