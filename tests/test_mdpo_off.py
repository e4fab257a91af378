"""Off-policy MDPO fidelity checks F1-F5 (spec agents.md §1.3.1).

The SAC references are written out by hand from the same actor and critics, with the
package's `tanh_gaussian_log_prob` (checked against torch.distributions in test_common.py),
so they share no code with `squashed_log_prob` / `mdpo_off_actor_loss`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlopt.agents.base import EnvSpec
from rlopt.agents.buffers import ReplayBatch
from rlopt.agents.mdpo_off import MDPOOffAgent, MDPOOffConfig, mdpo_off_actor_loss, squashed_log_prob
from rlopt.optim import tanh_gaussian_log_prob

OBS_DIM, ACT_DIM = 3, 2
LOW = np.array([-2.0, -1.0], np.float32)  # non-unit scale, non-zero centre (float32, as VecEnv gives)
HIGH = np.array([2.0, 3.0], np.float32)


def make_agent(**overrides) -> MDPOOffAgent:
    cfg = MDPOOffConfig(hidden=(32, 32), batch_size=8, buffer_size=100, **overrides)
    return MDPOOffAgent(cfg, EnvSpec(OBS_DIM, ACT_DIM, LOW, HIGH))


def replay_batch(size: int = 16) -> ReplayBatch:
    actions = torch.from_numpy(LOW + (HIGH - LOW) * np.random.random_sample((size, ACT_DIM))).float()
    terminated = (torch.arange(size) % 3 == 0).float()
    return ReplayBatch(
        torch.randn(size, OBS_DIM), actions, torch.randn(size), torch.randn(size, OBS_DIM) + 1.0, terminated
    )


def perturb(module: torch.nn.Module, scale: float = 0.1) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def actor_grad(agent: MDPOOffAgent, loss: torch.Tensor) -> torch.Tensor:
    """d loss / d actor params, flattened."""
    grads = torch.autograd.grad(loss, list(agent.actor.parameters()), retain_graph=True)
    return torch.cat([g.reshape(-1) for g in grads])


def sac_actor_reference(
    agent: MDPOOffAgent, obs: torch.Tensor, noise: torch.Tensor, alpha: float, reg_coef: float = 0.0
) -> torch.Tensor:
    """SAC-style alpha * log pi(a~|s) - Q1(s, a~) (+ the MDPO regulariser), written out by hand."""
    actor = agent.actor
    mean, log_std = actor(obs)
    u = mean + log_std.exp() * noise
    logp = tanh_gaussian_log_prob(u, mean, log_std, actor.scale)
    q1 = agent.critic(obs, actor.center + actor.scale * torch.tanh(u))[0]
    reg = reg_coef * (mean.square().mean() + log_std.square().mean())
    return (alpha * logp - q1).mean() + reg


@pytest.mark.parametrize("reg_coef", [0.0, 1e-3])
def test_c_equals_lambda_is_sac(reg_coef):
    """F1: kl_coef == ent_coef -> the actor loss and its gradient are SAC's with alpha = lambda, critic Q1,
    the same noise; the (different) old actor drops out."""
    agent = make_agent(kl_coef=0.2, ent_coef=0.2, reg_coef=reg_coef)
    perturb(agent.old_actor, 0.3)  # theta_k != theta, so the old term would show if it did not vanish
    batch, noise = replay_batch(), torch.randn(16, ACT_DIM)

    actor_loss, _, _ = agent.losses(batch, noise=noise)
    reference = sac_actor_reference(agent, batch.obs, noise, alpha=0.2, reg_coef=reg_coef)
    assert actor_loss.item() == pytest.approx(reference.item(), abs=1e-6)
    torch.testing.assert_close(actor_grad(agent, actor_loss), actor_grad(agent, reference), atol=1e-6, rtol=0)

    # the reduction is specific to c = lambda: with c = 1 the same draw gives another loss
    agent.cfg.kl_coef = 1.0
    other, _, _ = agent.losses(batch, noise=noise)
    assert abs(other.item() - reference.item()) > 1e-2


def test_uniform_anchor_is_sac():
    """F2: with log pi_theta_k replaced by a constant (the uniform anchor), the loss is SAC's with
    alpha = c up to the constant (lambda - c) * const, and the gradient is SAC's."""
    c, lam, const = 1.0, 0.2, -1.7
    agent = make_agent(kl_coef=c, ent_coef=lam, reg_coef=0.0)
    obs, noise = torch.randn(32, OBS_DIM), torch.randn(32, ACT_DIM)
    actor = agent.actor

    mean, log_std = actor(obs)
    u = mean + log_std.exp() * noise
    logp_new = squashed_log_prob(u, mean, log_std, actor.scale.log())
    q1 = agent.critic(obs, actor.squash(u), detach=True)[0]
    loss = mdpo_off_actor_loss(logp_new, torch.full((32,), const), q1, mean, log_std, c, lam, reg_coef=0.0)

    reference = sac_actor_reference(agent, obs, noise, alpha=c)
    assert loss.item() == pytest.approx(reference.item() + (lam - c) * const, abs=1e-5)
    torch.testing.assert_close(actor_grad(agent, loss), actor_grad(agent, reference), atol=1e-6, rtol=0)
    assert actor_grad(agent, reference).abs().max() > 1e-3


def test_expected_grad_matches_sac_after_copy():
    """F3: right after a copy (theta_k = theta) a sampled MDPO gradient differs from SAC's (alpha = lambda,
    critic Q1, same noise) by (c - lambda) times a score function, which has zero mean: averaged over
    1e5 draws on 4 fixed states the two agree within Monte-Carlo error."""
    c, lam = 1.0, 0.2
    agent = make_agent(kl_coef=c, ent_coef=lam, reg_coef=0.0)
    agent.old_actor.load_state_dict(agent.actor.state_dict())
    states = torch.randn(4, OBS_DIM)
    groups, replicas = 25, 1000  # 25 independent group means of 4 x 1000 draws each
    batch = ReplayBatch(
        states.repeat(replicas, 1),
        torch.zeros(4 * replicas, ACT_DIM),
        torch.zeros(4 * replicas),
        states.repeat(replicas, 1),
        torch.zeros(4 * replicas),
    )
    diffs, sac = [], []
    for _ in range(groups):
        noise = torch.randn(4 * replicas, ACT_DIM)
        actor_loss, _, _ = agent.losses(batch, noise=noise)
        g_sac = actor_grad(agent, sac_actor_reference(agent, batch.obs, noise, alpha=lam))
        diffs.append(actor_grad(agent, actor_loss) - g_sac)
        sac.append(g_sac)
    diffs, sac = torch.stack(diffs).double(), torch.stack(sac).double()
    mean_diff = diffs.mean(0)
    std_err = diffs.std(0) / groups**0.5

    # per draw the estimators differ (the score term is large) ...
    assert diffs[0].norm() > 0.05 * sac[0].norm()
    # ... but the mean difference is pure Monte-Carlo noise: sum of squared z-scores ~ its expectation
    ratio = (mean_diff.square().sum() / std_err.square().sum()).item()
    assert ratio < 3.0, ratio
    assert mean_diff.norm() < 0.05 * sac.mean(0).norm()


def test_grad_through_action_into_old_logprob():
    """F4: the gradient flows through a~ into log pi_theta_k (so with c != lambda the old term shapes the
    actor gradient), theta_k itself gets no gradient, and it changes only at multiples of copy_every."""
    c, lam, reg = 1.0, 0.2, 1e-3
    agent = make_agent(kl_coef=c, ent_coef=lam, reg_coef=reg, copy_every=3)
    perturb(agent.old_actor, 0.3)
    batch, noise = replay_batch(), torch.randn(16, ACT_DIM)
    actor_loss, _, _ = agent.losses(batch, noise=noise)
    g_agent = actor_grad(agent, actor_loss)

    actor = agent.actor
    mean, log_std = actor(batch.obs)
    with torch.no_grad():
        old_mean, old_log_std = agent.old_actor(batch.obs)
    u = mean + log_std.exp() * noise
    q1 = agent.critic(batch.obs, actor.squash(u))[0]
    reg_term = reg * (mean.square().mean() + log_std.square().mean())
    logp_new = tanh_gaussian_log_prob(u, mean, log_std, actor.scale)

    def loss_with(old_term):
        return (c * logp_new + (lam - c) * old_term - q1).mean() + reg_term

    g_through = actor_grad(agent, loss_with(tanh_gaussian_log_prob(u, old_mean, old_log_std, actor.scale)))
    g_stopped = actor_grad(agent, loss_with(tanh_gaussian_log_prob(u.detach(), old_mean, old_log_std, actor.scale)))
    g_zeroed = actor_grad(agent, loss_with(torch.zeros(16)))
    torch.testing.assert_close(g_agent, g_through, atol=1e-6, rtol=0)
    assert (g_agent - g_stopped).norm() > 1e-3  # the pathwise term through a~ is present
    assert (g_agent - g_zeroed).norm() > 1e-3  # zeroing the old term changes the gradient

    actor_loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in agent.old_actor.parameters())

    # theta_k <- theta only at updates 0, 3, 6, ...: after update i it holds theta from before update 3 * (i // 3)
    snapshots = []
    for i in range(8):
        snapshots.append([p.detach().clone() for p in agent.actor.parameters()])
        agent.update(replay_batch(8))
        for p_old, p_copy in zip(agent.old_actor.parameters(), snapshots[3 * (i // 3)]):
            assert torch.equal(p_old, p_copy), f"update {i}"
    assert agent.updates == 8
    assert any(not torch.equal(a, b) for a, b in zip(snapshots[0], snapshots[3]))  # the copies differ


def test_value_targets():
    """F5: y_V = min_j Q_j(s, a~) - lambda log pi_theta(a~|s) (current actor), y_Q = r + gamma (1 - term) Vbar(s');
    the critic loss reaches neither the actor nor Vbar, and Vbar then moves by tau towards V."""
    c, lam, gamma, tau = 1.0, 0.3, 0.9, 0.05
    agent = make_agent(kl_coef=c, ent_coef=lam, gamma=gamma, tau=tau)
    perturb(agent.old_actor, 0.3)
    perturb(agent.value_target, 0.3)  # Vbar != V, so using V for y_Q would be caught
    batch, noise = replay_batch(), torch.randn(16, ACT_DIM)
    _, critic_loss, _ = agent.losses(batch, noise=noise)

    actor = agent.actor
    with torch.no_grad():
        mean, log_std = actor(batch.obs)
        u = mean + log_std.exp() * noise
        q_pi = agent.critic(batch.obs, actor.squash(u))  # [2, B]
        logp_new = tanh_gaussian_log_prob(u, mean, log_std, actor.scale)
        logp_old = tanh_gaussian_log_prob(u, *agent.old_actor(batch.obs), actor.scale)
        v_bar, v_now = agent.value_target(batch.next_obs), agent.value_net(batch.next_obs)
    q, v = agent.critic(batch.obs, batch.actions), agent.value_net(batch.obs)

    def loss_for(y_q, y_v):
        return 0.5 * (q - y_q).square().mean(1).sum() + 0.5 * (v - y_v).square().mean()

    y_q = batch.rewards + gamma * (1 - batch.terminated) * v_bar
    y_v = q_pi.min(0).values - lam * logp_new
    reference = loss_for(y_q, y_v)
    assert critic_loss.item() == pytest.approx(reference.item(), abs=1e-5)
    critic_params = [*agent.critic.parameters(), *agent.value_net.parameters()]
    for g, g_ref in zip(
        torch.autograd.grad(critic_loss, critic_params, retain_graph=True),
        torch.autograd.grad(reference, critic_params, retain_graph=True),
    ):
        torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=0)

    # each plausible mistake gives a measurably different loss
    assert (q_pi[0] > q_pi[1]).any() and (q_pi[0] < q_pi[1]).any()  # the min picks both critics
    wrong = {
        "Q1 instead of min": loss_for(y_q, q_pi[0] - lam * logp_new),
        "old actor's logp": loss_for(y_q, q_pi.min(0).values - lam * logp_old),
        "weight c instead of lambda": loss_for(y_q, q_pi.min(0).values - c * logp_new),
        "V instead of Vbar": loss_for(batch.rewards + gamma * (1 - batch.terminated) * v_now, y_v),
        "no termination mask": loss_for(batch.rewards + gamma * v_bar, y_v),
    }
    for name, value in wrong.items():
        assert abs(value.item() - reference.item()) > 1e-4, name

    grads = torch.autograd.grad(critic_loss, list(agent.actor.parameters()), allow_unused=True)
    assert all(g is None or g.abs().max() == 0 for g in grads)
    assert all(not p.requires_grad for p in agent.value_target.parameters())

    # Polyak: Vbar <- (1 - tau) Vbar + tau V after the update's critic step
    target_before = [p.detach().clone() for p in agent.value_target.parameters()]
    agent.update(batch)
    for p_bar, p_old, p_v in zip(agent.value_target.parameters(), target_before, agent.value_net.parameters()):
        torch.testing.assert_close(p_bar, (1 - tau) * p_old + tau * p_v, atol=1e-7, rtol=1e-6)
