"""Shared building blocks (spec agents.md §0.3, checks 1-5) and the small shared utilities:
Gaussian densities and KL, the tanh-squashed density, GAE, FlatAdam, Polyak averaging, the
q-logarithm, the NumPy acting MLP, twin critics, running normalisation and the replay buffer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution, kl_divergence

from rlopt.agents.base import EnvSpec
from rlopt.agents.buffers import ReplayBuffer
from rlopt.agents.mdpo_off import squashed_log_prob
from rlopt.agents.networks import NumpyMLP, TanhGaussianActor, TwinQ, mlp
from rlopt.agents.ppo import PPOAgent, PPOConfig
from rlopt.agents.returns import discounted_returns, gae
from rlopt.envs.normalize import ObsNormalizer, RewardScaler, RunningMeanStd
from rlopt.optim import (
    FlatAdam,
    gaussian_entropy,
    gaussian_kl,
    gaussian_log_prob,
    log1m_tanh_sq,
    log_q,
    polyak_update,
    tanh_gaussian_log_prob,
)

# ----------------------------------------------------------------------------- Gaussian densities


def test_gaussian_logprob():
    mean = torch.randn(64, 3, dtype=torch.float64)
    log_std = 0.5 * torch.randn(64, 3, dtype=torch.float64)
    x = mean + torch.exp(log_std) * torch.randn(64, 3, dtype=torch.float64) + 0.3
    expected = Normal(mean, log_std.exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(x, mean, log_std), expected, atol=1e-6, rtol=0)
    # float32, broadcast state-independent log-std (the on-policy actor's layout)
    mean32, x32, log_std32 = mean.float(), x.float(), torch.tensor([0.2, -0.7, 1.1])
    expected32 = Normal(mean32, log_std32.exp()).log_prob(x32).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(x32, mean32, log_std32), expected32, atol=1e-5, rtol=0)


def test_gaussian_entropy_matches_torch():
    log_std = torch.randn(10, 4, dtype=torch.float64)
    expected = Normal(torch.zeros_like(log_std), log_std.exp()).entropy().sum(-1)
    torch.testing.assert_close(gaussian_entropy(log_std), expected, atol=1e-12, rtol=0)


def test_gaussian_kl_closed_form_and_mc():
    dtype = torch.float64
    mean_p, log_std_p = torch.tensor([0.3, -1.0, 0.5], dtype=dtype), torch.tensor([0.1, -0.4, 0.3], dtype=dtype)
    mean_q, log_std_q = torch.tensor([-0.2, -0.5, 1.0], dtype=dtype), torch.tensor([0.4, 0.2, -0.1], dtype=dtype)
    p, q = Normal(mean_p, log_std_p.exp()), Normal(mean_q, log_std_q.exp())

    kl_pq = gaussian_kl(mean_p, log_std_p, mean_q, log_std_q)
    kl_qp = gaussian_kl(mean_q, log_std_q, mean_p, log_std_p)
    torch.testing.assert_close(kl_pq, kl_divergence(p, q).sum(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(kl_qp, kl_divergence(q, p).sum(-1), atol=1e-6, rtol=0)

    # Monte Carlo with N = 1e6 draws from p: mean(log p - log q) within 1 %
    x = p.sample((1_000_000,))
    mc = (gaussian_log_prob(x, mean_p, log_std_p) - gaussian_log_prob(x, mean_q, log_std_q)).mean()
    assert abs(mc.item() - kl_pq.item()) < 0.01 * kl_pq.item()

    # zero for identical arguments, asymmetric in general
    assert gaussian_kl(mean_p, log_std_p, mean_p, log_std_p).item() == 0.0
    assert abs(kl_pq.item() - kl_qp.item()) > 0.05

    # batched: [B, D] -> [B]
    mb, lb = torch.randn(5, 3, dtype=dtype), torch.randn(5, 3, dtype=dtype)
    expected = kl_divergence(Normal(mb, lb.exp()), q).sum(-1)
    torch.testing.assert_close(gaussian_kl(mb, lb, mean_q.expand(5, 3), log_std_q.expand(5, 3)), expected)


def test_tanh_gaussian_logprob():
    dtype = torch.float64
    low, high = torch.tensor([-2.0, 0.0], dtype=dtype), torch.tensor([2.0, 0.5], dtype=dtype)
    center, scale = (high + low) / 2, (high - low) / 2  # non-unit, per-dimension scale
    mean = 0.5 * torch.randn(256, 2, dtype=dtype)
    log_std = 0.3 * torch.randn(256, 2, dtype=dtype) - 0.5
    u = (mean + log_std.exp() * torch.randn(256, 2, dtype=dtype)).clamp(-2.5, 2.5)  # away from the bounds
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform(), AffineTransform(center, scale)])
    expected = dist.log_prob(center + scale * torch.tanh(u)).sum(-1)

    torch.testing.assert_close(tanh_gaussian_log_prob(u, mean, log_std, scale), expected, atol=1e-4, rtol=0)
    # the two other implementations in the package: the actor's and MDPO-off's per-dimension one
    actor = TanhGaussianActor(3, 2, low.float(), high.float(), hidden=(8,)).double()
    torch.testing.assert_close(actor.log_prob_pre_tanh(u, mean, log_std), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(squashed_log_prob(u, mean, log_std, scale.log()), expected, atol=1e-4, rtol=0)
    # the scale matters: a unit-scale density differs by sum(log scale)
    unit = tanh_gaussian_log_prob(u, mean, log_std)
    torch.testing.assert_close(unit - expected, scale.log().sum().expand(256), atol=1e-9, rtol=0)


def test_tanh_gaussian_logprob_is_change_of_variables_by_autograd():
    """log pi(a) = log N(u) - log |da/du|, with da/du computed by autograd through a = c + s tanh(u)."""
    dtype = torch.float64
    scale, center = torch.tensor([1.5], dtype=dtype), torch.tensor([0.25], dtype=dtype)
    mean, log_std = torch.tensor([0.2], dtype=dtype), torch.tensor([-0.3], dtype=dtype)
    for value in (-3.0, -0.7, 0.0, 1.2, 4.0):
        u = torch.tensor([value], dtype=dtype, requires_grad=True)
        (jac,) = torch.autograd.grad(center + scale * torch.tanh(u), u)
        expected = gaussian_log_prob(u.detach(), mean, log_std) - jac.abs().log().sum()
        got = tanh_gaussian_log_prob(u.detach(), mean, log_std, scale)
        assert abs(got.item() - expected.item()) < 1e-9


def test_log1m_tanh_sq_is_stable():
    u = torch.linspace(-5, 5, 101, dtype=torch.float64)
    torch.testing.assert_close(log1m_tanh_sq(u), torch.log(1 - torch.tanh(u) ** 2), atol=1e-9, rtol=0)
    # far in the tails 1 - tanh^2 underflows in float32, the identity stays finite and exact
    big = torch.tensor([-40.0, 40.0])
    assert torch.isinf(torch.log(1 - torch.tanh(big) ** 2)).all()
    torch.testing.assert_close(log1m_tanh_sq(big), torch.full((2,), 2 * (math.log(2) - 40.0)))


# ----------------------------------------------------------------------------- GAE


def _no_ends(shape):
    return torch.zeros(shape, dtype=torch.bool)


def test_gae_limits():
    rewards = torch.tensor([[1.0], [0.0], [2.0]])  # [T=3, N=1], STYLE.md §6 example
    values = torch.tensor([[0.5], [0.2], [0.1]])
    next_values = torch.tensor([[0.2], [0.1], [0.0]])  # V(s_{t+1}); last bootstrap 0
    ends = _no_ends((3, 1))

    # lambda = 1: returns are the discounted reward-to-go (plus the zero bootstrap), A = R - V
    adv, ret = gae(rewards, values, next_values, ends, ends, gamma=0.9, gae_lambda=1.0)
    torch.testing.assert_close(ret, torch.tensor([[2.62], [1.8], [2.0]]))
    torch.testing.assert_close(adv, ret - values)

    # lambda = 1 and V = 0: the advantage itself is the discounted reward-to-go
    zeros = torch.zeros(3, 1)
    adv0, ret0 = gae(rewards, zeros, zeros, ends, ends, gamma=0.9, gae_lambda=1.0)
    torch.testing.assert_close(adv0, torch.tensor([[2.62], [1.8], [2.0]]))
    torch.testing.assert_close(ret0, discounted_returns(rewards, ends, 0.9))

    # lambda = 0: one-step TD error r + gamma V' - V
    td, ret_td = gae(rewards, values, next_values, ends, ends, gamma=0.9, gae_lambda=0.0)
    torch.testing.assert_close(td, torch.tensor([[0.68], [-0.11], [1.9]]))
    torch.testing.assert_close(ret_td, rewards + 0.9 * next_values)


def test_truncation_bootstrap():
    """Columns: terminated at t=1 | truncated at t=1 | episode running. gamma = lambda = 0.5."""
    rewards = torch.ones(3, 3)
    values = torch.ones(3, 3)
    next_values = torch.ones(3, 3)
    next_values[1, 0] = 7.0  # after a termination: must be ignored
    next_values[1, 1] = 3.0  # V of the real final observation of the truncated episode
    terminated = _no_ends((3, 3))
    terminated[1, 0] = True
    ended = terminated.clone()
    ended[1, 1] = True

    adv, ret = gae(rewards, values, next_values, terminated, ended, gamma=0.5, gae_lambda=0.5)
    expected = torch.tensor(
        [
            [0.5, 0.875, 0.65625],  # A_0 = delta_0 + 0.25 A_1 ; the trace stops at the episode end
            [0.0, 1.5, 0.625],  # terminal: 1 - 1 = 0; truncated: 1 + 0.5 * 3 - 1; running: 0.5 + 0.25 * 0.5
            [0.5, 0.5, 0.5],
        ]
    )
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)
    # nothing from after an episode end leaks back: changing the later reward leaves t <= 1 alone
    rewards2 = rewards.clone()
    rewards2[2] = 100.0
    adv2, _ = gae(rewards2, values, next_values, terminated, ended, gamma=0.5, gae_lambda=0.5)
    torch.testing.assert_close(adv2[:2, :2], expected[:2, :2])
    # ...but it does propagate while the episode runs, discounted by (gamma lambda)^2
    assert adv2[0, 2].item() == pytest.approx(expected[0, 2].item() + 0.25**2 * 99.0)


# ----------------------------------------------------------------------------- FlatAdam


def _twin_nets():
    net = mlp(4, 3, (16, 16), "tanh").double()
    ref = mlp(4, 3, (16, 16), "tanh").double()
    ref.load_state_dict(net.state_dict())
    return net, ref


@pytest.mark.parametrize("path", ["fused", "numpy", "torch"])  # ATen's fused kernel; the fallbacks
@pytest.mark.parametrize("max_grad_norm", [None, 0.05])
@pytest.mark.parametrize("loss_scale", [1.0, 1e-5])  # 1e-5: gradients of the order of eps, so eps matters
def test_flat_adam_equals_torch_adam(max_grad_norm, loss_scale, path):
    net, ref = _twin_nets()
    kwargs = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-5)
    flat = FlatAdam(net.parameters(), max_grad_norm=max_grad_norm, **kwargs)
    assert flat.use_numpy  # the fallback's default on CPU for a group this small
    if path == "fused" and not flat.use_fused:
        pytest.skip("this torch build has no fused Adam kernel for CPU")
    flat.use_fused, flat.use_numpy = path == "fused", path == "numpy"
    torch_adam = torch.optim.Adam(ref.parameters(), **kwargs)
    start = [p.detach().clone() for p in ref.parameters()]
    for step in range(6):
        x, y = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 3, dtype=torch.float64)
        flat.zero_grad()
        (loss_scale * (net(x) - y).square().mean()).backward()
        norm = flat.grad_norm()
        returned = flat.step()
        assert (returned is None) == (max_grad_norm is None)
        if returned is not None:
            assert returned.item() == pytest.approx(norm.item(), rel=1e-12)

        torch_adam.zero_grad()
        (loss_scale * (ref(x) - y).square().mean()).backward()
        expected_norm = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in ref.parameters()]))
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(ref.parameters(), max_grad_norm)
            if loss_scale == 1.0:
                assert expected_norm > max_grad_norm  # clipping is active, so the test checks it
        torch_adam.step()

        assert abs(norm.item() - expected_norm.item()) < 1e-12 * max(1.0, expected_norm.item())
        for p, q in zip(net.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, atol=1e-10, rtol=0, msg=f"step {step}")
    moved = sum((p.detach() - s).abs().sum().item() for p, s in zip(ref.parameters(), start))
    assert moved > 1e-2


def test_flat_adam_clipping_changes_the_step():
    """The clipped and unclipped runs differ (so the parametrised test above does exercise clipping)."""
    net_a, net_b = _twin_nets()
    opt_a, opt_b = FlatAdam(net_a.parameters(), lr=1e-2), FlatAdam(net_b.parameters(), lr=1e-2, max_grad_norm=0.05)
    for _ in range(3):
        x = torch.randn(16, 4, dtype=torch.float64)
        for net, opt in ((net_a, opt_a), (net_b, opt_b)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    diff = max((p - q).abs().max().item() for p, q in zip(net_a.parameters(), net_b.parameters()))
    assert diff > 1e-4


def test_flat_adam_state_dict_round_trip():
    net, ref = _twin_nets()
    opt = FlatAdam(net.parameters(), lr=1e-2, eps=1e-5)
    x = torch.randn(8, 4, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    ref.load_state_dict(net.state_dict())
    opt_ref = FlatAdam(ref.parameters(), lr=1.0, eps=1e-5)
    opt_ref.load_state_dict(opt.state_dict())
    assert opt_ref.steps == 3 and opt_ref.lr == 1e-2
    for model, optimizer in ((net, opt), (ref, opt_ref)):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.equal(p, q)


# ----------------------------------------------------------------------------- small utilities


def test_polyak_update():
    source = [torch.randn(3, 4), torch.randn(5)]
    target = [torch.randn(3, 4), torch.randn(5)]
    kept = [t.clone() for t in target]
    polyak_update(target, source, tau=0.0)
    for t, k in zip(target, kept):
        assert torch.equal(t, k)
    polyak_update(target, source, tau=0.25)
    for t, k, s in zip(target, kept, source):
        torch.testing.assert_close(t, 0.75 * k + 0.25 * s)
    polyak_update(target, source, tau=1.0)
    for t, s in zip(target, source):
        assert torch.equal(t, s)


def test_log_q():
    x = torch.tensor([0.1, 0.5, 1.0, 2.0, 7.0], dtype=torch.float64)
    assert torch.equal(log_q(x, 1.0), torch.log(x))
    torch.testing.assert_close(log_q(x, 1.0 + 1e-7), torch.log(x), atol=1e-5, rtol=0)  # continuous at q = 1
    torch.testing.assert_close(log_q(x, 2.0), 1.0 - 1.0 / x)
    torch.testing.assert_close(log_q(x, 0.0), x - 1.0)
    assert log_q(torch.tensor([1.0]), 1.5).item() == 0.0


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_numpy_mlp_equals_torch(activation):
    net = mlp(5, 3, (16, 16), activation)
    with torch.no_grad():  # non-zero biases, so that a dropped bias is caught
        for module in net:
            if isinstance(module, nn.Linear):
                module.bias.normal_()
    x = np.random.standard_normal((20, 5))
    expected = net(torch.from_numpy(x).float()).detach().numpy()
    got = NumpyMLP(net)(x)[0]
    assert got.shape == (20, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_numpy_mlp_stacks_nets_of_different_output_width():
    actor, critic = mlp(5, 3, (16, 16)), mlp(5, 1, (16, 16))
    x = np.random.standard_normal((7, 5))
    out = NumpyMLP(actor, critic)(x)
    assert out.shape == (2, 7, 3)
    with torch.no_grad():
        np.testing.assert_allclose(out[0], actor(torch.from_numpy(x).float()).numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(out[1, :, :1], critic(torch.from_numpy(x).float()).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out[1, :, 1:], 0.0)  # padding columns stay zero
    with pytest.raises(ValueError):
        NumpyMLP(mlp(5, 3, (16, 16)), mlp(5, 1, (8, 8)))


def test_rollout_policy_matches_torch_actor():
    """The NumPy acting path returns logp = log N(a; mu, sigma) and V(s) of the torch networks."""
    agent = PPOAgent(PPOConfig(), EnvSpec(4, 2, -np.ones(2), np.ones(2)))
    with torch.no_grad():
        agent.actor.log_std.copy_(torch.tensor([0.3, -0.5]))
        agent.actor.mean_net[-1].weight.normal_()  # orthogonal init with gain 0.01 makes mu ~ 0
    act = agent.rollout_policy()
    obs = np.random.standard_normal((50, 4)).astype(np.float32)
    actions, logp, values = act(obs)
    obs_t, actions_t = torch.from_numpy(obs), torch.from_numpy(actions)
    with torch.no_grad():
        mean, log_std = agent.actor(obs_t)
        np.testing.assert_allclose(logp, gaussian_log_prob(actions_t, mean, log_std).numpy(), atol=1e-4)
        np.testing.assert_allclose(values, agent.critic(obs_t).numpy(), atol=1e-5)
    # the actions are noisy draws around the mean with the right per-dimension spread
    z = (actions_t - mean) / log_std.exp()
    assert 0.6 < z.std(0).min().item() and z.std(0).max().item() < 1.4


def test_twin_q_members_are_independent():
    twin = TwinQ(3, 2, hidden=(8, 8))
    obs, act = torch.randn(10, 3), torch.randn(10, 2)
    q = twin(obs, act)
    assert q.shape == (2, 10)
    assert (q[0] - q[1]).abs().max() > 1e-3  # independently initialised members
    with torch.no_grad():
        twin.net.weights[0][0].add_(0.5)  # member 0, first layer
        twin.net.biases[-1][0].add_(1.0)  # member 0, output bias
    q_after = twin(obs, act)
    assert torch.equal(q_after[1], q[1])
    assert (q_after[0] - q[0]).abs().min() > 0.5

    # gradients stay within a member; the detached path gives the same values and no weight grads
    q_after[1].sum().backward()
    for w, b in zip(twin.net.weights, twin.net.biases):
        assert w.grad[0].abs().max() == 0 and b.grad[0].abs().max() == 0
        assert w.grad[1].abs().max() > 0
    twin.zero_grad(set_to_none=True)
    act_req = act.clone().requires_grad_(True)
    q_det = twin(obs, act_req, detach=True)
    assert torch.equal(q_det, q_after.detach())
    q_det.sum().backward()
    assert all(w.grad is None for w in twin.net.weights) and act_req.grad.abs().max() > 0


# ----------------------------------------------------------------------------- normalisation


def _with_prior(data: np.ndarray, prior_count: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of `data` pooled with RunningMeanStd's prior (mean 0, var 1, count 1e-4)."""
    n = data.shape[0]
    mean = data.sum(0) / (n + prior_count)
    m2 = np.square(data - mean).sum(0) + prior_count * (1.0 + mean**2)
    return mean, m2 / (n + prior_count)


@pytest.mark.parametrize("batch_size", [1, 7])
def test_running_mean_std_matches_numpy(batch_size):
    data = np.random.standard_normal((203, 3)) * np.array([0.5, 2.0, 10.0]) + np.array([3.0, -1.0, 0.0])
    rms = RunningMeanStd((3,))
    for start in range(0, len(data), batch_size):
        rms.update(data[start : start + batch_size])
    mean, var = _with_prior(data)
    np.testing.assert_allclose(rms.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(rms.var, var, rtol=1e-10)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-4)  # the prior is negligible
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-4)
    assert rms.count == pytest.approx(203 + 1e-4)


def test_obs_normalizer_standardises_and_clips():
    norm = ObsNormalizer((2,), clip=3.0)
    data = np.random.standard_normal((500, 2)) * np.array([4.0, 0.1]) + np.array([10.0, -2.0])
    out = norm(data, update=True)
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(out.std(0), 1.0, atol=2e-2)
    far = norm(np.array([[1e3, norm.rms.mean[1] + 2 * np.sqrt(norm.rms.var[1])]]))
    np.testing.assert_allclose(far, [[3.0, 2.0]], atol=1e-5)
    frozen = norm.state_dict()
    norm(np.full((5, 2), 50.0))  # update=False: statistics do not move
    np.testing.assert_array_equal(norm.state_dict()["mean"], frozen["mean"])


def test_reward_scaler_uses_std_of_discounted_return():
    gamma, num_envs, steps = 0.9, 2, 60
    scaler = RewardScaler(num_envs, gamma)
    rewards = np.random.standard_normal((steps, num_envs)) + 1.0
    ended = np.random.random_sample((steps, num_envs)) < 0.1
    returns, seen = np.zeros(num_envs), []
    for t in range(steps):
        out = scaler(rewards[t], ended[t])
        returns = gamma * returns + rewards[t]  # the return of the step, then reset at an episode end
        seen.extend(returns)
        returns[ended[t]] = 0.0
        _, var = _with_prior(np.array(seen))
        np.testing.assert_allclose(out, rewards[t] / np.sqrt(var + 1e-8), rtol=1e-5)
    # the std is of the discounted return, not of the raw reward
    assert abs(np.sqrt(scaler.rms.var) - rewards.std()) > 0.2
    clip_scaler = RewardScaler(1, gamma, clip=0.5)
    assert clip_scaler(np.array([100.0]), np.array([False]))[0] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- replay buffer


def test_replay_buffer_wraps_around_and_round_trips():
    buf = ReplayBuffer(5, obs_dim=2, act_dim=1)

    def add(values):
        v = torch.tensor(values, dtype=torch.float32)
        buf.add(v[:, None].expand(-1, 2), v[:, None], v, v[:, None].expand(-1, 2) + 0.5, (v % 2 == 0).float())

    add([0, 1])
    assert (buf.size, buf.pos) == (2, 2)
    assert set(buf.sample(200).rewards.tolist()) == {0.0, 1.0}  # only filled rows are sampled
    add([2, 3, 4, 5, 6])
    assert (buf.size, buf.pos) == (5, 2)
    torch.testing.assert_close(buf.rewards, torch.tensor([5.0, 6.0, 2.0, 3.0, 4.0]))  # oldest overwritten
    torch.testing.assert_close(buf.next_obs[:, 0], buf.rewards + 0.5)
    torch.testing.assert_close(buf.terminated, torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0]))

    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in buf.state_dict().items()}
    other = ReplayBuffer(5, obs_dim=2, act_dim=1)
    other.load_state_dict(state)
    assert (other.size, other.pos) == (5, 2)
    for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
        assert torch.equal(getattr(other, name), getattr(buf, name))
    torch.manual_seed(1)
    a = buf.sample(16)
    torch.manual_seed(1)
    b = other.sample(16)
    assert torch.equal(a.obs, b.obs) and torch.equal(a.rewards, b.rewards)
    # both continue identically: the next add overwrites the same slot
    add([7])
    other.add(
        torch.full((1, 2), 7.0),
        torch.full((1, 1), 7.0),
        torch.tensor([7.0]),
        torch.full((1, 2), 7.5),
        torch.tensor([0.0]),
    )
    assert torch.equal(buf.rewards, other.rewards) and buf.rewards[2].item() == 7.0
