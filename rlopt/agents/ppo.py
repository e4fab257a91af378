"""Clipped-surrogate PPO for continuous actions (Schulman et al., 2017, arXiv:1707.06347).

Defaults follow CleanRL's `ppo_continuous_action.py` MuJoCo settings (spec agents.md §6.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rlopt.agents.actor_critic import GaussianActorCritic, linear_fraction, value_loss, value_loss_grad
from rlopt.agents.base import EnvSpec
from rlopt.agents.buffers import Batch, shuffled_minibatches
from rlopt.agents.fused import TanhMLP
from rlopt.config import check
from rlopt.optim import FlatAdam, approx_kl, clipped_surrogate, gaussian_entropy, gaussian_log_prob
from rlopt.optim.proximity import LOG_SQRT_2PI


@dataclass
class PPOConfig:
    lr: float = 3e-4
    anneal_lr: bool = True  # linear decay to 0 over the run
    adam_eps: float = 1e-5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    rollout_steps: int = 2048  # per env
    num_minibatches: int = 32
    update_epochs: int = 10
    normalize_advantages: bool = True  # per minibatch
    clip_coef: float = 0.2
    clip_value_loss: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None  # stop the epoch loop early when approx KL exceeds this
    fused_update: bool = True  # hand-written gradients for the tanh MLPs (same math, ~3x fewer ops)
    hidden: tuple[int, ...] = (64, 64)
    normalize_obs: bool = True
    normalize_reward: bool = True
    merge_truncation: bool = False  # compat: CleanRL treats time-limit truncation as terminal

    def __post_init__(self):
        check(self.lr > 0, "agent.lr", "must be > 0")
        check(0 < self.gamma <= 1, "agent.gamma", "must be in (0, 1]")
        check(0 <= self.gae_lambda <= 1, "agent.gae_lambda", "must be in [0, 1]")
        check(self.rollout_steps >= 1, "agent.rollout_steps", "must be >= 1")
        check(self.num_minibatches >= 1, "agent.num_minibatches", "must be >= 1")
        check(self.update_epochs >= 1, "agent.update_epochs", "must be >= 1")
        check(self.clip_coef > 0, "agent.clip_coef", "must be > 0")
        check(self.max_grad_norm > 0, "agent.max_grad_norm", "must be > 0")


def ppo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    entropy: Tensor | None,
    cfg: PPOConfig,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total PPO loss for one minibatch; inputs are flat [B] tensors (entropy may be a scalar, or
    None when ent_coef is 0). Returns (loss, parts); `ppo_stats(parts, cfg)` turns parts into metrics."""
    if cfg.normalize_advantages and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    policy_loss = -clipped_surrogate(ratio, advantages, cfg.clip_coef).mean()
    v_loss = value_loss(values, old_values, returns, cfg.clip_coef if cfg.clip_value_loss else None)
    total = policy_loss + cfg.vf_coef * v_loss
    if entropy is not None and cfg.ent_coef != 0.0:
        total = total - cfg.ent_coef * entropy.mean()
    return total, {"policy_loss": policy_loss, "value_loss": v_loss, "log_ratio": log_ratio, "ratio": ratio}


def ppo_loss_grads(
    mean: np.ndarray,
    log_std: np.ndarray,
    actions: np.ndarray,
    old_logp: np.ndarray,
    advantages: np.ndarray,
    values: np.ndarray,
    old_values: np.ndarray,
    returns: np.ndarray,
    cfg: PPOConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray | float]]:
    """Closed-form gradients of `ppo_loss` w.r.t. the Gaussian mean [B, A], the state-independent
    log-std [A] and the values [B], in NumPy (the fast path); returns (d_mean, d_log_std, d_values, parts)."""
    n = mean.shape[0]
    if cfg.normalize_advantages and n > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std(ddof=1) + 1e-8)
    inv_std = np.exp(-log_std)
    z = (actions - mean) * inv_std
    logp = -0.5 * np.square(z).sum(-1) - (log_std.sum() + LOG_SQRT_2PI * log_std.size)
    log_ratio = logp - old_logp
    ratio = np.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = np.clip(ratio, 1.0 - cfg.clip_coef, 1.0 + cfg.clip_coef) * advantages
    # d(-mean min(rA, clip(r)A))/d logp = -A r / n where the unclipped branch is active, else 0
    d_logp = np.where(unclipped <= clipped, unclipped, 0.0)
    d_logp *= -1.0 / n
    d_logp = d_logp[:, None]
    d_mean = d_logp * z * inv_std  # d logp / d mean = z / std
    d_log_std = (d_logp * (np.square(z) - 1.0)).sum(0)  # d logp / d log_std = z^2 - 1
    if cfg.ent_coef != 0.0:
        d_log_std -= cfg.ent_coef  # d entropy / d log_std = 1 per dimension
    v_loss, d_values = value_loss_grad(values, old_values, returns, cfg.clip_coef if cfg.clip_value_loss else None)
    d_values *= cfg.vf_coef
    parts = {
        "policy_loss": -float(np.minimum(unclipped, clipped).mean()),
        "value_loss": v_loss,
        "log_ratio": log_ratio,
        "ratio": ratio,
    }
    return d_mean, d_log_std, d_values, parts


@torch.no_grad()
def ppo_stats(parts: dict[str, Tensor], cfg: PPOConfig) -> dict[str, Tensor]:
    """Detached metrics of one minibatch (computed only where they are logged, to save dispatches)."""
    return {
        "loss/policy": parts["policy_loss"].detach(),
        "loss/value": parts["value_loss"].detach(),
        "stats/approx_kl": approx_kl(parts["log_ratio"].detach()),
        "stats/clip_frac": ((parts["ratio"].detach() - 1.0).abs() > cfg.clip_coef).float().mean(),
    }


class PPOAgent(GaussianActorCritic):
    def __init__(self, cfg: PPOConfig, spec: EnvSpec):
        super().__init__(spec, cfg.hidden)
        self.cfg = cfg
        self.gamma, self.gae_lambda = cfg.gamma, cfg.gae_lambda
        self.normalize_obs, self.normalize_reward = cfg.normalize_obs, cfg.normalize_reward
        # one optimiser over actor and critic, as in CleanRL
        self.optimizer = FlatAdam(self.parameters(), cfg.lr, eps=cfg.adam_eps, max_grad_norm=cfg.max_grad_norm)
        if cfg.fused_update:  # NumPy views of the flattened parameters and gradients
            self.actor_np = TanhMLP(self.actor.mean_net)
            self.critic_np = TanhMLP(self.critic.net)

    def update(self, batch: Batch, iteration: int, num_iterations: int) -> dict[str, Tensor]:
        cfg = self.cfg
        if cfg.anneal_lr:
            self.optimizer.lr = cfg.lr * linear_fraction(iteration, num_iterations)
        mb_size = max(len(batch) // cfg.num_minibatches, 1)
        stats: dict[str, Tensor] = {}
        for _ in range(cfg.update_epochs):
            minibatches = shuffled_minibatches(batch, mb_size)
            for i, mb in enumerate(minibatches):
                stats = self.update_minibatch(mb, with_stats=i == len(minibatches) - 1)
            if cfg.target_kl is not None and stats["stats/approx_kl"] > cfg.target_kl:
                break
        stats["stats/lr"] = torch.tensor(self.optimizer.lr)
        stats["stats/std"] = self.actor.log_std.exp().mean().detach()
        stats["stats/entropy"] = gaussian_entropy(self.actor.log_std).detach()
        return stats

    def update_minibatch(self, mb: Batch, with_stats: bool = True) -> dict[str, Tensor]:
        """One gradient step on one minibatch; returns detached metrics (empty unless `with_stats`)."""
        if self.cfg.fused_update:
            return self.update_minibatch_fused(mb, with_stats)
        mean, log_std = self.actor(mb.obs)
        loss, parts = ppo_loss(
            gaussian_log_prob(mb.actions, mean, log_std),
            mb.logp,
            mb.advantages,
            self.critic(mb.obs),
            mb.values,
            mb.returns,
            gaussian_entropy(self.actor.log_std) if self.cfg.ent_coef else None,  # log-std is state-independent
            self.cfg,
        )
        self.optimizer.zero_grad()
        loss.backward()
        grad_norm = self.optimizer.step()
        if not with_stats:
            return {}
        return {**ppo_stats(parts, self.cfg), "stats/grad_norm": grad_norm}

    def update_minibatch_fused(self, mb: Batch, with_stats: bool) -> dict[str, Tensor]:
        """The same step with hand-written gradients in NumPy (every .grad is overwritten: no zero_grad)."""
        obs = mb.obs.numpy()
        mean, actor_inputs = self.actor_np.forward(obs)
        values, critic_inputs = self.critic_np.forward(obs)
        d_mean, d_log_std, d_values, parts = ppo_loss_grads(
            mean,
            self.actor.log_std.detach().numpy(),
            mb.actions.numpy(),
            mb.logp.numpy(),
            mb.advantages.numpy(),
            values[:, 0],
            mb.values.numpy(),
            mb.returns.numpy(),
            self.cfg,
        )
        self.actor_np.backward(actor_inputs, d_mean)
        self.critic_np.backward(critic_inputs, d_values[:, None])
        self.actor.log_std.grad.numpy()[:] = d_log_std
        grad_norm = self.optimizer.step()
        if not with_stats:
            return {}
        parts = {k: torch.as_tensor(v) for k, v in parts.items()}
        return {**ppo_stats(parts, self.cfg), "stats/grad_norm": grad_norm}

    def optim_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_optim_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
