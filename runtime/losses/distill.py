"""``distill_loss``: the token-level distillation loss on logits, one entry point.

Dispatches to the fused Triton kernels (``kdlang.runtime.kernels``) for CUDA tensors and
to the torch reference (``reference.py``) elsewhere; both compute the same function.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from collections.abc import Mapping

import torch

from . import conventions
from .reference import DIVERGENCES

IGNORE = -100
"""The label of a position that counts for nothing (the training batch's, the default
``ignore_index``)."""
REDUCTIONS = ("token_mean", "sum", "none", "sequence_mean", "batchmean", "topk_entries")
BACKENDS = ("auto", "torch", "triton")
TOPK_MASS = ("renormalize", "keep", "uniform")
"""What a top-k teacher does with the mass outside its k ids (``distill_loss``)."""
REST_FLOOR = 1e-4
"""Least student mass outside a top-k teacher's ids under ``topk_mass="uniform"``, in value
(the gradient flows through the unfloored rest). fp32 resolves 1 − Σ_k p_S to about 6·10⁻⁸,
so the rest's gradient, scaled by 1 / rest, stays within about 10⁻³ of its exact value."""

# Each reduction as one the kernels compute (token_mean, sum, none) and what follows it.
_BASE_REDUCTION = {
    "token_mean": "token_mean",
    "sum": "sum",
    "none": "none",
    "sequence_mean": "none",
    "batchmean": "sum",
    "topk_entries": "token_mean",
}


@functools.cache
def triton_available() -> bool:
    """Whether triton can be imported (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_kind(
    kind: str, options: Mapping[str, float] | None = None, *, sparse: bool
) -> tuple[str, float]:
    """Validate a divergence name and its options; return (kind to evaluate, weight).

    ``kind`` is a key of the registry (``reference.DIVERGENCES``, by the loss's
    ``kernel_mode``) and ``options`` the keyword its formula takes, if any (``beta`` for
    jsd, ``alpha`` for the skews; the formula's default when absent): within [0, 1], it is
    the kernels' ``weight`` (0 for a divergence without option, which ignores it). At an
    option value the registry lists as a limit the divergence is evaluated as the one it
    equals there: jsd β=0 → forward_kl, jsd β=1 → reverse_kl, skew_kl α=0 → forward_kl,
    skew_rkl α=0 → reverse_kl. With a sparse (top-k) teacher, a divergence that is
    infinite wherever the teacher has no mass is refused.
    """
    entry = DIVERGENCES.get(kind)
    if entry is None:
        raise ValueError(f"unknown divergence {kind!r}; expected one of {sorted(DIVERGENCES)}")
    options = dict(options or {})
    unknown = sorted(set(options) - {entry.option})
    if unknown:
        takes = f"only {entry.option!r}" if entry.option else "no option"
        raise ValueError(f"{kind} takes {takes}, got {unknown}")
    weight = 0.0
    if entry.option is not None:
        value = float(options.get(entry.option, entry.default))  # type: ignore[arg-type]
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{kind} needs 0 <= {entry.option} <= 1, got {value:g}")
        if value in entry.limits:
            return resolve_kind(entry.limits[value], sparse=sparse)
        weight = value
    if sparse and not entry.topk_finite:
        raise ValueError(
            "this divergence is infinite against a top-k teacher (the student has mass where "
            f"the teacher has none): use {_finite_against_topk()}"
        )
    return kind, weight


def _finite_against_topk() -> str:
    """The registry's divergences that a top-k teacher keeps finite, in words."""
    names = []
    for name, entry in DIVERGENCES.items():
        if not entry.topk_finite:
            continue
        refused = [
            f"{value:g}"
            for value, other in entry.limits.items()
            if not DIVERGENCES[other].topk_finite
        ]
        names.append(f"{name} with {entry.option} != {', '.join(refused)}" if refused else name)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def evaluate(kind: str, weight: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-position divergence of log-probs ``a`` (student) and ``b`` (teacher); ``weight``
    is the divergence's option, if it takes one."""
    entry = DIVERGENCES[kind]
    return entry(a, b) if entry.option is None else entry(a, b, **{entry.option: weight})


def sparse_teacher_logprobs(ids, logprobs, width: int, temperature: float, dtype) -> torch.Tensor:
    """Dense ``[..., V]`` teacher log-probs from top-k: log_softmax(logprobs/T) at the ids,
    −inf elsewhere."""
    lp = torch.log_softmax(logprobs.detach().to(dtype) / temperature, dim=-1)
    dense = torch.full((*ids.shape[:-1], width), -math.inf, dtype=dtype, device=lp.device)
    return dense.scatter(-1, ids.long(), lp)


def topk_rest_logprobs(ids, logprobs, temperature: float, dtype) -> tuple[torch.Tensor, ...]:
    """The teacher of a top-k cache as k + 1 outcomes, its k ids and "the rest", at ``T``:
    with M = min(Σ_k e^{ℓ_k}, 1) the captured mass, the k + 1 probabilities
    (e^{ℓ_1}, …, e^{ℓ_k}, 1 − M) raised to 1/T and normalized. Returns (log-probs of the k ids
    ``[..., k]``, log-prob of the rest ``[..., 1]``); at T = 1 they are ℓ_k and log(1 − M)."""
    lp = logprobs.detach().to(dtype)
    mass = torch.logsumexp(lp, dim=-1, keepdim=True).exp().clamp(max=1.0)
    log_rest = torch.log1p(-mass)
    scaled = torch.cat([lp, log_rest], dim=-1) / temperature
    both = scaled - torch.logsumexp(scaled, dim=-1, keepdim=True)
    return both[..., :-1], both[..., -1:]


def _topk_mass_row_loss(student, ids, logprobs, kind, weight, temperature, topk_mass, dtype):
    """Per-position divergence against a top-k teacher under ``keep`` or ``uniform``, over the
    k + 1 outcomes (the k ids, the rest): the student's rest is 1 − Σ_k p_S (under ``uniform``
    floored at ``REST_FLOOR`` in value), the teacher's is 0 (``keep``) or its missing mass
    (``uniform``)."""
    a_all = torch.log_softmax(student.to(dtype) / temperature, dim=-1)
    a_k = a_all.gather(-1, ids.long())
    rest = 1.0 - a_k.exp().sum(-1, keepdim=True)
    b_k, b_rest = topk_rest_logprobs(ids, logprobs, temperature, dtype)
    if topk_mass == "keep":  # the teacher's rest is 0: the student's enters linearly, unfloored
        b_rest = torch.full_like(b_rest, -math.inf)
        rest = rest.clamp(min=0.0)
    else:
        rest = rest + (rest.clamp(min=REST_FLOOR) - rest).detach()
    a = torch.cat([a_k, rest.log()], dim=-1)
    return evaluate(kind, weight, a, torch.cat([b_k, b_rest], dim=-1))


def torch_row_loss(
    student,
    teacher,
    teacher_topk,
    kind,
    weight,
    temperature,
    labels,
    ignore_index,
    topk_mass="renormalize",
    infinite_logits="keep",
) -> torch.Tensor:
    """Per-position loss on the torch path (fp32, or fp64 for fp64 inputs), 0 where ignored."""
    dtype = torch.float64 if student.dtype == torch.float64 else torch.float32
    if infinite_logits == "zero" and teacher_topk is not None and topk_mass != "renormalize":
        teacher_topk = conventions.zero_infinite_topk(student, *teacher_topk)
    if teacher_topk is not None and topk_mass != "renormalize":
        per = _topk_mass_row_loss(
            student, *teacher_topk, kind, weight, temperature, topk_mass, dtype
        )
        if labels is not None:
            per = torch.where(labels != ignore_index, per, torch.zeros_like(per))
        return per
    a = torch.log_softmax(student.to(dtype) / temperature, dim=-1)
    if teacher_topk is None:
        b = torch.log_softmax(teacher.detach().to(dtype) / temperature, dim=-1)
    else:
        b = sparse_teacher_logprobs(*teacher_topk, student.shape[-1], temperature, dtype)
    if infinite_logits == "zero":
        b = conventions.zero_infinite(student, b)
    per = evaluate(kind, weight, a, b)
    if labels is not None:
        per = torch.where(labels != ignore_index, per, torch.zeros_like(per))
    return per


def reduce_loss(per: torch.Tensor, labels, ignore_index: int, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per
    total = per.sum()
    if reduction == "sum":
        return total
    if labels is None:
        return total / max(per.numel(), 1)
    return total / (labels != ignore_index).sum().clamp(min=1).to(total.dtype)


def finish_reduction(value, reduction: str, labels, ignore_index: int, lead_shape, k: int):
    """The loss under ``reduction`` from ``value``, computed under its base reduction
    (``_BASE_REDUCTION``): topk_entries divides the token mean by k, batchmean the sum by the
    first dimension, sequence_mean averages the per-position values of each sequence (the last
    leading dim) over its counted positions, then over the sequences that have one."""
    if reduction == "topk_entries":
        return value / k
    if reduction == "batchmean":
        return value / max(lead_shape[0] if len(lead_shape) else 1, 1)
    if reduction != "sequence_mean":
        return value
    per = value.reshape(-1, lead_shape[-1]) if len(lead_shape) else value.reshape(1, 1)
    if labels is None:
        counted = torch.ones_like(per, dtype=torch.bool)
    else:
        counted = (labels != ignore_index).reshape(per.shape)
    lengths = counted.sum(-1).to(per.dtype)
    sequences = (lengths > 0).sum().clamp(min=1).to(per.dtype)
    return (per.sum(-1) / lengths.clamp(min=1)).sum() / sequences


def _check(student, teacher, teacher_topk, temperature, labels, reduction, backend):
    if (teacher is None) == (teacher_topk is None):
        raise ValueError("give exactly one of teacher_logits and teacher_topk")
    if student.dim() < 1 or student.shape[-1] < 1:
        raise ValueError(f"student logits must be [..., V] with V >= 1, got {tuple(student.shape)}")
    if teacher is not None and teacher.shape != student.shape:
        raise ValueError(
            f"teacher logits {tuple(teacher.shape)} differ from student {tuple(student.shape)}"
        )
    if teacher_topk is not None:
        ids, logprobs = teacher_topk
        if ids.shape != logprobs.shape or ids.shape[:-1] != student.shape[:-1]:
            raise ValueError(
                f"teacher_topk ids {tuple(ids.shape)} and logprobs {tuple(logprobs.shape)} "
                f"must both be [..., k] over the student's positions {tuple(student.shape[:-1])}"
            )
        if ids.dtype not in (torch.int32, torch.int64) or ids.shape[-1] < 1:
            raise ValueError("teacher_topk ids must be int32/int64 with k >= 1")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    if labels is not None and labels.shape != student.shape[:-1]:
        raise ValueError(f"labels {tuple(labels.shape)} must be {tuple(student.shape[:-1])}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if reduction == "topk_entries" and teacher_topk is None:
        raise ValueError(
            "reduction='topk_entries' counts a top-k teacher's entries: give teacher_topk"
        )


def use_triton(backend: str, tensor: torch.Tensor) -> bool:
    """Resolve ``backend``: auto picks triton for CUDA tensors when triton is importable."""
    if backend == "torch":
        return False
    if backend == "auto":
        return tensor.is_cuda and tensor.dtype != torch.float64 and triton_available()
    if not triton_available():
        raise ValueError("backend='triton' needs triton installed")
    if not tensor.is_cuda and not _interpreting():
        raise ValueError("backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1)")
    if tensor.dtype == torch.float64:
        raise ValueError("the triton kernels take bf16, fp16 or fp32; use backend='torch'")
    return True


def distill_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    kind: str = "forward_kl",
    *,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    ignore_index: int = IGNORE,
    reduction: str = "token_mean",
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    topk_mass: str = "renormalize",
    backend: str = "auto",
    infinite_logits: str = "keep",
    position_weights: torch.Tensor | None = None,
    **options: float,
) -> torch.Tensor:
    """Token-level distillation loss between student and teacher distributions.

    With p_S = softmax(z_S / T) and p_T = softmax(z_T / T) at every position, ``kind`` is
    one of ``forward_kl`` KL(p_T‖p_S), ``reverse_kl`` KL(p_S‖p_T), ``jsd`` (generalized,
    β·KL(p_T‖m) + (1−β)·KL(p_S‖m), m = β p_T + (1−β) p_S; β=0 is forward KL, β=1 reverse
    KL), ``tvd`` ½Σ|p_T − p_S|, ``skew_kl`` KL(p_T‖α p_T + (1−α) p_S) and ``skew_rkl``
    KL(p_S‖α p_S + (1−α) p_T) — the registry ``reference.DIVERGENCES``. ``options``: the
    divergence's own (``beta=`` for jsd, ``alpha=`` for the skews; the formula's default,
    0.5 and 0.1, when not given). The value is the divergence of the softened distributions,
    not multiplied by T². The teacher is a constant (no gradient reaches it).

    Shapes: ``student_logits`` and ``teacher_logits`` ``[..., V]`` (any leading dims, any
    strides; bf16/fp16/fp32, or fp64 on the torch backend), ``labels`` ``[...]``: positions
    whose label equals ``ignore_index`` count for nothing. ``reduction`` (the default
    ``token_mean``), with S the sum of the per-position values over counted positions:

    - ``token_mean``: S / (number of counted positions); 0 with gradient 0 when none is;
    - ``sum``: S;
    - ``batchmean``: S / (size of the first dim) — the sequences of ``[B, L, V]`` (torch's
      ``kl_div(reduction="batchmean")``, TRL's GKD without labels);
    - ``sequence_mean``: each sequence's (the last leading dim's) sum over its counted
      positions divided by their number, averaged over the sequences with at least one;
    - ``topk_entries``: S / (counted positions × k), a top-k teacher only (axolotl's
      denominator, which counts kept entries);
    - ``none``: ``[...]``, 0 at ignored positions.

    The loss is fp32 (fp64 for fp64 inputs).

    ``teacher_topk=(ids, logprobs)``, both ``[..., k]``, replaces ``teacher_logits`` with a
    cached sparse teacher: the cached values are taken as the teacher's logits restricted
    to its k (distinct) ids, so p_T = softmax(logprobs / T) over those ids and 0 elsewhere
    (at T = 1 this renormalizes exp(logprobs) over the k ids). The student keeps its full
    vocabulary and the divergence is exact over it; ``reverse_kl``, jsd with β = 1 and
    skew_rkl with α = 0 are infinite there and raise ``ValueError``.

    ``topk_mass``: what that teacher does with the mass M = Σ_k e^{logprobs} < 1 its k ids
    hold (taken as log-probs at temperature 1). ``renormalize`` (the default): as above.
    Otherwise the teacher is k + 1 outcomes, the k ids and "the rest" with 1 − M, raised to 1/T
    and normalized together (at T = 1: e^{logprobs} at the ids, 1 − M for the rest); the
    student is its own k + 1 outcomes, p_S at the ids and the rest 1 − Σ_k p_S (floored at
    ``REST_FLOOR``). ``keep``: the teacher's rest gets no probability — at T = 1 its raw top-k
    probabilities, mass < 1 (axolotl's ``kd_normalize_topk = false``; the form described for
    EasyDistill).
    ``uniform``: the rest keeps its mass — the divergence over the k + 1 outcomes, which equals
    the one over the vocabulary with both rests spread uniformly over the other V − k ids
    (DistillKit's ``missing_probability_handling = symmetric_uniform``); ``teacher_ce``, a
    cross-entropy rather than a divergence, is taken over the k + 1 outcomes.

    ``backend``: ``auto`` (Triton for CUDA tensors when triton is importable, else torch),
    ``torch`` or ``triton``.

    ``infinite_logits``: ``keep`` (the default) takes a student logit of −inf as it is: where
    the teacher has mass on such an entry, a divergence that weighs log p_S by p_T
    (``forward_kl``, ``teacher_ce``) is infinite. ``zero`` drops the teacher's mass on those
    entries from the sum (not renormalized), as torchtune's ``ForwardKLLoss`` masks the
    products p_T·log p_S there; the torch backend only (the kernels compute no such mask).

    ``position_weights`` ``[...]`` (with ``reduction="sum"``): Σ of weight × value over the
    counted positions instead of the plain sum (``sequence_mean`` of a step: 1 / the count of
    the position's sequence).

    Example::

        loss = distill_loss(student_logits, teacher_logits, "jsd", beta=0.5,
                            temperature=2.0, labels=labels)
        loss.backward()
    """
    _check(student_logits, teacher_logits, teacher_topk, temperature, labels, reduction, backend)
    if topk_mass not in TOPK_MASS:
        raise ValueError(f"topk_mass must be one of {TOPK_MASS}, got {topk_mass!r}")
    if topk_mass != "renormalize" and teacher_topk is None:
        raise ValueError("topk_mass acts on a top-k teacher only: give teacher_topk")
    kind, weight = resolve_kind(kind, options, sparse=teacher_topk is not None)
    base = _BASE_REDUCTION[reduction]
    conventions.check(infinite_logits, position_weights, reduction, backend, student_logits)
    if position_weights is not None:
        base = "none"
    if use_triton(backend, student_logits) and infinite_logits == "keep":
        from ..kernels import entries
        from ..kernels.divergence import DivergenceSpec, divergence

        spec = DivergenceSpec(entries.MODES[kind], float(temperature), weight, ignore_index, base)
        if teacher_topk is None:
            value = divergence(student_logits, teacher_logits, spec, labels)
        else:
            from ..kernels.topk import MASS_MODES, topk_divergence

            value = topk_divergence(
                student_logits,
                *teacher_topk,
                spec,
                labels,
                mass=MASS_MODES[topk_mass],
                rest_floor=REST_FLOOR,
            )
    else:
        per = torch_row_loss(
            student_logits,
            teacher_logits,
            teacher_topk,
            kind,
            weight,
            temperature,
            labels,
            ignore_index,
            topk_mass,
            infinite_logits,
        )
        value = reduce_loss(per, labels, ignore_index, base)
    if position_weights is not None:
        return (value * position_weights.to(value.dtype)).sum()
    k = teacher_topk[0].shape[-1] if teacher_topk is not None else 1
    return finish_reduction(value, reduction, labels, ignore_index, student_logits.shape[:-1], k)
