"""PPO (spec agents.md §6.1) and SAC (§6.4) fidelity checks, plus one-update-step properties:
the right parameters move, frozen/target ones do not, and the same seed gives identical metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import rlopt.agents.ppo as ppo_module
from rlopt.agents.base import EnvSpec
from rlopt.agents.buffers import Batch, ReplayBatch
from rlopt.agents.fused import relu_ensemble_selected_input_grad, relu_mlp_forward
from rlopt.agents.mdpo import MDPOAgent, MDPOConfig
from rlopt.agents.mdpo_off import MDPOOffAgent, MDPOOffConfig
from rlopt.agents.networks import EnsembleMLP
from rlopt.agents.ppo import PPOAgent, PPOConfig, ppo_loss, ppo_stats
from rlopt.agents.sac import SACAgent, SACConfig, sac_alpha_loss, sac_critic_loss
from rlopt.optim import approx_kl, clipped_surrogate, tanh_gaussian_log_prob

OBS_DIM, ACT_DIM = 3, 2
LOW = np.array([-2.0, -1.0], np.float32)  # VecEnv hands the agents float32 bounds
HIGH = np.array([2.0, 3.0], np.float32)
SPEC = EnvSpec(OBS_DIM, ACT_DIM, LOW, HIGH)


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def unchanged(module: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, q) for p, q in zip(module.parameters(), before))


def on_policy_batch(agent, size: int = 64) -> Batch:
    obs = torch.randn(size, OBS_DIM)
    with torch.no_grad():
        actions, logp = agent.actor.sample(obs)
        values = agent.critic(obs)
    advantages = actions[:, 0] + 0.5 * torch.randn(size)
    return Batch(obs, actions, logp, values, advantages, values + advantages)


def replay_batch(size: int = 16) -> ReplayBatch:
    actions = torch.from_numpy(LOW + (HIGH - LOW) * np.random.random_sample((size, ACT_DIM)).astype(np.float32))
    terminated = (torch.arange(size) % 4 == 0).float()
    return ReplayBatch(
        torch.randn(size, OBS_DIM), actions, torch.randn(size), torch.randn(size, OBS_DIM) + 2.0, terminated
    )


def make_ppo(**overrides) -> PPOAgent:
    return PPOAgent(PPOConfig(hidden=(16, 16), **overrides), SPEC)


def make_sac(**overrides) -> SACAgent:
    return SACAgent(SACConfig(hidden=(32, 32), batch_size=16, buffer_size=100, **overrides), SPEC)


# ----------------------------------------------------------------------------- PPO


@pytest.mark.parametrize("fused", [False, True])
def test_ppo_first_minibatch_ratio_one(monkeypatch, fused):
    """At the first minibatch of an update the policy is still the behaviour policy: ratio 1, clip_frac 0."""
    # pure loss: logp == old_logp gives ratio 1, approx_kl 0, clip_frac 0, policy loss -mean(A)
    cfg = PPOConfig(normalize_advantages=False)
    logp, adv = torch.randn(32), torch.randn(32)
    zeros = torch.zeros(32)
    _, parts = ppo_loss(logp, logp.clone(), adv, zeros, zeros, zeros, zeros, cfg)
    stats = ppo_stats(parts, cfg)
    assert stats["stats/clip_frac"].item() == 0.0 and stats["stats/approx_kl"].item() == 0.0
    assert stats["loss/policy"].item() == pytest.approx(-adv.mean().item(), abs=1e-7)

    # in PPOAgent.update (autograd and fused paths): record the ratio each minibatch sees
    ratios: list[torch.Tensor] = []

    def recording_stats(parts, cfg):
        ratios.append(parts["ratio"].detach().clone())
        return ppo_stats(parts, cfg)

    monkeypatch.setattr(ppo_module, "ppo_stats", recording_stats)
    agent = make_ppo(num_minibatches=4, update_epochs=2, fused_update=fused)
    stats_seen: list[dict] = []
    inner = agent.update_minibatch

    def recording_update(mb, with_stats=True):
        stats_seen.append(inner(mb, with_stats=True))
        return stats_seen[-1]

    agent.update_minibatch = recording_update
    agent.update(on_policy_batch(agent), iteration=0, num_iterations=10)

    assert len(ratios) == 8 and len(stats_seen) == 8
    assert (ratios[0] - 1).abs().max().item() < 1e-6
    assert stats_seen[0]["stats/clip_frac"].item() == 0.0
    assert abs(stats_seen[0]["stats/approx_kl"].item()) < 1e-10
    assert (ratios[-1] - 1).abs().max().item() > 1e-4  # later minibatches see a moved policy


def test_ppo_clip_identity():
    """min(rA, clip(r)A) equals rA when |r - 1| < eps; the gradient vanishes exactly for samples clipped on
    the side the advantage favours (A > 0, r > 1 + eps or A < 0, r < 1 - eps) and only for those."""
    eps = 0.2
    ratio = torch.tensor([0.9, 1.1, 0.95, 1.15, 1.5, 0.5, 0.5, 1.5])
    adv = torch.tensor([1.0, -1.0, -2.0, 2.0, 1.0, -1.0, 1.0, -1.0])
    inside = (ratio - 1).abs() < eps
    surrogate = clipped_surrogate(ratio, adv, eps)
    torch.testing.assert_close(surrogate[inside], (ratio * adv)[inside], atol=0, rtol=0)
    torch.testing.assert_close(surrogate[~inside], torch.tensor([1.2, -0.8, 0.5, -1.5]))

    cfg = PPOConfig(clip_coef=eps, normalize_advantages=False, ent_coef=0.0)
    logp = ratio.log().requires_grad_(True)  # old_logp = 0, so exp(logp - old_logp) = ratio
    values = torch.zeros(8)
    loss, parts = ppo_loss(logp, torch.zeros(8), adv, values, values, values, torch.zeros(8), cfg)
    stats = ppo_stats(parts, cfg)
    (grad,) = torch.autograd.grad(loss, logp)
    expected = -(ratio * adv) / 8  # d/dlogp of -mean(r A) where the unclipped branch is active
    expected[4:6] = 0.0  # clipped on the favoured side: no gradient
    torch.testing.assert_close(grad, expected)
    assert (grad[6:] != 0).all()  # clipped on the unfavoured side: the pessimistic bound keeps the gradient
    assert stats["stats/clip_frac"].item() == 0.5


def test_ppo_value_loss_clipping():
    cfg = PPOConfig(clip_coef=0.2, normalize_advantages=False)
    zeros = torch.zeros(2)
    values, old_values, returns = torch.tensor([1.0, 1.0]), torch.zeros(2), torch.tensor([0.0, 2.0])
    _, parts = ppo_loss(zeros, zeros, zeros, values, old_values, returns, zeros, cfg)
    stats = ppo_stats(parts, cfg)
    # max((V - R)^2, (V_old + clip(V - V_old) - R)^2): [max(1, 0.04), max(1, 3.24)] -> 0.5 * mean
    assert stats["loss/value"].item() == pytest.approx(0.5 * (1.0 + 3.24) / 2)
    _, plain = ppo_loss(zeros, zeros, zeros, values, old_values, returns, zeros, PPOConfig(clip_value_loss=False))
    assert plain["value_loss"].item() == pytest.approx(0.5)


def test_approx_kl_nonnegative_and_unbiased():
    log_ratio = 3.0 * torch.randn(1000)
    assert approx_kl(log_ratio).item() >= 0
    assert ((torch.expm1(log_ratio) - log_ratio) >= 0).all()
    assert approx_kl(torch.zeros(10)).item() == 0.0
    r = log_ratio.exp()
    assert approx_kl(log_ratio).item() == pytest.approx(((r - 1) - r.log()).mean().item(), rel=1e-5)
    # k3 at samples of the old policy estimates KL(old || new)
    dtype = torch.float64
    old, new = Normal(torch.tensor(0.0, dtype=dtype), 1.0), Normal(torch.tensor(0.3, dtype=dtype), 1.2)
    x = old.sample((1_000_000,))
    estimate = approx_kl(new.log_prob(x) - old.log_prob(x)).item()
    assert estimate == pytest.approx(kl_divergence(old, new).item(), rel=0.02)


def test_ppo_update_anneals_lr_and_moves_both_nets():
    agent = make_ppo(num_minibatches=2, update_epochs=1)
    actor_before, critic_before = params(agent.actor), params(agent.critic)
    stats = agent.update(on_policy_batch(agent), iteration=5, num_iterations=20)
    assert stats["stats/lr"].item() == pytest.approx(3e-4 * 0.75)
    assert not unchanged(agent.actor, actor_before) and not unchanged(agent.critic, critic_before)
    assert all(torch.isfinite(v).all() for v in stats.values())


# ----------------------------------------------------------------------------- SAC


def test_sac_target_uses_next_action():
    """y = r + gamma (1 - term) (min_j Qbar_j(s', a') - alpha log pi(a'|s')) with a' ~ pi(.|s') from the
    current actor and the target critics; reproduced from the same noise draw."""
    agent = make_sac(gamma=0.9, alpha=0.3)
    with torch.no_grad():  # target critics != online critics, so using the online ones would be caught
        for p in agent.critic_target.parameters():
            p.add_(0.2 * torch.randn_like(p))
    batch = replay_batch()
    actor, alpha = agent.actor, 0.3

    torch.manual_seed(123)
    noise = torch.randn(16, ACT_DIM)  # the draw actor.sample makes inside critic_update
    with torch.no_grad():

        def soft_value(action_obs, critic):
            mean, log_std = actor(action_obs)  # a' ~ pi(.|action_obs), evaluated at Q(s', a')
            u = mean + log_std.exp() * noise
            q = critic(batch.next_obs, actor.squash(u))
            return q, tanh_gaussian_log_prob(u, mean, log_std, actor.scale)

        q_next, logp_next = soft_value(batch.next_obs, agent.critic_target)

        def target_from(next_value):
            return batch.rewards + 0.9 * (1 - batch.terminated) * next_value

        target = target_from(q_next.min(0).values - alpha * logp_next)
        q = agent.critic(batch.obs, batch.actions)
        expected = (q - target).square().mean(1).sum()

        def loss_for(y):
            return (q - y).square().mean(1).sum().item()

        q_cur, logp_cur = soft_value(batch.obs, agent.critic_target)  # action from s instead of s'
        q_online, _ = soft_value(batch.next_obs, agent.critic)
        wrong = {
            "current-state action": target_from(q_cur.min(0).values - alpha * logp_cur),
            "online critics": target_from(q_online.min(0).values - alpha * logp_next),
            "Q1 only": target_from(q_next[0] - alpha * logp_next),
            "no entropy term": target_from(q_next.min(0).values),
        }
    for name, y in wrong.items():
        assert abs(loss_for(y) - expected.item()) > 1e-3, name

    # the pure loss returns this target
    loss, y = sac_critic_loss(q, batch.rewards, batch.terminated, q_next, logp_next, torch.tensor(alpha), 0.9)
    torch.testing.assert_close(y, target)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)

    torch.manual_seed(123)
    stats = agent.critic_update(batch)
    assert stats["loss/critic"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_sac_alpha_moves_up_when_entropy_below_target():
    target_entropy = -2.0
    for logp_value, direction in ((3.0, +1), (1.0, -1)):  # entropy -3 < -2 (too low) / -1 > -2 (too high)
        log_alpha = torch.tensor(math.log(0.5), requires_grad=True)
        loss = sac_alpha_loss(log_alpha, torch.full((8,), logp_value), target_entropy)
        (grad,) = torch.autograd.grad(loss, log_alpha)
        assert grad.item() == pytest.approx(-0.5 * (logp_value + target_entropy))  # -alpha (log pi + H_bar)
        with torch.no_grad():
            stepped = log_alpha - 0.1 * grad
        assert direction * (stepped.exp() - 0.5).item() > 0

    # inside SACAgent.actor_update: a nearly deterministic actor (log-std -5) raises alpha; a unit-std one
    # centred at 0 (entropy ~ 6 nats after tanh and the scale, above -dim A = -2) lowers it.
    # log_std = -5 + 3.5 (tanh(raw) + 1): raw = -10 gives -5, raw = atanh(3/7) gives 0.
    for raw, direction in ((-10.0, +1), (math.atanh(3 / 7), -1)):
        agent = make_sac(alpha=0.2)
        with torch.no_grad():
            last = agent.actor.trunk[-1]
            last.weight.zero_()
            last.bias[:ACT_DIM].zero_()
            last.bias[ACT_DIM:].fill_(raw)
        stats = agent.actor_update(torch.randn(16, OBS_DIM))
        entropy_gap = stats["stats/entropy"].item() - agent.target_entropy
        assert direction * entropy_gap < 0
        assert direction * (stats["stats/alpha"].item() - 0.2) > 0


def test_sac_updates_move_the_right_parameters():
    tau = 0.1
    agent = make_sac(tau=tau, policy_frequency=2)
    batch = replay_batch()
    snap = lambda: (
        params(agent.actor),
        params(agent.critic),
        params(agent.critic_target),
        agent.log_alpha.detach().clone(),
    )

    actor0, critic0, target0, alpha0 = snap()
    agent.critic_update(batch)
    assert not unchanged(agent.critic, critic0)
    assert unchanged(agent.actor, actor0) and unchanged(agent.critic_target, target0)
    assert torch.equal(agent.log_alpha.detach(), alpha0)

    actor1, critic1, target1, alpha1 = snap()
    agent.actor_update(batch.obs)
    assert not unchanged(agent.actor, actor1) and not torch.equal(agent.log_alpha.detach(), alpha1)
    assert unchanged(agent.critic, critic1) and unchanged(agent.critic_target, target1)

    # a full update at updates % policy_frequency == 0: critic, 2 actor steps, then Polyak with tau
    agent.updates = 0
    actor2, _, target2, _ = snap()
    agent.update(batch)
    assert not unchanged(agent.actor, actor2)
    for p_bar, p_old, p in zip(agent.critic_target.parameters(), target2, agent.critic.parameters()):
        torch.testing.assert_close(p_bar, (1 - tau) * p_old + tau * p, atol=1e-7, rtol=1e-6)
    # the next update is a delayed one: the critic moves, the actor does not
    actor3, critic3, _, _ = snap()
    agent.update(batch)
    assert unchanged(agent.actor, actor3) and not unchanged(agent.critic, critic3)


def test_sac_accepts_float64_action_bounds():
    agent = SACAgent(
        SACConfig(hidden=(8, 8)), EnvSpec(OBS_DIM, ACT_DIM, LOW.astype(np.float64), HIGH.astype(np.float64))
    )
    stats = agent.update(replay_batch())
    assert torch.isfinite(stats["loss/critic"])


# ----------------------------------------------------------------------------- determinism


def run_updates(algo: str, seed: int) -> list[dict[str, torch.Tensor]]:
    """Build an agent and run three updates on seeded synthetic data; returns every update's metrics."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    if algo == "ppo":
        agent = PPOAgent(PPOConfig(hidden=(16, 16), num_minibatches=4, update_epochs=2), SPEC)
    elif algo == "mdpo_on":
        agent = MDPOAgent(MDPOConfig(hidden=(16, 16), inner_steps=3, vf_epochs=1, vf_minibatch_size=16), SPEC)
    elif algo == "sac":
        agent = make_sac()
    else:
        agent = MDPOOffAgent(MDPOOffConfig(hidden=(32, 32), batch_size=16, buffer_size=100, copy_every=2), SPEC)
    out = []
    for k in range(3):
        if agent.kind == "on_policy":
            out.append(agent.update(on_policy_batch(agent), k, 10))
        else:
            out.append(agent.update(replay_batch()))
    return out


@pytest.mark.parametrize("algo", ["ppo", "mdpo_on", "sac", "mdpo_off"])
def test_same_seed_bit_identical_metrics(algo):
    first, second, other = run_updates(algo, 7), run_updates(algo, 7), run_updates(algo, 8)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
    losses = [key for key in first[-1] if key.startswith("loss/")]
    assert losses and all(torch.isfinite(torch.as_tensor(first[-1][k])) for k in losses)
    assert any(not torch.equal(torch.as_tensor(first[-1][k]), torch.as_tensor(other[-1][k])) for k in losses)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"clip_value_loss": False}, {"ent_coef": 0.01}, {"normalize_advantages": False}, {"clip_coef": 0.05}],
)
def test_ppo_fused_update_equals_autograd(overrides):
    """The hand-written gradients of the fast path give the same parameters as autograd, step after step."""
    torch.manual_seed(3)
    reference = make_ppo(fused_update=False, lr=0.05, **overrides)  # large steps: ratios leave the clip range
    fused = make_ppo(fused_update=True, lr=0.05, **overrides)
    fused.load_state_dict(reference.state_dict())
    batch = on_policy_batch(reference)
    for mb in batch.split(16) * 3:  # later steps see ratios away from 1, so clipping is exercised
        stats_ref = reference.update_minibatch(mb)
        stats_fused = fused.update_minibatch(mb)
    for (name, p_ref), p_fused in zip(reference.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(p_fused, p_ref, atol=1e-6, rtol=1e-5, msg=name)
    assert stats_ref["stats/clip_frac"] > 0  # the comparison covered clipped samples
    for key in stats_ref:
        torch.testing.assert_close(stats_fused[key], stats_ref[key], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("pick", ["mixed", "all_first", "all_second"])
def test_selected_member_input_grad_equals_autograd(pick):
    """Each row's gradient through its selected ensemble member alone equals autograd's gradient of
    sum_i g_i Q_{j(i)}(x_i), including the case where one member is selected by no row."""
    torch.manual_seed(3)
    n, rows, dim = 2, 40, 7
    ensemble = EnsembleMLP(n, dim, 1, (16, 16))
    weights, biases = [w.detach() for w in ensemble.weights], [b.detach() for b in ensemble.biases]
    x = torch.randn(rows, dim, requires_grad=True)
    q = ensemble(x).squeeze(-1)  # [n, B]
    member = {
        "mixed": torch.randint(0, n, (rows,)),
        "all_first": torch.zeros(rows, dtype=torch.long),
        "all_second": torch.ones(rows, dtype=torch.long),
    }[pick]
    assert pick != "mixed" or 0 < int(member.sum()) < rows  # both members are used
    g = torch.randn(rows)
    (q.gather(0, member.view(1, -1)).squeeze(0) * g).sum().backward()
    _, inputs = relu_mlp_forward(x.detach().unsqueeze(0).expand(n, -1, -1), weights, biases)
    got = relu_ensemble_selected_input_grad(weights, inputs, member, g, slice(4, None))
    torch.testing.assert_close(got, x.grad[:, 4:], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])  # the actor step's critic backward: per-row member (1) or dense (2)
@pytest.mark.parametrize("overrides", [{}, {"policy_frequency": 1}, {"autotune": False}, {"target_frequency": 2}])
def test_sac_fused_update_equals_autograd(monkeypatch, overrides, threads):
    """The hand-written SAC update gives the autograd update's parameters, alpha and metrics, step after
    step, when both see the same Gaussian draws (the fused path draws [s'; s] in one call)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check_sac_fused_update_equals_autograd(monkeypatch, overrides)
    finally:
        torch.set_num_threads(previous_threads)


def _check_sac_fused_update_equals_autograd(monkeypatch, overrides):
    torch.manual_seed(5)
    reference = make_sac(fused_update=False, q_lr=0.01, policy_lr=0.01, alpha_lr=0.05, **overrides)
    fused = make_sac(fused_update=True, q_lr=0.01, policy_lr=0.01, alpha_lr=0.05, **overrides)
    fused.load_state_dict(reference.state_dict())
    batches = [replay_batch() for _ in range(4)]
    noise = torch.randn(200, ACT_DIM)
    real_randn_like = torch.randn_like

    def replay_noise(agent):
        cursor = [0]

        def randn_like(t, *args, **kwargs):
            if t.shape[-1] != ACT_DIM:
                return real_randn_like(t, *args, **kwargs)
            start, cursor[0] = cursor[0], cursor[0] + t.shape[0]
            return noise[start : cursor[0]].clone()

        return randn_like

    results = {}
    for name, agent in (("reference", reference), ("fused", fused)):
        monkeypatch.setattr(torch, "randn_like", replay_noise(agent))
        results[name] = [agent.update(b) for b in batches]
    monkeypatch.setattr(torch, "randn_like", real_randn_like)
    for (name, p_ref), p_fused in zip(reference.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(p_fused, p_ref, atol=1e-5, rtol=1e-4, msg=name)
    for p_ref, p_fused in zip(reference.critic_target.parameters(), fused.critic_target.parameters()):
        torch.testing.assert_close(p_fused, p_ref, atol=1e-5, rtol=1e-4)
    assert not unchanged(fused.actor, params(make_sac(**overrides).actor))
    for stats_ref, stats_fused in zip(results["reference"], results["fused"]):
        assert stats_ref.keys() == stats_fused.keys()
        for key in stats_ref:
            torch.testing.assert_close(stats_fused[key], stats_ref[key], atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.parametrize("algo", ["sac", "mdpo_off"])
def test_numpy_exploration_matches_torch_actor(algo):
    """CPU acting goes through the actor's NumPy twin; it reads the live weights (also after updates
    and loads) and draws a = center + scale tanh(mu + sigma eps) like `TanhGaussianActor.sample`."""
    if algo == "sac":
        agent = make_sac()
    else:
        agent = MDPOOffAgent(MDPOOffConfig(hidden=(32, 32), batch_size=16, buffer_size=100), SPEC)
    obs = torch.randn(5, OBS_DIM)
    agent.explore(obs)  # builds the sampler before the weights change
    agent.update(replay_batch())
    other = make_sac() if algo == "sac" else MDPOOffAgent(MDPOOffConfig(hidden=(32, 32)), SPEC)
    agent.actor.load_state_dict(other.actor.state_dict())
    noise = torch.randn(5, ACT_DIM)
    with torch.no_grad():
        mean, log_std = agent.actor(obs)
        expected = agent.actor.squash(mean + log_std.exp() * noise)
    got = agent._numpy_sampler(obs.numpy(), noise.numpy())
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
    actions = agent.explore(obs)
    assert actions.shape == (5, ACT_DIM) and torch.all(actions >= torch.from_numpy(LOW))
    assert torch.all(actions <= torch.from_numpy(HIGH))
