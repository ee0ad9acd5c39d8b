"""Torch reference of every token-level divergence, on log-probabilities.

Each function takes the student log-probabilities ``a = log p_S`` and the teacher
log-probabilities ``b = log p_T`` (same shape ``[..., V]``, already softened by the
temperature) and returns the divergence of every position, shape ``[...]``:

- ``forward_kl``  KL(p_T ‖ p_S) = Σ p_T (b − a)
- ``reverse_kl``  KL(p_S ‖ p_T) = Σ p_S (a − b)
- ``jsd``         β·KL(p_T ‖ m) + (1−β)·KL(p_S ‖ m), m = β·p_T + (1−β)·p_S
- ``tvd``         ½ Σ |p_T − p_S|
- ``skew_kl``     KL(p_T ‖ α·p_T + (1−α)·p_S)
- ``skew_rkl``    KL(p_S ‖ α·p_S + (1−α)·p_T)

Terms whose weight is a zero probability count as zero (0·log 0 = 0), so ``−inf``
log-probabilities (a masked vocabulary) are exact, and their gradients are finite: every
``x − y`` that could be ``−inf − (−inf)`` is replaced by 0 *before* it is multiplied, so
autograd never sees ``0·inf``. A divergence that is infinite (mass of one distribution
where the other has none) is returned as ``inf``.

Example::

    a = torch.log_softmax(student_logits / T, -1)
    b = torch.log_softmax(teacher_logits / T, -1)
    per_token = forward_kl(a, b)          # shape [..]
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "DIVERGENCES",
    "forward_kl",
    "jsd",
    "reverse_kl",
    "skew_kl",
    "skew_rkl",
    "tvd",
]


def _weighted_log_ratio(weight: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ weight·(x − y) over the last dim, counting 0 where ``weight == 0``."""
    live = weight > 0
    return (weight * torch.where(live, x - y, torch.zeros_like(x))).sum(-1)


def _log_mixture(x: torch.Tensor, wx: float, y: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """log(wx·e^x + (1−wx)·e^y), evaluated only where ``live`` (0 elsewhere, finite grads)."""
    zero = torch.zeros_like(x)
    xs, ys = torch.where(live, x, zero), torch.where(live, y, zero)
    log_wx = math.log(wx) if wx > 0 else -math.inf
    log_wy = math.log1p(-wx) if wx < 1 else -math.inf
    return torch.logaddexp(xs + log_wx, ys + log_wy)


def forward_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(p_T ‖ p_S) = Σ_v p_T,v (b_v − a_v)."""
    return _weighted_log_ratio(b.exp(), b, a)


def reverse_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(p_S ‖ p_T) = Σ_v p_S,v (a_v − b_v)."""
    return _weighted_log_ratio(a.exp(), a, b)


def jsd(a: torch.Tensor, b: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Generalized JSD(β) = β·KL(p_T ‖ m) + (1−β)·KL(p_S ‖ m), m = β·p_T + (1−β)·p_S.

    β = 0 is forward KL and β = 1 reverse KL (the limits GKD and TRL use, not the value of
    the formula, which vanishes at both ends).
    """
    if beta == 0:
        return forward_kl(a, b)
    if beta == 1:
        return reverse_kl(a, b)
    p, q = a.exp(), b.exp()
    log_m = _log_mixture(b, beta, a, (p > 0) | (q > 0))
    return beta * _weighted_log_ratio(q, b, log_m) + (1 - beta) * _weighted_log_ratio(p, a, log_m)


def tvd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Total variation distance ½ Σ_v |p_T,v − p_S,v|."""
    return 0.5 * (b.exp() - a.exp()).abs().sum(-1)


def skew_kl(a: torch.Tensor, b: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """Skew KL = KL(p_T ‖ α·p_T + (1−α)·p_S); α = 0 is forward KL, α = 1 gives 0."""
    if alpha == 0:
        return forward_kl(a, b)
    q = b.exp()
    log_r = _log_mixture(b, alpha, a, q > 0)
    return _weighted_log_ratio(q, b, log_r)


def skew_rkl(a: torch.Tensor, b: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """Skew reverse KL = KL(p_S ‖ α·p_S + (1−α)·p_T); α = 0 is reverse KL, α = 1 gives 0."""
    if alpha == 0:
        return reverse_kl(a, b)
    p = a.exp()
    log_r = _log_mixture(a, alpha, b, p > 0)
    return _weighted_log_ratio(p, a, log_r)


# The DSL word is the key: `loss forward_kl` in a recipe resolves here.
DIVERGENCES: dict[str, Callable[..., torch.Tensor]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": jsd,
    "tvd": tvd,
    "skew_kl": skew_kl,
    "skew_rkl": skew_rkl,
}
