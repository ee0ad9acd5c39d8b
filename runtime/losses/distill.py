"""``distill_loss``: the token-level distillation loss on logits, one entry point.

Dispatches to the fused Triton kernels (``kdlang.runtime.kernels``) for CUDA tensors and
to the torch reference (``reference.py``) elsewhere; both compute the same function.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os

import torch

from .reference import DIVERGENCES

REDUCTIONS = ("token_mean", "sum", "none")
BACKENDS = ("auto", "torch", "triton")


@functools.cache
def triton_available() -> bool:
    """Whether triton can be imported (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_kind(kind: str, beta: float, alpha: float, *, sparse: bool) -> tuple[str, float]:
    """Validate a divergence name and its parameter; return (kind to evaluate, weight).

    The endpoints that coincide with another divergence are evaluated as that one:
    jsd β=0 → forward_kl, jsd β=1 → reverse_kl, skew_kl α=0 → forward_kl, skew_rkl α=0 →
    reverse_kl. ``weight`` is β for jsd, α for the skews. With a sparse (top-k) teacher,
    a divergence that is infinite wherever the teacher has no mass is refused.
    """
    if kind not in DIVERGENCES:
        raise ValueError(f"unknown divergence {kind!r}; expected one of {sorted(DIVERGENCES)}")
    weight = 0.5
    if kind == "jsd":
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"jsd needs 0 <= beta <= 1, got {beta}")
        kind, weight = {0.0: ("forward_kl", 0.5), 1.0: ("reverse_kl", 0.5)}.get(
            float(beta), ("jsd", float(beta))
        )
    elif kind in ("skew_kl", "skew_rkl"):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"{kind} needs 0 <= alpha <= 1, got {alpha}")
        if alpha == 0:
            kind = "forward_kl" if kind == "skew_kl" else "reverse_kl"
        else:
            weight = float(alpha)
    if sparse and kind == "reverse_kl":
        raise ValueError(
            "this divergence is infinite against a top-k teacher (the student has mass where "
            "the teacher has none): use forward_kl, jsd with beta < 1, tvd, skew_kl or "
            "skew_rkl with alpha > 0"
        )
    return kind, weight


def evaluate(kind: str, weight: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-position divergence of log-probs ``a`` (student) and ``b`` (teacher)."""
    fn = DIVERGENCES[kind]
    if kind == "jsd":
        return fn(a, b, beta=weight)
    if kind in ("skew_kl", "skew_rkl"):
        return fn(a, b, alpha=weight)
    return fn(a, b)


def sparse_teacher_logprobs(ids, logprobs, width: int, temperature: float, dtype) -> torch.Tensor:
    """Dense ``[..., V]`` teacher log-probs from top-k: log_softmax(logprobs/T) at the ids,
    −inf elsewhere."""
    lp = torch.log_softmax(logprobs.detach().to(dtype) / temperature, dim=-1)
    dense = torch.full((*ids.shape[:-1], width), -math.inf, dtype=dtype, device=lp.device)
    return dense.scatter(-1, ids.long(), lp)


def torch_row_loss(
    student, teacher, teacher_topk, kind, weight, temperature, labels, ignore_index
) -> torch.Tensor:
    """Per-position loss on the torch path (fp32, or fp64 for fp64 inputs), 0 where ignored."""
    dtype = torch.float64 if student.dtype == torch.float64 else torch.float32
    a = torch.log_softmax(student.to(dtype) / temperature, dim=-1)
    if teacher_topk is None:
        b = torch.log_softmax(teacher.detach().to(dtype) / temperature, dim=-1)
    else:
        b = sparse_teacher_logprobs(*teacher_topk, student.shape[-1], temperature, dtype)
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
    beta: float = 0.5,
    alpha: float = 0.1,
    labels: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "token_mean",
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Token-level distillation loss between student and teacher distributions.

    With p_S = softmax(z_S / T) and p_T = softmax(z_T / T) at every position, ``kind`` is
    one of ``forward_kl`` KL(p_T‖p_S), ``reverse_kl`` KL(p_S‖p_T), ``jsd`` (generalized,
    β·KL(p_T‖m) + (1−β)·KL(p_S‖m), m = β p_T + (1−β) p_S; β=0 is forward KL, β=1 reverse
    KL), ``tvd`` ½Σ|p_T − p_S|, ``skew_kl`` KL(p_T‖α p_T + (1−α) p_S) and ``skew_rkl``
    KL(p_S‖α p_S + (1−α) p_T). The value is the divergence of the softened distributions,
    not multiplied by T². The teacher is a constant (no gradient reaches it).

    Shapes: ``student_logits`` and ``teacher_logits`` ``[..., V]`` (any leading dims, any
    strides; bf16/fp16/fp32, or fp64 on the torch backend), ``labels`` ``[...]``: positions
    whose label equals ``ignore_index`` count for nothing. ``reduction``: ``token_mean``
    (sum over counted positions / their number; 0 with gradient 0 when none is counted),
    ``sum``, or ``none`` (``[...]``, 0 at ignored positions). The loss is fp32 (fp64 for
    fp64 inputs).

    ``teacher_topk=(ids, logprobs)``, both ``[..., k]``, replaces ``teacher_logits`` with a
    cached sparse teacher: the cached values are taken as the teacher's logits restricted
    to its k (distinct) ids, so p_T = softmax(logprobs / T) over those ids and 0 elsewhere
    (at T = 1 this renormalizes exp(logprobs) over the k ids). The student keeps its full
    vocabulary and the divergence is exact over it; ``reverse_kl``, jsd with β = 1 and
    skew_rkl with α = 0 are infinite there and raise ``ValueError``.

    ``backend``: ``auto`` (Triton for CUDA tensors when triton is importable, else torch),
    ``torch`` or ``triton``.

    Example::

        loss = distill_loss(student_logits, teacher_logits, "jsd", beta=0.5,
                            temperature=2.0, labels=labels)
        loss.backward()
    """
    _check(student_logits, teacher_logits, teacher_topk, temperature, labels, reduction, backend)
    kind, weight = resolve_kind(kind, beta, alpha, sparse=teacher_topk is not None)
    if use_triton(backend, student_logits):
        from ..kernels import terms
        from ..kernels.divergence import DivergenceSpec, divergence

        spec = DivergenceSpec(
            terms.MODES[kind], float(temperature), weight, ignore_index, reduction
        )
        if teacher_topk is None:
            return divergence(student_logits, teacher_logits, spec, labels)
        from ..kernels.topk import topk_divergence

        return topk_divergence(student_logits, *teacher_topk, spec, labels)
    per = torch_row_loss(
        student_logits,
        teacher_logits,
        teacher_topk,
        kind,
        weight,
        temperature,
        labels,
        ignore_index,
    )
    return reduce_loss(per, labels, ignore_index, reduction)
