"""Torch reference of every token-level divergence, on log-probabilities, and their registry.

Each function takes the student log-probabilities ``a = log p_S`` and the teacher
log-probabilities ``b = log p_T`` (same shape ``[..., V]``, already softened by the
temperature) and returns the divergence of every position, shape ``[...]``:

- ``forward_kl``  KL(p_T ‖ p_S) = Σ p_T (b − a)
- ``reverse_kl``  KL(p_S ‖ p_T) = Σ p_S (a − b)
- ``jsd``         β·KL(p_T ‖ m) + (1−β)·KL(p_S ‖ m), m = β·p_T + (1−β)·p_S
- ``tvd``         ½ Σ |p_T − p_S|
- ``skew_kl``     KL(p_T ‖ α·p_T + (1−α)·p_S)
- ``skew_rkl``    KL(p_S ‖ α·p_S + (1−α)·p_T)
- ``teacher_ce``  −Σ p_T a = KL(p_T ‖ p_S) + H(p_T), the cross-entropy to the teacher

Terms whose weight is a zero probability count as zero (0·log 0 = 0), so ``−inf``
log-probabilities (a masked vocabulary) are exact, and their gradients are finite: every
``x − y`` that could be ``−inf − (−inf)`` is replaced by 0 *before* it is multiplied, so
autograd never sees ``0·inf``. A divergence that is infinite (mass of one distribution
where the other has none) is returned as ``inf``.

:data:`DIVERGENCES` is the runtime's one list of the divergences, keyed by the IR loss's
``kernel_mode`` (its DSL word): ``@divergence(...)`` registers a formula with the facts the
dispatch (``distill.resolve_kind``) reads of it — its one option (a keyword parameter of the
formula, the kernels' ``weight``), the option values where it becomes another divergence,
and whether it stays finite against a top-k teacher. The kernels' entry of the same name is
in ``kernels/entries.py``.

Example::

    a = torch.log_softmax(student_logits / T, -1)
    b = torch.log_softmax(teacher_logits / T, -1)
    per_token = forward_kl(a, b)          # shape [..]
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping

import torch

__all__ = [
    "DIVERGENCES",
    "Divergence",
    "forward_kl",
    "jsd",
    "reverse_kl",
    "skew_kl",
    "skew_rkl",
    "teacher_ce",
    "tvd",
]


class Divergence:
    """A registered divergence, called as its formula is (``fn(a, b, **options)``).

    ``option``: the formula's one keyword parameter beyond ``a`` and ``b`` (``beta``,
    ``alpha``), or ``None``; ``default`` its default. An option is a mixture weight within
    [0, 1], and the kernels take it as their ``weight``. ``limits``: option values at which
    the divergence equals another of the registry and is evaluated as that one (the kernel
    formula vanishes there). ``topk_finite``: whether it stays finite against a top-k
    teacher, which has no mass outside its ids while the student has some everywhere.
    """

    def __init__(
        self,
        formula: Callable[..., torch.Tensor],
        *,
        limits: Mapping[float, str] | None = None,
        topk_finite: bool = True,
    ):
        functools.update_wrapper(self, formula)
        options = list(inspect.signature(formula).parameters.values())[2:]
        if len(options) > 1:
            raise TypeError(f"{formula.__name__}: a divergence takes one option at most")
        if options and options[0].default is inspect.Parameter.empty:
            raise TypeError(f"{formula.__name__}: its option needs a default")
        self.formula = formula
        self.option: str | None = options[0].name if options else None
        self.default: float | None = options[0].default if options else None
        self.limits = dict(limits or {})
        self.topk_finite = topk_finite

    def __call__(self, a: torch.Tensor, b: torch.Tensor, **options: float) -> torch.Tensor:
        return self.formula(a, b, **options)


DIVERGENCES: dict[str, Divergence] = {}
"""Every divergence by its kernel mode (the DSL word of its loss), in definition order."""


def divergence(
    *, limits: Mapping[float, str] | None = None, topk_finite: bool = True
) -> Callable[[Callable[..., torch.Tensor]], Divergence]:
    """Register the decorated formula in :data:`DIVERGENCES` under its name."""

    def register(formula: Callable[..., torch.Tensor]) -> Divergence:
        entry = Divergence(formula, limits=limits, topk_finite=topk_finite)
        DIVERGENCES[formula.__name__] = entry
        return entry

    return register


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


@divergence()
def forward_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(p_T ‖ p_S) = Σ_v p_T,v (b_v − a_v)."""
    return _weighted_log_ratio(b.exp(), b, a)


@divergence(topk_finite=False)
def reverse_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(p_S ‖ p_T) = Σ_v p_S,v (a_v − b_v)."""
    return _weighted_log_ratio(a.exp(), a, b)


@divergence(limits={0.0: "forward_kl", 1.0: "reverse_kl"})
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


@divergence()
def tvd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Total variation distance ½ Σ_v |p_T,v − p_S,v|."""
    return 0.5 * (b.exp() - a.exp()).abs().sum(-1)


@divergence(limits={0.0: "forward_kl"})
def skew_kl(a: torch.Tensor, b: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """Skew KL = KL(p_T ‖ α·p_T + (1−α)·p_S); α = 0 is forward KL, α = 1 gives 0."""
    if alpha == 0:
        return forward_kl(a, b)
    q = b.exp()
    log_r = _log_mixture(b, alpha, a, q > 0)
    return _weighted_log_ratio(q, b, log_r)


@divergence(limits={0.0: "reverse_kl"})
def skew_rkl(a: torch.Tensor, b: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """Skew reverse KL = KL(p_S ‖ α·p_S + (1−α)·p_T); α = 0 is reverse KL, α = 1 gives 0."""
    if alpha == 0:
        return reverse_kl(a, b)
    p = a.exp()
    log_r = _log_mixture(a, alpha, b, p > 0)
    return _weighted_log_ratio(p, a, log_r)


@divergence()
def teacher_ce(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the teacher −Σ_v p_T,v a_v: forward KL plus the teacher's entropy
    (the same gradient in the student)."""
    q = b.exp()
    return -(q * torch.where(q > 0, a, torch.zeros_like(a))).sum(-1)
