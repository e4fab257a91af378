"""On-policy MDPO fidelity checks F1-F6 (spec agents.md §1.2.3)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from rlopt.agents.base import EnvSpec
from rlopt.agents.buffers import Batch
from rlopt.agents.mdpo import MDPOAgent, MDPOConfig, mdpo_policy_loss, step_size
from rlopt.agents.networks import GaussianActor
from rlopt.config import ConfigError
from rlopt.optim import gaussian_kl, gaussian_log_prob

OBS_DIM, ACT_DIM = 3, 2


def make_agent(**overrides) -> MDPOAgent:
    cfg = MDPOConfig(hidden=(16, 16), **overrides)
    agent = MDPOAgent(cfg, EnvSpec(OBS_DIM, ACT_DIM, -np.ones(ACT_DIM, np.float32), np.ones(ACT_DIM, np.float32)))
    with torch.no_grad():  # the 0.01-gain output layer makes mu ~ 0; spread it so the state matters
        agent.actor.mean_net[-1].weight.normal_(0.0, 0.5)
    agent.sync_old_policy()
    return agent


def on_policy_batch(actor: GaussianActor, size: int = 64) -> Batch:
    """A batch sampled from `actor` (so batch.logp is the behaviour log-prob) with advantages that
    favour large first action components, so the policy gradient is not pure noise."""
    obs = torch.randn(size, OBS_DIM)
    with torch.no_grad():
        actions, logp = actor.sample(obs)
    values = torch.randn(size)
    advantages = actions[:, 0] + 0.5 * torch.randn(size)
    return Batch(obs, actions, logp, values, advantages, values + advantages)


def normalized(advantages: torch.Tensor) -> torch.Tensor:
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)


def record_policy_steps(agent: MDPOAgent) -> list[dict]:
    """Wrap agent.policy_step to keep each inner step's stats and the actor/old-actor weights after it."""
    records: list[dict] = []
    inner = agent.policy_step

    def wrapped(*args, **kwargs):
        stats = inner(*args, **kwargs)
        records.append(
            {
                "stats": stats,
                "actor": [p.detach().clone() for p in agent.actor.parameters()],
                "old": [p.detach().clone() for p in agent.old_actor.parameters()],
            }
        )
        return stats

    agent.policy_step = wrapped
    return records


def test_first_inner_step_is_pg():
    """F1: at theta = theta_k the ratio is 1, KL and its gradient are 0, and the MDPO gradient is the
    vanilla policy gradient of -mean(logp * A)."""
    agent = make_agent()
    batch = on_policy_batch(agent.actor)
    adv = normalized(batch.advantages)
    params = list(agent.actor.parameters())

    mean, log_std = agent.actor(batch.obs)
    with torch.no_grad():
        old_mean, old_log_std = agent.old_actor(batch.obs)
    logp = gaussian_log_prob(batch.actions, mean, log_std)
    loss, stats = mdpo_policy_loss(logp, batch.logp, adv, mean, log_std, old_mean, old_log_std, t_k=0.05)
    assert stats["stats/max_ratio_dev"].item() < 1e-6
    assert abs(stats["stats/kl"].item()) < 1e-7

    kl = gaussian_kl(mean, log_std, old_mean, old_log_std).mean()
    grad_kl = torch.autograd.grad(kl, params, retain_graph=True)
    assert max(g.abs().max().item() for g in grad_kl) < 1e-7
    grad_total = torch.autograd.grad(loss, params, retain_graph=True)
    grad_pg = torch.autograd.grad(-(logp * adv).mean(), params)
    assert max(g.abs().max().item() for g in grad_pg) > 1e-2
    for g, g_ref in zip(grad_total, grad_pg):
        torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=0)

    # inside MDPOAgent.update, the first inner step of every iteration sees ratio 1, KL 0 and |grad| = |grad_pg|
    records = record_policy_steps(agent)
    for iteration in range(2):
        batch = on_policy_batch(agent.actor)  # collected by the current theta, which update() copies to theta_k
        mean, log_std = agent.actor(batch.obs)
        logp = gaussian_log_prob(batch.actions, mean, log_std)
        grad_pg = torch.autograd.grad(-(logp * normalized(batch.advantages)).mean(), params)
        pg_norm = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grad_pg]))
        start = len(records)
        agent.update(batch, iteration=iteration, num_iterations=10)
        first, second = records[start]["stats"], records[start + 1]["stats"]
        assert first["stats/max_ratio_dev"].item() < 1e-6 and abs(first["stats/kl"].item()) < 1e-7
        assert first["stats/grad_norm"].item() == pytest.approx(pg_norm.item(), rel=1e-5)
        assert second["stats/kl"].item() > 0  # later inner steps have moved away from theta_k


def test_kl_direction_new_old():
    """F2: with theta != theta_k and unequal stds, the loss holds KL(pi_theta || pi_theta_k), not the reverse."""
    agent = make_agent()
    batch = on_policy_batch(agent.actor)
    with torch.no_grad():
        old_mean, old_log_std = agent.old_actor(batch.obs)
        agent.actor.log_std.copy_(torch.tensor([0.5, -0.4]))
        for p in agent.actor.mean_net.parameters():
            p.add_(0.2 * torch.randn_like(p))
        mean, log_std = (x.clone() for x in agent.actor(batch.obs))  # log_std is a view of the parameter
    t_k = 0.5
    stats = agent.policy_step(batch, normalized(batch.advantages), old_mean, old_log_std, t_k)

    new, old = Normal(mean, log_std.exp()), Normal(old_mean, old_log_std.exp())
    kl_new_old = kl_divergence(new, old).sum(-1).mean().item()
    kl_old_new = kl_divergence(old, new).sum(-1).mean().item()
    assert abs(kl_new_old - kl_old_new) > 0.05  # the two directions are distinguishable here
    in_loss = (stats["loss/policy"] + stats["stats/surrogate"]).item() * t_k  # loss = -surrogate + KL / t_k
    assert in_loss == pytest.approx(kl_new_old, abs=1e-5)
    assert abs(in_loss - kl_old_new) > 0.05
    assert stats["stats/kl"].item() == pytest.approx(kl_new_old, abs=1e-5)


def test_old_policy_frozen():
    """F3: theta_k has requires_grad False and stays at the pre-update theta across the m inner steps
    (no gradient, no optimiser step), while theta moves at every step."""
    agent = make_agent(inner_steps=4, vf_epochs=1)
    assert all(not p.requires_grad for p in agent.old_actor.parameters())
    records = record_policy_steps(agent)
    for iteration in range(2):
        batch = on_policy_batch(agent.actor)
        theta_k = [p.detach().clone() for p in agent.actor.parameters()]
        critic_before = [p.detach().clone() for p in agent.critic.parameters()]
        start = len(records)
        agent.update(batch, iteration, num_iterations=10)
        steps = records[start:]
        assert len(steps) == 4
        for step in steps:
            for p_old, p_k in zip(step["old"], theta_k):
                assert torch.equal(p_old, p_k)
        for before, after in zip([{"actor": theta_k}] + steps[:-1], steps):  # theta moves at every step
            assert max((a - b).abs().max().item() for a, b in zip(after["actor"], before["actor"])) > 1e-5
        assert all(p.grad is None for p in agent.old_actor.parameters())
        assert all(not p.requires_grad for p in agent.old_actor.parameters())
        # the value net is fitted in the same update (after the policy steps)
        assert max((p - q).abs().max().item() for p, q in zip(agent.critic.parameters(), critic_before)) > 1e-5


def test_tk_schedule():
    """F4: t_0 = 1, t_{K/2} = 0.5, t_k >= t_min, non-increasing; the constant schedule is constant."""
    cfg, num_iterations = MDPOConfig(), 100
    schedule = [step_size(k, num_iterations, cfg) for k in range(num_iterations + 5)]
    assert schedule[0] == 1.0
    assert schedule[50] == pytest.approx(0.5)
    assert schedule[99] == pytest.approx(0.01)
    assert min(schedule) == cfg.t_min == 1e-3 and schedule[100] == cfg.t_min
    assert all(a >= b for a, b in zip(schedule, schedule[1:]))
    assert step_size(36, 73, cfg) == pytest.approx(0.5, abs=1 / 73)  # odd K: t_{K/2} within one step of 0.5

    constant = MDPOConfig(t_schedule="constant", t_init=0.7)
    assert {step_size(k, 10, constant) for k in (0, 5, 9, 10)} == {0.7}

    # the agent reports the t_k it used for iteration k
    agent = make_agent(inner_steps=1, vf_epochs=1)
    stats = agent.update(on_policy_batch(agent.actor), iteration=5, num_iterations=20)
    assert stats["stats/t_k"].item() == pytest.approx(0.75)

    for bad in (dict(t_schedule="cosine"), dict(t_min=0.0), dict(t_min=2.0, t_init=1.0)):
        with pytest.raises(ConfigError, match=r"agent\.t_"):
            MDPOConfig(**bad)


def test_proximity_monotone_sgd():
    """F5: plain SGD, a fixed batch and m = 20: the final KL(pi_theta || pi_theta_k) shrinks
    monotonically as the KL weight 1/t grows over {0.1, 1, 10, 100}."""
    actor_k = GaussianActor(OBS_DIM, ACT_DIM, hidden=(16, 16))
    with torch.no_grad():
        actor_k.mean_net[-1].weight.normal_(0.0, 0.5)
    batch = on_policy_batch(actor_k, size=128)
    adv = normalized(batch.advantages)
    with torch.no_grad():
        old_mean, old_log_std = actor_k(batch.obs)

    kls = []
    for inv_t in (0.1, 1.0, 10.0, 100.0):
        actor = copy.deepcopy(actor_k)
        sgd = torch.optim.SGD(actor.parameters(), lr=0.002)  # stable at 1/t = 100
        for _ in range(20):
            mean, log_std = actor(batch.obs)
            loss, _ = mdpo_policy_loss(
                gaussian_log_prob(batch.actions, mean, log_std),
                batch.logp,
                adv,
                mean,
                log_std,
                old_mean,
                old_log_std,
                t_k=1.0 / inv_t,
            )
            sgd.zero_grad()
            loss.backward()
            sgd.step()
        with torch.no_grad():
            kls.append(gaussian_kl(*actor(batch.obs), old_mean, old_log_std).mean().item())
    assert all(a > b for a, b in zip(kls, kls[1:])), kls
    assert kls[0] > 1e-2 and kls[-1] < 0.01 * kls[0], kls


def test_m1_equals_vpg():
    """F6: with m = 1, each MDPO iteration is one step of the same optimiser (Adam, eps 1e-5, global-norm
    clip 0.5) on the vanilla policy gradient loss -mean(logp * A); three iterations carry Adam's state."""
    agent = make_agent(inner_steps=1, vf_epochs=1)
    reference = copy.deepcopy(agent.actor)
    adam = torch.optim.Adam(reference.parameters(), lr=agent.cfg.lr, eps=agent.cfg.adam_eps)
    clipped_once = False
    for iteration in range(3):
        batch = on_policy_batch(agent.actor)
        agent.update(batch, iteration, num_iterations=10)

        mean, log_std = reference(batch.obs)
        loss = -(gaussian_log_prob(batch.actions, mean, log_std) * normalized(batch.advantages)).mean()
        adam.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), agent.cfg.max_grad_norm)
        clipped_once |= norm.item() > agent.cfg.max_grad_norm
        adam.step()
        for p, q in zip(agent.actor.parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    assert clipped_once  # the comparison covers the clipping path
    moved = max((p - q).abs().max().item() for p, q in zip(agent.actor.parameters(), agent.old_actor.parameters()))
    assert moved > 1e-5


@pytest.mark.parametrize("minimal", [False, True])
def test_fused_value_update_equals_autograd(minimal):
    """The hand-written value-net gradient (default) gives the same update as autograd (clipped and plain loss)."""
    reference = make_agent(fused_update=False, minimal=minimal, vf_lr=0.05)
    fused = make_agent(fused_update=True, minimal=minimal, vf_lr=0.05)
    fused.load_state_dict(reference.state_dict())
    batch = on_policy_batch(reference.actor, size=96)
    before = reference.critic.net[0].weight.detach().clone()
    torch.manual_seed(5)
    stats_ref = reference.update(batch, iteration=0, num_iterations=10)
    torch.manual_seed(5)
    stats_fused = fused.update(batch, iteration=0, num_iterations=10)
    for (name, p_ref), p_fused in zip(reference.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(p_fused, p_ref, atol=1e-6, rtol=1e-5, msg=name)
    torch.testing.assert_close(stats_fused["loss/value"], stats_ref["loss/value"], atol=1e-6, rtol=1e-5)
    assert (reference.critic.net[0].weight - before).abs().max() > 1e-3  # the critic moved
