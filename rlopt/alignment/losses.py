"""Pure losses of the alignment half (spec alignment.md §0–§6), on per-token or per-sequence log-probs.

Conventions (spec §0.1): `L_θ(y|x)` is a masked *sum* of token log-probs over the completion; a
`*_ref` argument is the same quantity under the frozen reference; every loss is minimised and
returned per item (`[B]`) so trainers choose the reduction (batch mean everywhere in this suite).
log σ(z) is computed as −softplus(−z). Nothing here touches a model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# ----------------------------------------------------------------------------- token-level helpers


def token_logprobs(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> Tensor:
    """log π(label_t | ...) in fp32 at the sampling temperature (§0.2.1–2): [B, T, V], [B, T] -> [B, T]."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Σ_t m_t v_t per row: [B, T] -> [B] (padding and tokens after EOS carry m = 0)."""
    return (values * mask).sum(-1)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Σ m v / Σ m over the whole batch (a token mean), 0 when the mask is empty."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k1 = ℓ_θ − ℓ_ref (unbiased for KL(π‖ref) at samples of π; may be negative)."""
    return logp - ref_logp


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 = exp(d) − d − 1 with d = ℓ_ref − ℓ_θ (≥ 0, unbiased, low variance)."""
    d = ref_logp - logp
    return torch.expm1(d) - d


def sequence_ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """exp(L_θ − L_old) with the log-difference clamped to ±20 (§0.2.3)."""
    return torch.exp((logp - old_logp).clamp(-20.0, 20.0))


# ----------------------------------------------------------------------------- baselines (§1)


def sft_loss(token_logps: Tensor, completion_mask: Tensor) -> Tensor:
    """Completion-only token-mean NLL: −Σ m ℓ / Σ m (a scalar; §1.1)."""
    return -masked_mean(token_logps, completion_mask)


def reward_model_loss(
    chosen: Tensor, rejected: Tensor, margin: Tensor | None = None, center_coef: float | None = None
) -> Tensor:
    """Bradley–Terry: −log σ(r_w − r_l − μ) + c (r_w + r_l)^2, per pair (§1.2)."""
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    loss = F.softplus(-diff)
    if center_coef:
        loss = loss + center_coef * (chosen + rejected).square()
    return loss


def dpo_logits(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor) -> Tensor:
    """z = Δ_θ(y_w) − Δ_θ(y_l) with Δ_θ = L_θ − L_ref (§1.3)."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    loss_type: str = "sigmoid",
) -> Tensor:
    """DPO −log σ(β z) ("sigmoid") or IPO (z − 1/(2β))^2 ("ipo"), per pair (§1.3)."""
    z = dpo_logits(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    if loss_type == "sigmoid":
        return F.softplus(-beta * z)
    if loss_type == "ipo":
        return (z - 1.0 / (2.0 * beta)).square()
    raise ValueError(f"loss_type must be 'sigmoid' or 'ipo', got {loss_type!r}")


# ----------------------------------------------------------------------------- XPO (§4), VPO (§5), APO (§6)


def xpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    policy_on_ref_sample: Tensor,
    beta: float,
    alpha: float,
    loss_type: str = "sigmoid",
) -> Tensor:
    """DPO on the (policy, reference) pair + α L_θ(ỹ), ỹ the reference's sample (§4.2–4.3), per pair.

    The bonus is *added* with α > 0, so descent lowers the policy's likelihood of reference samples
    (optimism outside the reference's support). α = 0 is online DPO on the same pairs.
    """
    dpo = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, loss_type)
    return dpo + alpha * policy_on_ref_sample


def vpo_value_term(policy_calibration: Tensor, ref_calibration: Tensor, beta: float) -> Tensor:
    """β (L_θ(y_cal) − L_ref(y_cal)) per calibration sample: the calibrated −J*(r) of §5.3–5.4."""
    return beta * (policy_calibration - ref_calibration)


def vpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    policy_calibration: Tensor,
    ref_calibration: Tensor,
    beta: float,
    alpha: float,
    online: bool,
    loss_type: str = "sigmoid",
) -> Tensor:
    """L_DPO + s α β (L_θ(y_cal) − L_ref(y_cal)), s = +1 online (optimism), −1 offline (pessimism) (§5.3)."""
    sign = 1.0 if online else -1.0
    dpo = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, loss_type)
    return dpo + sign * alpha * vpo_value_term(policy_calibration, ref_calibration, beta)


def apo_reference_logps(current: Tensor, previous: Tensor, alpha: float) -> Tensor:
    """Unnormalised log π̂_t(y|x) = (1+α) L_{π_t}(y|x) − α L_{π_{t−1}}(y|x): APO's extrapolated reference (§6.2).

    log Z(x) cancels in the DPO loss, so the unnormalised value is exact there; α = 0 gives π_t.
    """
    return (1.0 + alpha) * current - alpha * previous
