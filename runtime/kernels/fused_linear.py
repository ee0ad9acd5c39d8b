"""Fused linear distillation: lm_head products and divergence, chunk by chunk.

For rows of hidden states X_S ``[N, H_S]``, X_T ``[N, H_T]`` and heads W_S ``[V, H_S]``,
W_T ``[V, H_T]``, the loss needs the logits Z_S = X_S W_Sᵀ and Z_T = X_T W_Tᵀ, ``[N, V]``
each — 2 GB apiece at N = 8192, V = 128,256 in bf16. Here they only ever exist for
``chunk`` rows at a time:

    for each block of rows c:
        Z_S[c] = X_S[c] W_Sᵀ (+ b_S),  Z_T[c] = X_T[c] W_Tᵀ (+ b_T)      (cuBLAS)
        G[c] = d loss / d Z_S[c], written over Z_S[c] in place            (fused kernel)
        dX_S[c] = G[c] W_S,   dW_S += G[c]ᵀ X_S[c],   db_S += Σ_rows G[c]

Because the loss is a scalar, the gradients are complete after the forward pass; backward
multiplies them by ``grad_output`` (skipped on the device when it is 1). With
``reduction="none"`` backward repeats the loop with the per-position ``grad_output``.
``dW_S`` accumulates in W_S's dtype (each chunk's product in fp32 inside cuBLAS), which
keeps the extra memory at one weight-sized buffer. The teacher gets no gradient.

This module holds the loop; the per-chunk divergence (``evaluate``) is passed in, the
fused Triton kernel on GPUs or the torch reference on CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# The fused losses compute their gradient in the forward pass and give it to autograd
# without a copy, so a second backward through the same graph has nothing left to give.
GRADIENT_USED = (
    "this loss computes its gradient in the forward pass and hands it over once: "
    "backward through it a single time (retain_graph is not supported)"
)
# Bytes the two logits chunks may take together.
LOGITS_CHUNK_BYTES = 512 * 2**20
MIN_CHUNK_ROWS = 256


def chunk_rows(n_rows: int, width: int, hidden: int, elem_bytes: int) -> int:
    """Rows per chunk for vocabulary ``width`` and the larger hidden width ``hidden``.

    The two logits chunks cost ``2·rows·V`` elements, which sets the upper bound; the
    GEMMs want ``rows·hidden`` large enough to fill the device (at least 256 rows, more
    for narrow hidden widths); rows are a multiple of 64 and never more than needed.
    """
    by_memory = LOGITS_CHUNK_BYTES // max(1, 2 * width * elem_bytes)
    by_gemm = max(MIN_CHUNK_ROWS, 2**20 // max(1, hidden))
    rows = max(64, min(by_memory, 8192), min(by_gemm, 2048)) // 64 * 64
    return max(1, min(rows, n_rows))


# evaluate(z_s, z_t, labels, scale, scale_stride, write_grad) -> per-row loss; when
# write_grad it overwrites z_s with scale·d loss_row / d z_s.
ChunkEvaluator = Callable[..., torch.Tensor]


def run_chunks(
    xs,
    ws,
    xt,
    wt,
    bs,
    bt,
    labels,
    evaluate: ChunkEvaluator,
    scale,
    scale_stride,
    want: tuple[bool, bool, bool],
    chunk: int,
):
    """One pass over all rows; returns (per-row loss, dX_S, dW_S, db_S) (None if unwanted)."""
    n_rows, width = xs.shape[0], ws.shape[0]
    want_dx, want_dw, want_db = want
    write_grad = any(want)
    loss_dtype = torch.promote_types(xs.dtype, torch.float32)
    row_loss = torch.empty(n_rows, dtype=loss_dtype, device=xs.device)
    dx = torch.empty_like(xs) if want_dx else None
    dw = torch.zeros_like(ws) if want_dw else None
    db = torch.zeros(width, dtype=loss_dtype, device=xs.device) if want_db else None
    zs_buf = torch.empty((min(chunk, n_rows), width), dtype=xs.dtype, device=xs.device)
    zt_buf = torch.empty((min(chunk, n_rows), width), dtype=xt.dtype, device=xs.device)
    for start in range(0, n_rows, chunk):
        stop = min(n_rows, start + chunk)
        x_c = xs[start:stop]
        z_s, z_t = zs_buf[: stop - start], zt_buf[: stop - start]
        if bs is None:
            torch.mm(x_c, ws.t(), out=z_s)
        else:
            torch.addmm(bs, x_c, ws.t(), out=z_s)
        if bt is None:
            torch.mm(xt[start:stop], wt.t(), out=z_t)
        else:
            torch.addmm(bt, xt[start:stop], wt.t(), out=z_t)
        lab = labels[start:stop] if labels is not None else None
        sc = scale if scale_stride == 0 else scale[start:stop]
        row_loss[start:stop] = evaluate(z_s, z_t, lab, sc, scale_stride, write_grad)
        if want_dx:
            torch.mm(z_s, ws, out=dx[start:stop])
        if want_dw:
            dw.addmm_(z_s.t(), x_c)
        if want_db:
            db += z_s.sum(0, dtype=loss_dtype)
    return row_loss, dx, dw, db


def _scale(tensors, factor: torch.Tensor) -> None:
    for t in tensors:
        if t is None:
            continue
        if t.is_cuda:
            from .scale import scale_inplace

            scale_inplace(t, factor.to(torch.float32))
        else:
            t.mul_(factor.to(t.dtype))


class FusedLinearDistillFunction(torch.autograd.Function):
    """Autograd wrapper of ``run_chunks`` over rows ``[N, H]`` (leading dims flattened)."""

    @staticmethod
    def forward(ctx, xs, ws, xt, wt, bs, bt, labels, evaluate, reduction, ignore_index, chunk):
        n_rows = xs.shape[0]
        count_dtype = torch.promote_types(xs.dtype, torch.float32)
        if labels is None:
            count = torch.full((), float(n_rows), dtype=count_dtype, device=xs.device)
        else:
            count = (labels != ignore_index).sum().to(count_dtype)
        want = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[4])
        eager = reduction != "none"
        if reduction == "token_mean":
            scale = 1.0 / count.clamp(min=1.0)
        else:
            scale = torch.ones_like(count)
        row_loss, dx, dw, db = run_chunks(
            xs,
            ws,
            xt,
            wt,
            bs,
            bt,
            labels,
            evaluate,
            scale.reshape(1),
            0,
            want if eager else (False, False, False),
            chunk,
        )
        ctx.grads, ctx.eager = ((dx, dw, db) if eager else None), eager
        ctx.evaluate, ctx.chunk, ctx.want = evaluate, chunk, want
        ctx.bias_dtype = bs.dtype if bs is not None else None
        if not eager and any(want):
            ctx.save_for_backward(xs, ws, xt, wt, bs, bt, labels)
        if reduction == "none":
            return row_loss
        total = row_loss.sum()
        return total if reduction == "sum" else total / count.clamp(min=1.0).to(total.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.eager:
            if ctx.grads is None:
                raise RuntimeError(GRADIENT_USED)
            dx, dw, db = ctx.grads
            ctx.grads = None
            _scale((dx, dw, db), grad_output.detach())
        else:
            xs, ws, xt, wt, bs, bt, labels = ctx.saved_tensors
            scale_dtype = torch.promote_types(xs.dtype, torch.float32)
            row_scale = grad_output.detach().reshape(-1).to(scale_dtype).contiguous()
            _, dx, dw, db = run_chunks(
                xs, ws, xt, wt, bs, bt, labels, ctx.evaluate, row_scale, 1, ctx.want, ctx.chunk
            )
        if db is not None:
            db = db.to(ctx.bias_dtype)
        return dx, dw, None, None, db, None, None, None, None, None, None
