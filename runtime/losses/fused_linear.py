"""``fused_linear_distill_loss``: the distillation loss from hidden states and lm_heads,
without ever holding the full ``[N, V]`` logits (see ``kernels/fused_linear.py``)."""

from __future__ import annotations

import torch

from . import conventions
from .distill import (
    _BASE_REDUCTION,
    REDUCTIONS,
    finish_reduction,
    resolve_kind,
    torch_row_loss,
    use_triton,
)


def _torch_evaluator(kind: str, weight: float, temperature: float, ignore_index: int):
    """Per-chunk loss and in-place gradient through autograd on the torch reference."""

    def evaluate(z_s, z_t, labels, scale, scale_stride, write_grad):
        dtype = torch.float64 if z_s.dtype == torch.float64 else torch.float32
        z = z_s.detach().to(dtype).requires_grad_(write_grad)
        with torch.enable_grad():
            per = torch_row_loss(z, z_t, None, kind, weight, temperature, labels, ignore_index)
            if write_grad:
                (grad,) = torch.autograd.grad((per * scale.to(dtype)).sum(), z)
                z_s.copy_(grad)
        return per.detach()

    return evaluate


def _triton_evaluator(kind: str, weight: float, temperature: float, ignore_index: int):
    """Per-chunk loss and in-place gradient through the fused divergence kernel."""
    from ..kernels import entries
    from ..kernels.divergence import DivergenceSpec, launch_divergence
    from ..kernels.layout import as_rows

    spec = DivergenceSpec(entries.MODES[kind], float(temperature), weight, ignore_index)

    def evaluate(z_s, z_t, labels, scale, scale_stride, write_grad):
        grad = z_s if write_grad else None
        return launch_divergence(
            as_rows(z_s), as_rows(z_t), labels, grad, scale.contiguous(), scale_stride, spec
        )

    return evaluate


def fused_linear_distill_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    kind: str = "forward_kl",
    *,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "token_mean",
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
    position_weights: torch.Tensor | None = None,
    **options: float,
) -> torch.Tensor:
    """``distill_loss(h_S W_Sᵀ + b_S, h_T W_Tᵀ + b_T, kind, ...)`` computed chunk by chunk.

    Shapes: ``student_hidden`` ``[..., H_S]``, ``teacher_hidden`` ``[..., H_T]`` (same
    leading dims), ``student_weight`` ``[V, H_S]``, ``teacher_weight`` ``[V, H_T]``, biases
    ``[V]``, ``labels`` ``[...]``. Gradients reach the student hidden states, weight and
    bias; the teacher is a constant. Same semantics, arguments (the divergence's
    ``options`` included) and return value as ``distill_loss`` (dense teacher only). Rows are processed ``chunk_size`` at a time
    (default: from V and the hidden widths, so the two logits chunks stay near 512 MiB);
    only those chunks, the student weight's gradient and the hidden states' gradient add
    to memory. ``position_weights`` ``[...]`` (with ``reduction="sum"``): the weighted sum
    over counted positions, as ``distill_loss`` takes it.

    Example::

        loss = fused_linear_distill_loss(h_s, lm_head_s.weight, h_t, lm_head_t.weight,
                                         "forward_kl", temperature=2.0, labels=labels)
        loss.backward()        # fills h_s.grad and lm_head_s.weight.grad
    """
    from ..kernels.fused_linear import FusedLinearDistillFunction, chunk_rows

    h_s, h_t = student_hidden.shape[-1], teacher_hidden.shape[-1]
    lead = student_hidden.shape[:-1]
    if teacher_hidden.shape[:-1] != lead:
        raise ValueError(
            f"teacher hidden {tuple(teacher_hidden.shape)} and student hidden "
            f"{tuple(student_hidden.shape)} must share their leading dims"
        )
    if student_weight.dim() != 2 or student_weight.shape[1] != h_s:
        raise ValueError(f"student_weight must be [V, {h_s}], got {tuple(student_weight.shape)}")
    width = student_weight.shape[0]
    if tuple(teacher_weight.shape) != (width, h_t):
        raise ValueError(
            f"teacher_weight must be [{width}, {h_t}], got {tuple(teacher_weight.shape)}"
        )
    for name, bias in (("student_bias", student_bias), ("teacher_bias", teacher_bias)):
        if bias is not None and tuple(bias.shape) != (width,):
            raise ValueError(f"{name} must be [{width}], got {tuple(bias.shape)}")
    if labels is not None and labels.shape != lead:
        raise ValueError(f"labels {tuple(labels.shape)} must be {tuple(lead)}")
    if reduction not in REDUCTIONS or reduction == "topk_entries":
        dense = [r for r in REDUCTIONS if r != "topk_entries"]
        raise ValueError(f"reduction must be one of {dense}, got {reduction!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    kind, weight = resolve_kind(kind, options, sparse=False)
    conventions.check("keep", position_weights, reduction, backend, student_hidden)
    base = "none" if position_weights is not None else _BASE_REDUCTION[reduction]

    xs = student_hidden.reshape(-1, h_s)
    xt = teacher_hidden.detach().reshape(-1, h_t)
    flat_labels = labels.reshape(-1) if labels is not None else None
    make = _triton_evaluator if use_triton(backend, xs) else _torch_evaluator
    evaluate = make(kind, weight, float(temperature), ignore_index)
    chunk = chunk_size or chunk_rows(xs.shape[0], width, max(h_s, h_t), xs.element_size())
    loss = FusedLinearDistillFunction.apply(
        xs,
        student_weight,
        xt,
        teacher_weight.detach(),
        student_bias,
        teacher_bias.detach() if teacher_bias is not None else None,
        flat_labels,
        evaluate,
        base,
        ignore_index,
        max(1, chunk),
    )
    if base == "none":
        loss = loss.view(lead)
    if position_weights is not None:
        return (loss * position_weights.to(loss.dtype)).sum()
    return finish_reduction(loss, reduction, labels, ignore_index, lead, 1)
