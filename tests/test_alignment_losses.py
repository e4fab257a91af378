"""Fidelity checks of the alignment losses (spec alignment.md §0, §1.1–1.3, §4.8, §5.7, §6.6): toy values,
closed-form gradients and the reductions between methods."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rlopt.alignment.losses import (
    apo_reference_logps,
    dpo_loss,
    kl_k1,
    kl_k3,
    masked_sum,
    reward_model_loss,
    sequence_ratio,
    sft_loss,
    token_logprobs,
    vpo_loss,
    xpo_loss,
)

# the spec's toy pair (§4.8.7): L_θ(y_w) = −3, L_ref(y_w) = −4, L_θ(y_l) = −5, L_ref(y_l) = −4.5, β = 0.1
TOY = dict(policy_chosen=-3.0, ref_chosen=-4.0, policy_rejected=-5.0, ref_rejected=-4.5)


def toy(**extra):
    return {k: torch.tensor([v]) for k, v in {**TOY, **extra}.items()}


def random_pairs(batch: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    names = ("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected")
    return {n: -5.0 * torch.rand(batch, generator=g, dtype=torch.float64) for n in names}


# ----------------------------------------------------------------------------- token level


def test_token_logprobs_is_fp32_log_softmax_at_temperature():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, dtype=torch.bfloat16)
    labels = torch.randint(0, 7, (2, 5))
    for temperature in (1.0, 0.7):
        got = token_logprobs(logits, labels, temperature)
        assert got.dtype == torch.float32
        expected = torch.log_softmax(logits.float() / temperature, -1).gather(-1, labels[..., None])[..., 0]
        torch.testing.assert_close(got, expected)
    assert not torch.allclose(token_logprobs(logits, labels, 0.7), token_logprobs(logits, labels, 1.0))


def test_masked_sums_ignore_padding_and_sft_is_a_token_mean():
    logps = torch.tensor([[-1.0, -2.0, -100.0], [-0.5, -100.0, -100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(masked_sum(logps, mask), torch.tensor([-3.0, -0.5]))
    assert sft_loss(logps, mask).item() == pytest.approx(3.5 / 3)  # (1 + 2 + 0.5) / 3 tokens, not per row


def test_kl_estimators():
    """k1 sums to the sequence log-ratio; k3 >= 0; both average to KL(π‖ref) under samples of π."""
    torch.manual_seed(1)
    p = torch.softmax(torch.randn(5, dtype=torch.float64), 0)
    q = torch.softmax(torch.randn(5, dtype=torch.float64), 0)
    exact = (p * (p / q).log()).sum()
    samples = torch.multinomial(p, 200_000, replacement=True)
    lp, lq = p.log()[samples], q.log()[samples]
    assert (kl_k3(lp, lq) >= 0).all()
    assert kl_k1(lp, lq).mean().item() == pytest.approx(exact.item(), abs=5e-3)
    assert kl_k3(lp, lq).mean().item() == pytest.approx(exact.item(), abs=5e-3)
    assert kl_k3(lp, lp).abs().max().item() == 0.0


def test_sequence_ratio_is_clamped():
    big = torch.tensor([500.0, -500.0, 0.3])
    ratio = sequence_ratio(big, torch.zeros(3))
    assert torch.isfinite(ratio).all()
    torch.testing.assert_close(ratio, torch.tensor([math.exp(20.0), math.exp(-20.0), math.exp(0.3)]))


# ----------------------------------------------------------------------------- baselines


def test_reward_model_loss():
    chosen, rejected = torch.tensor([1.0, -0.5]), torch.tensor([0.0, 0.5])
    expected = torch.nn.functional.softplus(-(chosen - rejected))
    torch.testing.assert_close(reward_model_loss(chosen, rejected), expected)
    margin = torch.tensor([0.5, 0.0])
    with_margin = torch.log1p(torch.exp(-(chosen - rejected - margin)))
    torch.testing.assert_close(reward_model_loss(chosen, rejected, margin), with_margin)
    centred = reward_model_loss(chosen, rejected, center_coef=0.01)
    torch.testing.assert_close(centred, expected + 0.01 * (chosen + rejected) ** 2)


def test_dpo_toy_value_and_closed_form_gradient():
    assert dpo_loss(**toy(), beta=0.1).item() == pytest.approx(0.620957, abs=1e-6)  # z = 1.5
    pairs = {k: v.requires_grad_() for k, v in random_pairs().items()}
    beta = 0.3
    dpo_loss(**pairs, beta=beta).sum().backward()
    z = (pairs["policy_chosen"] - pairs["ref_chosen"]) - (pairs["policy_rejected"] - pairs["ref_rejected"])
    expected = -beta * torch.sigmoid(-beta * z.detach())  # ∇_{L_θ(y_w)} = −β σ(−β z) = −∇_{L_θ(y_l)}
    torch.testing.assert_close(pairs["policy_chosen"].grad, expected)
    torch.testing.assert_close(pairs["policy_rejected"].grad, -expected)


def test_ipo_and_unknown_loss_type():
    z = 1.5
    assert dpo_loss(**toy(), beta=0.1, loss_type="ipo").item() == pytest.approx((z - 5.0) ** 2, rel=1e-6)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(**toy(), beta=0.1, loss_type="hinge")


def test_dpo_invariant_to_a_per_prompt_shift_of_the_reference():
    """Adding c(x) to both reference log-probs changes nothing (used by VPO calibration and APO)."""
    pairs = random_pairs()
    shift = torch.randn(6, dtype=torch.float64) * 10
    shifted = {**pairs, "ref_chosen": pairs["ref_chosen"] + shift, "ref_rejected": pairs["ref_rejected"] + shift}
    torch.testing.assert_close(dpo_loss(**shifted, beta=0.1), dpo_loss(**pairs, beta=0.1))


# ----------------------------------------------------------------------------- XPO


def test_xpo_toy_value():
    loss = xpo_loss(**toy(), policy_on_ref_sample=torch.tensor([-6.0]), beta=0.1, alpha=0.01)
    assert loss.item() == pytest.approx(0.560957, abs=1e-6)


def test_xpo_alpha_zero_is_dpo_and_bonus_gradient_is_alpha_over_batch():
    pairs = {k: v.requires_grad_() for k, v in random_pairs().items()}
    ref_sample = (-4.0 * torch.rand(6, dtype=torch.float64)).requires_grad_()
    zero = xpo_loss(**pairs, policy_on_ref_sample=ref_sample, beta=0.1, alpha=0.0)
    torch.testing.assert_close(zero, dpo_loss(**pairs, beta=0.1))
    alpha = 0.05
    xpo_loss(**pairs, policy_on_ref_sample=ref_sample, beta=0.1, alpha=alpha).mean().backward()
    torch.testing.assert_close(ref_sample.grad, torch.full((6,), alpha / 6, dtype=torch.float64))


def test_xpo_step_lowers_reference_sample_likelihood():
    """Sign test (§4.8.3): with the DPO term detached, one SGD step with α > 0 lowers L_θ(ỹ)."""
    torch.manual_seed(0)
    logits = torch.randn(4, 3, requires_grad=True)  # a toy policy: 4 positions over 3 tokens
    y_tilde = torch.tensor([0, 2, 1, 1])
    log_seq = lambda: torch.log_softmax(logits, -1)[torch.arange(4), y_tilde].sum()
    before = log_seq().item()
    pairs = {k: v.float() for k, v in random_pairs(1).items()}
    xpo_loss(**pairs, policy_on_ref_sample=log_seq().reshape(1), beta=0.1, alpha=0.1).mean().backward()
    with torch.no_grad():
        logits -= 0.5 * logits.grad
    assert log_seq().item() < before


# ----------------------------------------------------------------------------- VPO


def vpo_args(**extra):
    return {**toy(), "policy_calibration": torch.tensor([-6.0]), "ref_calibration": torch.tensor([-5.5]), **extra}


def test_vpo_toy_values():
    online = vpo_loss(**vpo_args(), beta=0.1, alpha=0.1, online=True)
    offline = vpo_loss(**vpo_args(), beta=0.1, alpha=0.1, online=False)
    assert online.item() == pytest.approx(0.615957, abs=1e-6)
    assert offline.item() == pytest.approx(0.625957, abs=1e-6)


def test_vpo_reductions_and_sign():
    pairs = {k: v.requires_grad_() for k, v in random_pairs().items()}
    cal = (-4.0 * torch.rand(6, dtype=torch.float64)).requires_grad_()
    cal_ref = -4.0 * torch.rand(6, dtype=torch.float64)
    args = dict(policy_calibration=cal, ref_calibration=cal_ref, beta=0.2)
    for online in (True, False):  # α = 0 is exactly DPO
        torch.testing.assert_close(vpo_loss(**pairs, **args, alpha=0.0, online=online), dpo_loss(**pairs, beta=0.2))

    def grads(online):
        for t in (*pairs.values(), cal):
            t.grad = None
        vpo_loss(**pairs, **args, alpha=0.5, online=online).mean().backward()
        return [t.grad.clone() for t in (*pairs.values(), cal)]

    on, off = grads(True), grads(False)
    for g_on, g_off in zip(on[:4], off[:4]):  # the DPO part is unchanged by the sign ...
        torch.testing.assert_close(g_on, g_off)
    torch.testing.assert_close(on[4], -off[4])  # ... and the value term's gradient flips
    torch.testing.assert_close(on[4], torch.full((6,), 0.5 * 0.2 / 6, dtype=torch.float64))


def test_online_vpo_with_reference_calibration_equals_xpo():
    """π_cal = π_ref on the same (policy, reference) pairs: VPO's gradient is XPO's with α_XPO = αβ (§5.7.3)."""
    pairs = {k: v.requires_grad_() for k, v in random_pairs().items()}
    ref_sample_policy = (-4.0 * torch.rand(6, dtype=torch.float64)).requires_grad_()
    ref_sample_ref = -4.0 * torch.rand(6, dtype=torch.float64)
    alpha, beta = 0.3, 0.1
    vpo = vpo_loss(
        **pairs,
        policy_calibration=ref_sample_policy,
        ref_calibration=ref_sample_ref,
        beta=beta,
        alpha=alpha,
        online=True,
    ).mean()
    vpo_grads = torch.autograd.grad(vpo, [*pairs.values(), ref_sample_policy])
    xpo = xpo_loss(**pairs, policy_on_ref_sample=ref_sample_policy, beta=beta, alpha=alpha * beta).mean()
    xpo_grads = torch.autograd.grad(xpo, [*pairs.values(), ref_sample_policy])
    for a, b in zip(vpo_grads, xpo_grads):
        torch.testing.assert_close(a, b)


def test_offline_vpo_with_chosen_calibration_is_an_nll_anchor():
    """π_cal = chosen responses: the value term's gradient w.r.t. L_θ(y_w) is −αβ/B (§5.7.4)."""
    pairs = {k: v.detach().clone() for k, v in random_pairs().items()}
    chosen = pairs["policy_chosen"].requires_grad_()
    alpha, beta = 0.4, 0.1
    with_value = vpo_loss(
        **pairs, policy_calibration=chosen, ref_calibration=pairs["ref_chosen"], beta=beta, alpha=alpha, online=False
    ).mean()
    (g_total,) = torch.autograd.grad(with_value, chosen)
    (g_dpo,) = torch.autograd.grad(dpo_loss(**pairs, beta=beta).mean(), chosen)
    torch.testing.assert_close(g_total - g_dpo, torch.full((6,), -alpha * beta / 6, dtype=torch.float64))


# ----------------------------------------------------------------------------- APO


def test_apo_reference_toy_value_and_reductions():
    assert apo_reference_logps(torch.tensor(-2.0), torch.tensor(-3.0), 0.3).item() == pytest.approx(-1.7)
    current, previous = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(apo_reference_logps(current, previous, 0.0), current)  # α = 0: iterative DPO
    torch.testing.assert_close(apo_reference_logps(current, current, 0.7), current)  # π_t = π_{t−1}: π̂ = π_t


def test_apo_unnormalised_reference_is_exact_for_dpo():
    """Toy 2-step model over a 3-token vocabulary: normalising π̂ = π_t (π_t/π_{t−1})^α over all 9 sequences
    gives Σ π̂ = 1, and DPO with the normalised or the unnormalised π̂ gives the same loss (§6.6.5)."""
    torch.manual_seed(0)
    seqs = list(itertools.product(range(3), repeat=2))

    def random_policy():
        first = torch.log_softmax(torch.randn(3, dtype=torch.float64), 0)
        second = torch.log_softmax(torch.randn(3, 3, dtype=torch.float64), -1)
        return torch.stack([first[a] + second[a, b] for a, b in seqs])

    current, previous, policy = random_policy(), random_policy(), random_policy()
    assert torch.logsumexp(current, 0).item() == pytest.approx(0.0, abs=1e-12)
    alpha = 0.3
    unnormalised = apo_reference_logps(current, previous, alpha)
    normalised = unnormalised - torch.logsumexp(unnormalised, 0)
    assert torch.exp(normalised).sum().item() == pytest.approx(1.0, abs=1e-12)
    assert abs(torch.logsumexp(unnormalised, 0).item()) > 1e-3  # the unnormalised one really is off
    win, lose = torch.tensor([0, 4, 7]), torch.tensor([8, 2, 3])  # three (chosen, rejected) sequence pairs
    loss = lambda ref: dpo_loss(policy[win], policy[lose], ref[win], ref[lose], beta=0.1)
    torch.testing.assert_close(loss(unnormalised), loss(normalised))
