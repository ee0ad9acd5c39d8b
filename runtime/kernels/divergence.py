"""Fused divergence on raw logits: the launcher and the autograd Function.

``divergence(student_logits, teacher_logits, spec)`` computes, in one launch, the
per-position divergence of ``softmax(z_S/T)`` and ``softmax(z_T/T)`` and — when the
student needs a gradient and the loss is reduced to a scalar — the gradient
``d loss / d z_S`` itself, in the student's dtype. Backward then only multiplies it by
``grad_output`` (a launch that returns at once when that is 1). With
``reduction="none"`` the gradient depends on a per-position ``grad_output``, so backward
recomputes it in a second launch.

Inputs are bf16, fp16 or fp32 of shape ``[..., V]`` with any row strides (see
``layout.as_rows``); statistics and sums are fp32. The teacher is a constant: it gets no
gradient. Positions whose label is ``ignore_index`` give loss 0 and gradient 0. No step
reads a value back to the host.

Example::

    spec = DivergenceSpec(mode=entries.MODES["forward_kl"], temperature=2.0, weight=0.0)
    loss = divergence(z_s, z_t, spec)          # token mean over all positions
    loss.backward()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from . import entries
from .divergence_kernel import COUNTER_STRIDE, PART_FIELDS, divergence_kernel
from .fused_linear import GRADIENT_USED
from .layout import Rows, as_rows, interpreting
from .scale import scale_inplace


@dataclass(frozen=True)
class DivergenceSpec:
    """What to compute: ``mode`` from ``entries.MODES``; ``weight``: the divergence's option
    (β of jsd, α of the skews), ignored by the modes without one (``losses.distill.resolve_kind``
    gives both)."""

    mode: int
    temperature: float
    weight: float
    ignore_index: int = -100
    reduction: str = "token_mean"


# (widest row, block, segment, warps): rows up to that width run with these. A segment of
# 0 means one program per row. The wide-row entry is the fastest of the H100 sweeps at
# V = 128,256 (benchmarks/results/kernels_h100_tune.json): forward_kl 2.94 ms; the H200
# sweeps (benchmarks/results/kernels_h200_tune.json) pick it again for forward_kl, reverse_kl
# and tvd (2.685, 3.445, 3.989 ms at V = 128,256).
CONFIGS: tuple[tuple[int, int, int, int], ...] = (
    (4096, 1024, 0, 4),
    (16384, 2048, 0, 8),
    (65536, 2048, 8192, 4),
    (2**62, 2048, 8192, 4),
)
WHOLE_ROW_MODES = frozenset({entries.JSD})
"""Modes whose wide rows run one program per row: jsd's extra log per entry makes it
arithmetic-bound, and the barrier's wait then costs more than the parallelism gives (H200,
V = 128,256: 6.046 ms against 6.754 with segments of 8,192; V = 32,000: 1.577 against 1.681)."""


def kernel_config(width: int, mode: int | None = None) -> tuple[int, int, int]:
    """(block, segment, num_warps) for rows of ``width`` entries (of divergence ``mode``)."""
    for widest, block, segment, warps in CONFIGS:
        if width <= widest:
            block = max(16, min(block, triton.next_power_of_2(width)))
            if mode in WHOLE_ROW_MODES:
                segment = 0
            return block, segment or width, warps
    raise AssertionError("unreachable")


def launch_divergence(
    student: Rows,
    teacher: Rows,
    labels: torch.Tensor | None,
    grad: torch.Tensor | None,
    scale: torch.Tensor,
    scale_stride: int,
    spec: DivergenceSpec,
    *,
    block: int | None = None,
    segment: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Run the kernel over all rows; return the fp32 per-row divergence ``[n_rows]``.

    ``grad`` (contiguous ``[n_rows, V]``; it may be the contiguous student itself)
    receives ``scale[row·scale_stride] · d D_row / d z_S`` when given. ``block``,
    ``segment`` and ``num_warps`` override the tuned configuration (tests, tuning).
    """
    n_rows, width = student.n_rows, student.tensor.shape[-1]
    device = student.tensor.device
    if n_rows == 0:
        return torch.zeros(0, dtype=torch.float32, device=device)
    tuned_block, tuned_segment, tuned_warps = kernel_config(width, spec.mode)
    block = block or tuned_block
    segment = min(segment or (width if interpreting() else tuned_segment), width)
    n_seg = triton.cdiv(width, segment)
    if interpreting() and n_seg > 1:
        raise ValueError("the interpreter runs one program per row (segment >= V)")
    part = torch.empty((n_rows, n_seg, PART_FIELDS), dtype=torch.float32, device=device)
    count = torch.zeros(n_rows * COUNTER_STRIDE, dtype=torch.int32, device=device)
    divergence_kernel[(n_rows * n_seg,)](
        student.tensor,
        teacher.tensor,
        grad if grad is not None else scale,
        part,
        count,
        labels if labels is not None else scale,
        scale,
        width,
        student.inner,
        *student.strides,
        *teacher.strides,
        scale_stride,
        1.0 / spec.temperature,
        float(spec.weight),
        int(spec.ignore_index),
        segment,
        n_seg,
        MODE=spec.mode,
        HAS_LABELS=labels is not None,
        WRITE_GRAD=grad is not None,
        BLOCK=block,
        SEG_POW2=max(2, triton.next_power_of_2(n_seg)),
        num_warps=num_warps or tuned_warps,
    )
    return part[:, :, 4].sum(-1)


def counted_positions(labels: torch.Tensor | None, n_rows: int, ignore_index: int, device):
    """Number of counted positions as a device tensor (no host synchronization)."""
    if labels is None:
        return torch.full((), n_rows, dtype=torch.float32, device=device)
    return (labels != ignore_index).sum().to(torch.float32)


def reduce_rows(row_loss: torch.Tensor, count: torch.Tensor, reduction: str, lead_shape):
    if reduction == "none":
        return row_loss.view(lead_shape)
    total = row_loss.sum()
    if reduction == "sum":
        return total
    return total / count.clamp(min=1.0)


class DivergenceFunction(torch.autograd.Function):
    """Autograd wrapper: gradient written by the forward launch, scaled in backward."""

    @staticmethod
    def forward(ctx, student, teacher, labels, spec: DivergenceSpec, options: dict):
        s_rows, t_rows = as_rows(student), as_rows(teacher.detach())
        n_rows, width = s_rows.n_rows, student.shape[-1]
        flat_labels = labels.reshape(-1) if labels is not None else None
        count = counted_positions(flat_labels, n_rows, spec.ignore_index, student.device)
        eager = ctx.needs_input_grad[0] and spec.reduction != "none"
        grad = None
        if eager:
            grad = torch.empty((n_rows, width), dtype=student.dtype, device=student.device)
        scale = (
            1.0 / count.clamp(min=1.0) if spec.reduction == "token_mean" else torch.ones_like(count)
        )
        row_loss = launch_divergence(
            s_rows, t_rows, flat_labels, grad, scale.reshape(1), 0, spec, **options
        )
        ctx.grad, ctx.shape, ctx.spec, ctx.options = grad, student.shape, spec, options
        ctx.eager = eager
        if ctx.needs_input_grad[0] and not eager:
            ctx.save_for_backward(student, teacher.detach(), flat_labels)
        return reduce_rows(row_loss, count, spec.reduction, student.shape[:-1])

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.eager:
            if ctx.grad is None:
                raise RuntimeError(GRADIENT_USED)
            grad, ctx.grad = ctx.grad, None
            scale_inplace(grad, grad_output.detach().to(torch.float32))
            return grad.view(ctx.shape), None, None, None, None
        student, teacher, labels = ctx.saved_tensors
        s_rows, t_rows = as_rows(student), as_rows(teacher)
        grad = torch.empty(
            (s_rows.n_rows, student.shape[-1]), dtype=student.dtype, device=student.device
        )
        row_scale = grad_output.detach().reshape(-1).to(torch.float32).contiguous()
        launch_divergence(s_rows, t_rows, labels, grad, row_scale, 1, ctx.spec, **ctx.options)
        return grad.view(ctx.shape), None, None, None, None


def divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    spec: DivergenceSpec,
    labels: torch.Tensor | None = None,
    **options,
) -> torch.Tensor:
    """Fused divergence (see the module docstring); ``options`` go to ``launch_divergence``."""
    return DivergenceFunction.apply(student_logits, teacher_logits, labels, spec, options)
