"""Proximity terms shared by the suite: Gaussian log-densities and KL, the clipped surrogate,
q-logarithms (Tsallis), Polyak averaging. Pure functions on tensors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
LOG_2 = math.log(2.0)


def gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Diagonal Gaussian log-density summed over the last dim: [..., D] -> [...]."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - LOG_SQRT_2PI).sum(-1)


def gaussian_entropy(log_std: Tensor) -> Tensor:
    """Entropy of a diagonal Gaussian: [..., D] -> [...]."""
    return (log_std + 0.5 + LOG_SQRT_2PI).sum(-1)


def gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """Closed-form KL(p || q) between diagonal Gaussians, summed over the last dim: [..., D] -> [...]."""
    var_ratio = torch.exp(2.0 * (log_std_p - log_std_q))
    mean_term = (mean_p - mean_q).square() * torch.exp(-2.0 * log_std_q)
    return (log_std_q - log_std_p + 0.5 * (var_ratio + mean_term) - 0.5).sum(-1)


def log1m_tanh_sq(u: Tensor) -> Tensor:
    """log(1 - tanh(u)^2), computed stably as 2 (log 2 - u - softplus(-2u))."""
    return 2.0 * (LOG_2 - u - F.softplus(-2.0 * u))


def tanh_gaussian_log_prob_per_dim(u: Tensor, mean: Tensor, log_std: Tensor, log_scale: Tensor | float = 0.0) -> Tensor:
    """Per-dimension log-density of a_env = center + exp(log_scale) * tanh(u), u ~ N(mean, std): [..., D].

    Change of variables: log N(u_i) - log(scale_i (1 - tanh(u_i)^2)); the stable identity replaces
    CleanRL's +1e-6 inside the log, so the density is exact away from the bounds.
    """
    z = (u - mean) * torch.exp(-log_std)
    return -0.5 * z.square() - log_std - LOG_SQRT_2PI - log1m_tanh_sq(u) - log_scale


def tanh_gaussian_log_prob(u: Tensor, mean: Tensor, log_std: Tensor, action_scale: Tensor | float = 1.0) -> Tensor:
    """log pi(a_env) for a_env = center + scale * tanh(u), u ~ N(mean, std): [..., D] -> [...]."""
    log_scale = torch.log(torch.as_tensor(action_scale, dtype=u.dtype, device=u.device))
    return tanh_gaussian_log_prob_per_dim(u, mean, log_std, log_scale).sum(-1)


def log_q(x: Tensor, q: float) -> Tensor:
    """Tsallis q-logarithm ln_q x = (x^(1-q) - 1) / (1 - q); equals log x at q = 1."""
    if q == 1.0:
        return torch.log(x)
    return (x.pow(1.0 - q) - 1.0) / (1.0 - q)


def clipped_surrogate(ratio: Tensor, advantages: Tensor, clip_coef: float) -> Tensor:
    """PPO's pessimistic objective min(r A, clip(r, 1-eps, 1+eps) A), elementwise (to be maximised)."""
    return torch.minimum(ratio * advantages, ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef) * advantages)


def approx_kl(log_ratio: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL(old || new) from log(new/old) at old samples; always >= 0."""
    return (torch.expm1(log_ratio) - log_ratio).mean()


@torch.no_grad()
def polyak_update(target: list[Tensor], source: list[Tensor], tau: float) -> None:
    """target <- (1 - tau) target + tau source, in place (tau = 1 copies, tau = 0 keeps)."""
    torch._foreach_lerp_(target, source, tau)
