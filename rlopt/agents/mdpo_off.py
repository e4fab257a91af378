"""Off-policy Mirror Descent Policy Optimization (Tomar et al., ICLR 2022, arXiv:2005.09814).

SAC-v1 critics (twin Q, a state-value V and its Polyak target) with the MD actor step: a KL to a
frozen copy pi_theta_k of the actor, refreshed every `copy_every` updates (spec agents.md §1.3):
    L(theta) = E[c log pi_theta(a~|s) + (lambda - c) log pi_theta_k(a~|s) - Q_1(s, a~)] + reg,
both log-densities at the same pre-tanh sample, c = 1/t_k (constant), lambda the entropy weight.
With c = lambda the old-policy term vanishes and the loss is SAC's with alpha = lambda.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from rlopt.agents.base import Agent, EnvSpec
from rlopt.agents.buffers import ReplayBatch
from rlopt.agents.networks import TanhGaussianActor, TwinQ, ValueNet
from rlopt.config import check
from rlopt.optim import FlatAdam, flatten_parameters, log_q, tanh_gaussian_log_prob_per_dim


@dataclass
class MDPOOffConfig:
    buffer_size: int = 1_000_000
    batch_size: int = 256
    learning_starts: int = 10_000
    gamma: float = 0.99
    tau: float = 0.005  # Polyak weight of the V target
    lr: float = 3e-4  # actor, and the joint Q1 + Q2 + V optimiser
    kl_coef: float = 1.0  # c = 1 / t_k, constant off-policy
    ent_coef: float = 0.2  # lambda, fixed
    copy_every: int = 1000  # m: updates between theta_k <- theta
    reg_coef: float = 1e-3  # weight of mean(mu^2) + mean(log_std^2)
    tsallis_q: float = 1.0  # 1 = KL; otherwise log -> q-logarithm per action dimension
    hidden: tuple[int, ...] = (256, 256)
    deterministic_rollouts: bool = False  # compat: the reference code acts with tanh(mu) after warm-up
    updates_per_step: int = 1

    def __post_init__(self):
        check(self.batch_size >= 1, "agent.batch_size", "must be >= 1")
        check(self.buffer_size >= self.batch_size, "agent.buffer_size", "must be >= batch_size")
        check(self.kl_coef >= 0, "agent.kl_coef", "must be >= 0")
        check(self.ent_coef >= 0, "agent.ent_coef", "must be >= 0")
        check(self.copy_every >= 1, "agent.copy_every", "must be >= 1")
        check(0 <= self.tau <= 1, "agent.tau", "must be in [0, 1]")
        check(0 < self.gamma <= 1, "agent.gamma", "must be in (0, 1]")
        check(self.tsallis_q > 0, "agent.tsallis_q", "must be > 0")


def squashed_log_prob(u: Tensor, mean: Tensor, log_std: Tensor, log_scale: Tensor, q: float = 1.0) -> Tensor:
    """log pi(tanh-squashed a | s) at pre-tanh u: [B, A] -> [B]; for q != 1 the per-dimension
    densities pass through the q-logarithm (MDPO-Tsallis) before summing."""
    per_dim = tanh_gaussian_log_prob_per_dim(u, mean, log_std, log_scale)
    if q == 1.0:
        return per_dim.sum(-1)
    return log_q(per_dim.exp(), q).sum(-1)


def mdpo_off_actor_loss(
    logp_new: Tensor,
    logp_old: Tensor,
    q1: Tensor,
    mean: Tensor,
    log_std: Tensor,
    kl_coef: float,
    ent_coef: float,
    reg_coef: float,
) -> Tensor:
    """mean[c l_new + (lambda - c) l_old - Q1] + reg (mean mu^2 + mean log_std^2); [B] and [B, A] in."""
    objective = kl_coef * logp_new + (ent_coef - kl_coef) * logp_old - q1
    return objective.mean() + reg_coef * (mean.square().mean() + log_std.square().mean())


def mdpo_off_critic_loss(
    q: Tensor,
    v: Tensor,
    rewards: Tensor,
    terminated: Tensor,
    next_v_target: Tensor,
    q_new_min: Tensor,
    logp_new: Tensor,
    ent_coef: float,
    gamma: float,
) -> Tensor:
    """SAC-v1 critics: 0.5 sum_j E(Q_j - y_Q)^2 + 0.5 E(V - y_V)^2 with
    y_Q = r + gamma (1 - term) Vbar(s') and y_V = min_j Q_j(s, a~) - lambda log pi_theta(a~|s) (stop-grad)."""
    with torch.no_grad():
        y_q = rewards + gamma * (1.0 - terminated) * next_v_target
        y_v = q_new_min - ent_coef * logp_new
    return 0.5 * (q - y_q).square().mean(1).sum() + 0.5 * (v - y_v).square().mean()


class MDPOOffAgent(Agent):
    kind = "off_policy"

    def __init__(self, cfg: MDPOOffConfig, spec: EnvSpec):
        super().__init__()
        self.cfg = cfg
        self.gamma = cfg.gamma
        low = torch.as_tensor(spec.action_low, dtype=torch.float32)
        high = torch.as_tensor(spec.action_high, dtype=torch.float32)
        self.actor = TanhGaussianActor(spec.obs_dim, spec.act_dim, low, high, cfg.hidden, (-20.0, 2.0), "clip")
        self.old_actor = copy.deepcopy(self.actor).requires_grad_(False)  # pi_theta_k
        self.critic = TwinQ(spec.obs_dim, spec.act_dim, cfg.hidden)
        self.value_net = ValueNet(spec.obs_dim, cfg.hidden, activation="relu", orthogonal=False)
        self.value_target = copy.deepcopy(self.value_net).requires_grad_(False)
        self.to(spec.device)  # before flattening: the flat buffers live where the weights live
        self.actor_optimizer = FlatAdam(self.actor.parameters(), cfg.lr)
        self.critic_optimizer = FlatAdam([*self.critic.parameters(), *self.value_net.parameters()], cfg.lr)
        self.value_flat = self.critic_optimizer.flat[-sum(p.numel() for p in self.value_net.parameters()) :]
        self.value_target_flat, _ = flatten_parameters(self.value_target.parameters(), with_grad=False)
        self.updates = 0
        self._numpy_sampler = None  # built on first CPU use, after the optimisers flattened the weights

    def explore(self, obs: Tensor) -> Tensor:
        if self.cfg.deterministic_rollouts:
            return self.actor.deterministic(obs)
        if obs.device.type == "cpu":  # NumPy acting: a few microseconds instead of ~30 torch dispatches
            if self._numpy_sampler is None:
                self._numpy_sampler = self.actor.numpy_sampler()
            return torch.from_numpy(self._numpy_sampler(obs.numpy()))
        return self.actor.sample(obs)[0]

    def deterministic_action(self, obs: Tensor) -> Tensor:
        return self.actor.deterministic(obs)

    def losses(self, batch: ReplayBatch, noise: Tensor | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(actor loss, critic loss, stats) on one batch, all from one draw a~ = tanh(mu + sigma eps)."""
        cfg = self.cfg
        log_scale = torch.log(self.actor.scale)
        mean, log_std = self.actor(batch.obs)
        with torch.no_grad():
            old_mean, old_log_std = self.old_actor(batch.obs)
        u = mean + torch.exp(log_std) * (torch.randn_like(mean) if noise is None else noise)
        actions = self.actor.squash(u)
        logp_new = squashed_log_prob(u, mean, log_std, log_scale, cfg.tsallis_q)
        logp_old = squashed_log_prob(u, old_mean, old_log_std, log_scale, cfg.tsallis_q)  # grad flows via u
        q_new = self.critic(batch.obs, actions, detach=True)  # the actor reads Q1 only (reference code)
        actor_loss = mdpo_off_actor_loss(
            logp_new, logp_old, q_new[0], mean, log_std, cfg.kl_coef, cfg.ent_coef, cfg.reg_coef
        )
        with torch.no_grad():
            next_v = self.value_target(batch.next_obs)
        critic_loss = mdpo_off_critic_loss(
            self.critic(batch.obs, batch.actions),
            self.value_net(batch.obs),
            batch.rewards,
            batch.terminated,
            next_v,
            q_new.detach().min(0).values,
            logp_new.detach(),
            cfg.ent_coef,
            cfg.gamma,
        )
        stats = {
            "loss/actor": actor_loss.detach(),
            "loss/critic": critic_loss.detach(),
            "stats/kl_old": (logp_new - logp_old).detach().mean(),
            "stats/entropy": -logp_new.detach().mean(),
            "stats/q": q_new[0].detach().mean(),
        }
        return actor_loss, critic_loss, stats

    def update(self, batch: ReplayBatch) -> dict[str, Tensor]:
        if self.updates % self.cfg.copy_every == 0:
            self.old_actor.load_state_dict(self.actor.state_dict())  # theta_k <- theta
        actor_loss, critic_loss, stats = self.losses(batch)
        # the two losses share no parameters (critics detached in the actor loss, a~ detached in the
        # critic targets), so one backward fills both gradient buffers, all from pre-update weights
        self.actor_optimizer.zero_grad()
        self.critic_optimizer.zero_grad()
        (actor_loss + critic_loss).backward()
        self.actor_optimizer.step()
        self.critic_optimizer.step()
        with torch.no_grad():
            self.value_target_flat.lerp_(self.value_flat, self.cfg.tau)
        self.updates += 1
        return stats

    def optim_state(self) -> dict:
        return {
            "actor": self.actor_optimizer.state_dict(),
            "critic": self.critic_optimizer.state_dict(),
            "updates": self.updates,
        }

    def load_optim_state(self, state: dict) -> None:
        self.actor_optimizer.load_state_dict(state["actor"])
        self.critic_optimizer.load_state_dict(state["critic"])
        self.updates = int(state["updates"])
