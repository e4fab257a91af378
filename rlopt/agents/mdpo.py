"""On-policy Mirror Descent Policy Optimization (Tomar et al., ICLR 2022, arXiv:2005.09814).

Each iteration approximately solves one mirror-descent step
    max_theta  E[ratio * A] - (1 / t_k) E_s KL(pi_theta(.|s) || pi_theta_k(.|s))
with m full-batch Adam steps from theta_k; t_k anneals linearly from 1 towards 0 over the run
(spec agents.md §1.2). The value net is fitted afterwards with a clipped loss on minibatches.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from rlopt.agents.actor_critic import GaussianActorCritic, linear_fraction, value_loss, value_loss_grad
from rlopt.agents.base import EnvSpec
from rlopt.agents.buffers import Batch, shuffled_minibatches
from rlopt.agents.fused import TanhMLP
from rlopt.config import check
from rlopt.optim import FlatAdam, gaussian_kl, gaussian_log_prob


@dataclass
class MDPOConfig:
    lr: float = 3e-4  # policy Adam
    adam_eps: float = 1e-5
    max_grad_norm: float = 0.5
    inner_steps: int = 10  # m: full-batch policy steps per iteration
    t_schedule: str = "linear"  # "linear": t_k = max(1 - k/K, t_min); "constant": t_k = t_init
    t_init: float = 1.0
    t_min: float = 1e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    rollout_steps: int = 2048  # per env
    vf_lr: float = 3e-4
    vf_epochs: int = 5
    vf_minibatch_size: int = 128
    vf_clip: float = 0.2  # clipped value loss epsilon
    hidden: tuple[int, ...] = (64, 64)
    fused_update: bool = True  # hand-written value-net gradients (same math, fewer ops; minimal needs tanh)
    minimal: bool = False  # "-M" variant: no normalisation, no value clipping, default init, lambda = 1
    merge_truncation: bool = False

    def __post_init__(self):
        check(self.inner_steps >= 1, "agent.inner_steps", "must be >= 1")
        check(self.t_schedule in ("linear", "constant"), "agent.t_schedule", "must be 'linear' or 'constant'")
        check(0 < self.t_min <= self.t_init, "agent.t_min", "must be in (0, t_init]")
        check(0 < self.gamma <= 1, "agent.gamma", "must be in (0, 1]")
        check(0 <= self.gae_lambda <= 1, "agent.gae_lambda", "must be in [0, 1]")
        check(self.rollout_steps >= 1, "agent.rollout_steps", "must be >= 1")
        check(self.vf_minibatch_size >= 1, "agent.vf_minibatch_size", "must be >= 1")
        check(self.vf_epochs >= 1, "agent.vf_epochs", "must be >= 1")
        check(self.max_grad_norm > 0, "agent.max_grad_norm", "must be > 0")
        check(self.lr > 0 and self.vf_lr > 0, "agent.lr", "learning rates must be > 0")


def step_size(iteration: int, num_iterations: int, cfg: MDPOConfig) -> float:
    """t_k: linear from t_init at k = 0 towards 0 at k = K, floored at t_min (§1.2.1)."""
    if cfg.t_schedule == "constant":
        return cfg.t_init
    return max(cfg.t_init * linear_fraction(iteration, num_iterations), cfg.t_min)


def mdpo_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mean: Tensor,
    log_std: Tensor,
    old_mean: Tensor,
    old_log_std: Tensor,
    t_k: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """-(mean(ratio * A) - mean KL(pi_theta || pi_theta_k) / t_k); inputs [B] and [B, A]."""
    ratio = torch.exp(logp - old_logp)
    surrogate = (ratio * advantages).mean()
    kl = gaussian_kl(mean, log_std, old_mean, old_log_std).mean()  # new || old: neg-entropy Bregman
    loss = -(surrogate - kl / t_k)
    stats = {
        "loss/policy": loss,
        "stats/surrogate": surrogate,
        "stats/kl": kl,
        "stats/max_ratio_dev": (ratio - 1.0).abs().max(),
    }
    return loss, {k: v.detach() for k, v in stats.items()}


class MDPOAgent(GaussianActorCritic):
    def __init__(self, cfg: MDPOConfig, spec: EnvSpec):
        super().__init__(spec, cfg.hidden, orthogonal=not cfg.minimal)
        self.cfg = cfg
        self.gamma = cfg.gamma
        self.gae_lambda = 1.0 if cfg.minimal else cfg.gae_lambda
        self.normalize_obs = self.normalize_reward = not cfg.minimal
        self.old_actor = copy.deepcopy(self.actor).requires_grad_(False)  # pi_theta_k, never trained
        self.policy_optimizer = FlatAdam(
            self.actor.parameters(), cfg.lr, eps=cfg.adam_eps, max_grad_norm=cfg.max_grad_norm
        )
        self.value_optimizer = FlatAdam(self.critic.parameters(), cfg.vf_lr, eps=cfg.adam_eps)
        if cfg.fused_update:  # NumPy views of the flattened value-net parameters and gradients
            self.critic_np = TanhMLP(self.critic.net)

    def sync_old_policy(self) -> None:
        """theta_k <- theta (hard copy; the rollout was collected by this policy)."""
        self.old_actor.load_state_dict(self.actor.state_dict())

    def policy_step(
        self, batch: Batch, advantages: Tensor, old_mean: Tensor, old_log_std: Tensor, t_k: float
    ) -> dict[str, Tensor]:
        """One full-batch Adam step on the MDPO policy objective."""
        mean, log_std = self.actor(batch.obs)
        loss, stats = mdpo_policy_loss(
            gaussian_log_prob(batch.actions, mean, log_std),
            batch.logp,
            advantages,
            mean,
            log_std,
            old_mean,
            old_log_std,
            t_k,
        )
        self.policy_optimizer.zero_grad()
        loss.backward()
        stats["stats/grad_norm"] = self.policy_optimizer.step()
        return stats

    def update(self, batch: Batch, iteration: int, num_iterations: int) -> dict[str, Tensor]:
        cfg = self.cfg
        self.sync_old_policy()
        t_k = step_size(iteration, num_iterations, cfg)
        advantages = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
        with torch.no_grad():
            old_mean, old_log_std = self.old_actor(batch.obs)
        stats: dict[str, Tensor] = {}
        for _ in range(cfg.inner_steps):
            stats = self.policy_step(batch, advantages, old_mean, old_log_std, t_k)
        with torch.no_grad():  # KL after the m steps (the last step's stats are from before it)
            mean, log_std = self.actor(batch.obs)
            stats["stats/kl"] = gaussian_kl(mean, log_std, old_mean, old_log_std).mean()
        clip = None if cfg.minimal else cfg.vf_clip
        for _ in range(cfg.vf_epochs):
            for mb in shuffled_minibatches(batch, cfg.vf_minibatch_size):
                loss = self.value_step(mb, clip)
        stats["loss/value"] = loss
        stats["stats/t_k"] = torch.tensor(t_k)
        stats["stats/std"] = self.actor.log_std.exp().mean().detach()
        return stats

    def value_step(self, mb: Batch, clip: float | None) -> Tensor:
        """One Adam step of the value net on one minibatch; returns the loss."""
        if self.cfg.fused_update:  # hand-written gradient of the same loss (tested equal to autograd)
            values, inputs = self.critic_np.forward(mb.obs.numpy())
            loss, d_values = value_loss_grad(values[:, 0], mb.values.numpy(), mb.returns.numpy(), clip)
            self.critic_np.backward(inputs, d_values[:, None])
            loss = torch.tensor(loss)
        else:
            loss = value_loss(self.critic(mb.obs), mb.values, mb.returns, clip)
            self.value_optimizer.zero_grad()
            loss.backward()
        self.value_optimizer.step()
        return loss.detach()

    def optim_state(self) -> dict:
        return {"policy": self.policy_optimizer.state_dict(), "value": self.value_optimizer.state_dict()}

    def load_optim_state(self, state: dict) -> None:
        self.policy_optimizer.load_state_dict(state["policy"])
        self.value_optimizer.load_state_dict(state["value"])
