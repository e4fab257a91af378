"""Build gymnasium environments and the vector-env front end of the training loops.

`VecEnv` keeps `terminated` and `truncated` apart, hands back the real final observation of every
episode that ended (needed to bootstrap truncated episodes), tracks raw episode returns, and can
save and restore the complete simulator state of each sub-env so a resumed run is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from rlopt.config import ConfigError, EnvConfig


def check_env_id(env_id: str) -> None:
    """Raise one ConfigError naming `env_id` when gymnasium does not know it."""
    try:
        gym.spec(env_id)
    except gym.error.Error as err:
        raise ConfigError(f"env.id: unknown environment {env_id!r} ({err})") from None


def make_env(env_id: str, render_mode: str | None = None, **kwargs) -> gym.Env:
    """One environment with gymnasium's default wrappers (TimeLimit etc.)."""
    check_env_id(env_id)
    try:
        return gym.make(env_id, render_mode=render_mode, **kwargs)
    except gym.error.DependencyNotInstalled as err:
        raise ConfigError(f"env.id: {env_id!r} needs a missing dependency: {err}") from None


@dataclass
class StepResult:
    obs: np.ndarray  # [N, obs_dim] next observation (first obs of a new episode where one ended)
    rewards: np.ndarray  # [N] raw rewards
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray  # [N] bool
    final_obs: np.ndarray  # [N, obs_dim] the real last observation where an episode ended, else obs
    episode_returns: list[float]  # raw returns of the episodes that ended this step
    episode_lengths: list[int]


class VecEnv:
    """N environments stepped in lock-step with same-step autoreset.

    `vectorization="sync"` steps gymnasium envs in this process (fastest on a few cores: no IPC,
    no info-dict merging); `"async"` uses gymnasium's AsyncVectorEnv (one process per env).
    """

    def __init__(self, cfg: EnvConfig):
        self.cfg = cfg
        check_env_id(cfg.id)
        self.num_envs = cfg.num_envs
        if cfg.vectorization == "sync":
            self.envs = [make_env(cfg.id, disable_env_checker=True, **cfg.kwargs) for _ in range(cfg.num_envs)]
            self.vector = None
            obs_space, space = self.envs[0].observation_space, self.envs[0].action_space
        else:
            autoreset = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
            self.vector = gym.make_vec(
                cfg.id, num_envs=cfg.num_envs, vectorization_mode="async", vector_kwargs=autoreset, **cfg.kwargs
            )
            self.envs = []
            obs_space, space = self.vector.single_observation_space, self.vector.single_action_space
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError(
                f"env.id: {cfg.id!r} has a {type(space).__name__} action space; "
                "the agents here need continuous (Box) actions"
            )
        self.obs_dim = int(np.prod(obs_space.shape))
        self.act_dim = int(np.prod(space.shape))
        self.action_low = space.low.astype(np.float32).reshape(-1)
        self.action_high = space.high.astype(np.float32).reshape(-1)
        self.ep_return = np.zeros(self.num_envs, np.float64)
        self.ep_length = np.zeros(self.num_envs, np.int64)
        self.obs: np.ndarray | None = None

    def reset(self, seed: int) -> np.ndarray:
        seeds = [seed + i for i in range(self.num_envs)]
        if self.vector is not None:
            obs, _ = self.vector.reset(seed=seeds)
        else:
            obs = np.stack([np.asarray(env.reset(seed=s)[0]).reshape(-1) for env, s in zip(self.envs, seeds)])
        self.obs = obs.reshape(self.num_envs, -1).astype(np.float32)
        self.ep_return[:] = 0.0
        self.ep_length[:] = 0
        return self.obs

    def _step_sync(self, actions: np.ndarray):
        n = self.num_envs
        obs = np.empty((n, self.obs_dim), np.float32)
        rewards = np.empty(n, np.float64)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        finals = {}
        for i, env in enumerate(self.envs):
            o, r, term, trunc, _ = env.step(actions[i])
            rewards[i], terminated[i], truncated[i] = r, term, trunc
            if term or trunc:
                finals[i] = o
                o, _ = env.reset()
            obs[i] = np.asarray(o).reshape(-1)
        return obs, rewards, terminated, truncated, finals

    def _step_async(self, actions: np.ndarray):
        obs, rewards, terminated, truncated, info = self.vector.step(actions)
        ended = terminated | truncated
        finals = {int(i): info["final_obs"][i] for i in np.flatnonzero(ended)}
        return (
            obs.reshape(self.num_envs, -1).astype(np.float32),
            np.asarray(rewards, np.float64),
            np.asarray(terminated, bool),
            np.asarray(truncated, bool),
            finals,
        )

    def step(self, actions: np.ndarray) -> StepResult:
        actions = np.minimum(np.maximum(actions, self.action_low), self.action_high)  # np.clip is slower
        step = self._step_sync if self.vector is None else self._step_async
        obs, rewards, terminated, truncated, finals = step(actions)
        self.ep_return += rewards
        self.ep_length += 1
        final_obs = obs
        returns: list[float] = []
        lengths: list[int] = []
        if finals:
            final_obs = obs.copy()
            for i, last in finals.items():
                final_obs[i] = np.asarray(last, np.float32).reshape(-1)
                returns.append(float(self.ep_return[i]))
                lengths.append(int(self.ep_length[i]))
                self.ep_return[i] = 0.0
                self.ep_length[i] = 0
        self.obs = obs
        return StepResult(obs, rewards, terminated, truncated, final_obs, returns, lengths)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        if self.vector is not None:
            self.vector.close()

    def get_state(self) -> dict:
        """Everything needed to continue exactly: simulator states, time limits, RNGs, episode stats."""
        if self.vector is not None:
            raise RuntimeError("exact env state is only available with env.vectorization=sync")
        return {
            "envs": [get_env_state(e) for e in self.envs],
            "obs": self.obs.tolist(),
            "ep_return": self.ep_return.tolist(),
            "ep_length": self.ep_length.tolist(),
        }

    def set_state(self, state: dict) -> None:
        for env, env_state in zip(self.envs, state["envs"]):
            set_env_state(env, env_state)
        self.obs = np.asarray(state["obs"], np.float32)
        self.ep_return = np.asarray(state["ep_return"], np.float64)
        self.ep_length = np.asarray(state["ep_length"], np.int64)


def _wrappers(env: gym.Env):
    while True:
        yield env
        if not hasattr(env, "env"):
            return
        env = env.env


def get_env_state(env: gym.Env) -> dict:
    """Snapshot of one (wrapped) env: JSON-serialisable, restored bit-exactly by set_env_state."""
    base = env.unwrapped
    state: dict = {"elapsed": [getattr(w, "_elapsed_steps", None) for w in _wrappers(env)]}
    rng = getattr(base, "_np_random", None)
    state["np_random"] = None if rng is None else rng.bit_generator.state
    if hasattr(base, "data") and hasattr(base, "model"):  # MuJoCo: full integration state
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        buf = np.empty(mujoco.mj_stateSize(base.model, spec), np.float64)
        mujoco.mj_getState(base.model, base.data, buf, spec)
        state["mujoco"] = buf.tolist()
    elif hasattr(base, "state"):  # classic control
        state["state"] = np.asarray(base.state, np.float64).tolist()
    else:
        raise RuntimeError(f"do not know how to snapshot {type(base).__name__} for an exact resume")
    return state


def set_env_state(env: gym.Env, state: dict) -> None:
    base = env.unwrapped
    for wrapper, elapsed in zip(_wrappers(env), state["elapsed"]):
        if elapsed is not None:
            wrapper._elapsed_steps = elapsed
        if hasattr(wrapper, "_has_reset"):
            wrapper._has_reset = True
    if state["np_random"] is not None:
        base.np_random.bit_generator.state = state["np_random"]
    if "mujoco" in state:
        import mujoco

        mujoco.mj_setState(
            base.model, base.data, np.asarray(state["mujoco"], np.float64), mujoco.mjtState.mjSTATE_INTEGRATION
        )
    else:
        base.state = np.asarray(state["state"], np.float64)
