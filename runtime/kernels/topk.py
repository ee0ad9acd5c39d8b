"""Fused divergence against a cached top-k (sparse) teacher.

The teacher of a position is k (id, log-prob) pairs; its distribution is
``q = softmax(logprobs / T)`` over those ids and 0 elsewhere. The student is the full row
``p = softmax(z_S / T)``. The divergence is exact over the whole vocabulary: the k
teacher entries use ``entries.divergence_terms``; every other entry has q = 0, where
``ell = c_ell·p`` and ``pg = c_pg·p`` (``entries.outside_terms``), so with
``P_in = Σ_k p[id_k]`` the row needs only

    D = Σ_k ell_k + c_ell·(1 − P_in),      C = Σ_k pg_k + c_pg·(1 − P_in).

One program per position: (1) softmax statistics of the student row; (2) the
teacher's log-normalizer over its k values; (3) the k entries, gathering the student
logits at the ids; (4) when a gradient is written, ``p·(c_pg − C)/T·scale`` over the
whole row, then — after a barrier — the k ids overwritten with ``(pg − p·C)/T·scale``.
Ids must be distinct within a row.

``MASS`` (``MASS_MODES``, the loss's ``topk_mass``): 0 is the above. Otherwise the teacher
pass also sums Σ e^y (the captured mass M) and the rest 1 − M joins the normalizer at 1/T,
so the k entries' q sums to less than 1 (1: ``keep``, the outside entries as above, C counted
in full). 2 (``uniform``): the rest is one more entry, the student's p_rest = max(1 − P_in,
floor) against the teacher's rest, with ``ell`` and ``pg`` of ``divergence_terms``; the
outside ids share its ``pg`` in proportion to p (c_pg = pg_rest / p_rest for the row).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import entries
from .divergence import DivergenceSpec, counted_positions, reduce_rows
from .entries import divergence_terms, softmax_block_update
from .fused_linear import GRADIENT_USED
from .layout import Rows, as_rows
from .scale import scale_inplace

MASS_MODES = {"renormalize": 0, "keep": 1, "uniform": 2}
"""The kernel's ``MASS`` of every ``topk_mass`` (``losses.distill``)."""


@triton.jit
def topk_divergence_kernel(
    zs_ptr,
    ids_ptr,
    tlp_ptr,
    grad_ptr,
    loss_ptr,
    labels_ptr,
    scale_ptr,
    V,
    K,
    inner,
    zs_s_outer,
    zs_s_inner,
    zs_s_col,
    scale_stride,
    inv_t,
    weight,
    c_ell,
    c_pg,
    ignore_index,
    rest_floor,
    MODE: tl.constexpr,
    HAS_LABELS: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_K: tl.constexpr,
    MASS: tl.constexpr = 0,
):
    row = tl.program_id(0).to(tl.int64)
    zs_row = zs_ptr + (row // inner) * zs_s_outer + (row % inner) * zs_s_inner
    ids_row = ids_ptr + row * K
    tlp_row = tlp_ptr + row * K
    grad_row = grad_ptr + row * V
    lanes = tl.arange(0, BLOCK)
    klanes = tl.arange(0, BLOCK_K)
    n_blocks = tl.cdiv(V, BLOCK)

    if HAS_LABELS:  # noqa: SIM102 (constexpr test first: no label load is compiled without labels)
        if tl.load(labels_ptr + row) == ignore_index:
            if WRITE_GRAD:
                for i in range(0, n_blocks):
                    cols = i * BLOCK + lanes
                    zero = tl.zeros([BLOCK], dtype=grad_ptr.dtype.element_ty)
                    tl.store(grad_row + cols, zero, mask=cols < V)
            tl.store(loss_ptr + row, 0.0)
            return

    m_s = tl.full([], float("-inf"), tl.float32)
    z_s = tl.zeros([], tl.float32)
    for i in range(0, n_blocks):
        cols = i * BLOCK + lanes
        x = tl.load(zs_row + cols * zs_s_col, mask=cols < V, other=float("-inf")).to(tl.float32)
        m_s, z_s = softmax_block_update(m_s, z_s, x, inv_t)
    top_s = tl.where(m_s == float("-inf"), 0.0, m_s)
    log_z_s = tl.log(z_s)

    m_t = tl.full([], float("-inf"), tl.float32)
    z_t = tl.zeros([], tl.float32)
    m_1 = tl.full([], float("-inf"), tl.float32)
    z_1 = tl.zeros([], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kmask = k0 + klanes < K
        y = tl.load(tlp_row + k0 + klanes, mask=kmask, other=float("-inf")).to(tl.float32)
        m_t, z_t = softmax_block_update(m_t, z_t, y, inv_t)
        if MASS != 0:  # the captured mass Σ e^y, at temperature 1
            m_1, z_1 = softmax_block_update(m_1, z_1, y, 1.0)
    top_t = tl.where(m_t == float("-inf"), 0.0, m_t)
    log_z_t = tl.log(z_t)
    b_rest = tl.full([], float("-inf"), tl.float32)
    if MASS != 0:
        # The rest, 1 − M, is one more outcome raised to 1/T beside the k ids: it joins the
        # normalizer, and (uniform) its log-prob is b_rest.
        mass = tl.minimum(tl.exp(tl.where(m_1 == float("-inf"), 0.0, m_1)) * z_1, 1.0)
        rel = tl.log(1.0 - mass) * inv_t - top_t * inv_t - log_z_t
        shift = tl.log(1.0 + tl.exp(rel))
        log_z_t = log_z_t + shift
        b_rest = rel - shift

    ell_acc = tl.zeros([BLOCK_K], tl.float32)
    pg_acc = tl.zeros([BLOCK_K], tl.float32)
    p_acc = tl.zeros([BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kmask = k0 + klanes < K
        ids = tl.load(ids_row + k0 + klanes, mask=kmask, other=0).to(tl.int64)
        y = tl.load(tlp_row + k0 + klanes, mask=kmask, other=float("-inf")).to(tl.float32)
        x = tl.load(zs_row + ids * zs_s_col, mask=kmask, other=float("-inf")).to(tl.float32)
        a = (x - top_s) * inv_t - log_z_s
        b = (y - top_t) * inv_t - log_z_t
        p = tl.exp(a)
        ell, pg = divergence_terms(a, b, p, tl.exp(b), MODE, weight)
        ell_acc += tl.where(kmask, ell, 0.0)
        pg_acc += tl.where(kmask, pg, 0.0)
        p_acc += tl.where(kmask, p, 0.0)
    p_out = tl.maximum(1.0 - tl.sum(p_acc, axis=0), 0.0)
    c_pg_row = c_pg
    if MASS == 2:
        # The student's rest (floored) against the teacher's: one more entry; the rest's ids
        # share its pg in proportion to p, so c_pg is the rest's pg per unit of p.
        p_rest = tl.maximum(p_out, rest_floor)
        ell_r, pg_r = divergence_terms(tl.log(p_rest), b_rest, p_rest, tl.exp(b_rest), MODE, weight)
        c_pg_row = pg_r / p_rest
        tl.store(loss_ptr + row, tl.sum(ell_acc, axis=0) + ell_r)
    else:
        tl.store(loss_ptr + row, tl.sum(ell_acc, axis=0) + c_ell * p_out)

    if WRITE_GRAD:
        c_sum = -1.0
        if MODE != 0:
            c_sum = tl.sum(pg_acc, axis=0) + c_pg_row * p_out
        if MASS != 0:  # Σ q < 1 over the ids (keep), or the rest's share (uniform)
            c_sum = tl.sum(pg_acc, axis=0) + c_pg_row * p_out
        scale = tl.load(scale_ptr + row * scale_stride).to(tl.float32) * inv_t
        for j in range(0, n_blocks):
            cols = (n_blocks - 1 - j) * BLOCK + lanes
            mask = cols < V
            x = tl.load(zs_row + cols * zs_s_col, mask=mask, other=float("-inf")).to(tl.float32)
            p = tl.exp((x - top_s) * inv_t - log_z_s)
            grad = p * (c_pg_row - c_sum) * scale
            tl.store(grad_row + cols, grad.to(grad_ptr.dtype.element_ty), mask=mask)
        # The teacher's entries overwrite what the row pass wrote there.
        tl.debug_barrier()
        for k0 in range(0, K, BLOCK_K):
            kmask = k0 + klanes < K
            ids = tl.load(ids_row + k0 + klanes, mask=kmask, other=0).to(tl.int64)
            y = tl.load(tlp_row + k0 + klanes, mask=kmask, other=float("-inf")).to(tl.float32)
            x = tl.load(zs_row + ids * zs_s_col, mask=kmask, other=float("-inf")).to(tl.float32)
            a = (x - top_s) * inv_t - log_z_s
            b = (y - top_t) * inv_t - log_z_t
            p = tl.exp(a)
            ell, pg = divergence_terms(a, b, p, tl.exp(b), MODE, weight)
            grad = (pg - p * c_sum) * scale
            tl.store(grad_row + ids, grad.to(grad_ptr.dtype.element_ty), mask=kmask)


def launch_topk(
    student: Rows,
    ids: torch.Tensor,
    logprobs: torch.Tensor,
    labels: torch.Tensor | None,
    grad: torch.Tensor | None,
    scale: torch.Tensor,
    scale_stride: int,
    spec: DivergenceSpec,
    *,
    block: int | None = None,
    block_k: int | None = None,
    num_warps: int = 8,
    mass: int = 0,
    rest_floor: float = 1e-4,
) -> torch.Tensor:
    """Run the kernel over all rows (ids, logprobs: contiguous ``[n_rows, k]``); ``mass``: the
    ``topk_mass`` handling, a value of :data:`MASS_MODES`; ``rest_floor``: the least student
    mass outside the ids under ``uniform`` (``losses.distill.REST_FLOOR``)."""
    n_rows, width = student.n_rows, student.tensor.shape[-1]
    k = ids.shape[-1]
    loss = torch.empty(n_rows, dtype=torch.float32, device=student.tensor.device)
    if n_rows == 0:
        return loss
    c_ell, c_pg = entries.outside_terms(spec.mode, spec.weight)
    topk_divergence_kernel[(n_rows,)](
        student.tensor,
        ids,
        logprobs,
        grad if grad is not None else scale,
        loss,
        labels if labels is not None else scale,
        scale,
        width,
        k,
        student.inner,
        *student.strides,
        scale_stride,
        1.0 / spec.temperature,
        float(spec.weight),
        c_ell,
        c_pg,
        int(spec.ignore_index),
        float(rest_floor),
        MODE=spec.mode,
        HAS_LABELS=labels is not None,
        WRITE_GRAD=grad is not None,
        BLOCK=block or max(16, min(4096, triton.next_power_of_2(width))),
        BLOCK_K=block_k or max(16, min(128, triton.next_power_of_2(k))),
        num_warps=num_warps,
        MASS=mass,
    )
    return loss


class TopkDivergenceFunction(torch.autograd.Function):
    """Autograd wrapper of the sparse-teacher kernel (same contract as the dense one)."""

    @staticmethod
    def forward(ctx, student, ids, logprobs, labels, spec: DivergenceSpec, options: dict):
        rows = as_rows(student)
        k = ids.shape[-1]
        ids2 = ids.reshape(-1, k).contiguous()
        lp2 = logprobs.detach().reshape(-1, k).contiguous()
        flat_labels = labels.reshape(-1) if labels is not None else None
        count = counted_positions(flat_labels, rows.n_rows, spec.ignore_index, student.device)
        eager = ctx.needs_input_grad[0] and spec.reduction != "none"
        grad = None
        if eager:
            grad = torch.empty(
                (rows.n_rows, student.shape[-1]), dtype=student.dtype, device=student.device
            )
        if spec.reduction == "token_mean":
            scale = 1.0 / count.clamp(min=1.0)
        else:
            scale = torch.ones_like(count)
        row_loss = launch_topk(
            rows, ids2, lp2, flat_labels, grad, scale.reshape(1), 0, spec, **options
        )
        ctx.grad, ctx.shape, ctx.spec, ctx.options = grad, student.shape, spec, options
        ctx.eager = eager
        if ctx.needs_input_grad[0] and not eager:
            ctx.save_for_backward(student, ids2, lp2, flat_labels)
        return reduce_rows(row_loss, count, spec.reduction, student.shape[:-1])

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.eager:
            if ctx.grad is None:
                raise RuntimeError(GRADIENT_USED)
            grad, ctx.grad = ctx.grad, None
            scale_inplace(grad, grad_output.detach().to(torch.float32))
            return grad.view(ctx.shape), None, None, None, None, None
        student, ids2, lp2, labels = ctx.saved_tensors
        rows = as_rows(student)
        grad = torch.empty(
            (rows.n_rows, student.shape[-1]), dtype=student.dtype, device=student.device
        )
        row_scale = grad_output.detach().reshape(-1).to(torch.float32).contiguous()
        launch_topk(rows, ids2, lp2, labels, grad, row_scale, 1, ctx.spec, **ctx.options)
        return grad.view(ctx.shape), None, None, None, None, None


def topk_divergence(student_logits, ids, logprobs, spec: DivergenceSpec, labels=None, **options):
    """Fused divergence of the student logits against a top-k teacher (module docstring)."""
    return TopkDivergenceFunction.apply(student_logits, ids, logprobs, labels, spec, options)
