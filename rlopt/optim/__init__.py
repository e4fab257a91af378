"""Optimization pieces shared by both halves of the suite."""

from rlopt.optim.flat_adam import FlatAdam, flatten_parameters
from rlopt.optim.proximity import (
    approx_kl,
    clipped_surrogate,
    gaussian_entropy,
    gaussian_kl,
    gaussian_log_prob,
    log1m_tanh_sq,
    log_q,
    polyak_update,
    tanh_gaussian_log_prob,
    tanh_gaussian_log_prob_per_dim,
)

__all__ = [
    "FlatAdam",
    "flatten_parameters",
    "approx_kl",
    "clipped_surrogate",
    "gaussian_entropy",
    "gaussian_kl",
    "gaussian_log_prob",
    "log1m_tanh_sq",
    "log_q",
    "polyak_update",
    "tanh_gaussian_log_prob",
    "tanh_gaussian_log_prob_per_dim",
]
