"""Row-streaming divergence kernel: one program per position, any vocabulary width.

The program walks its row in column blocks of ``BLOCK`` entries:

1. online softmax statistics of the student and teacher logits (lane-wise running max
   and sum, reduced at the end): the row's log-normalizers;
2. when the mode needs C = Σ pg (every mode but forward_kl) or no gradient is written:
   the loss D = Σ ell and C;
3. when a gradient is written: ``grad = (pg − p·C) / T · scale`` in the input dtype,
   walking the blocks backwards so the first blocks re-read are the ones read last (the
   likeliest still in L2). forward_kl (C = −1) sums its loss here and skips pass 2.

It moves 4 bytes (bf16 student + teacher) per entry per reading pass plus 2 written, and
holds nothing but a few block-sized vectors, so it serves every width and the
interpreter; ``divergence_split`` is the one-read kernel used on GPUs.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .terms import divergence_terms, online_softmax_finish, online_softmax_update


@triton.jit
def divergence_rows_kernel(
    zs_ptr,
    zt_ptr,
    grad_ptr,
    loss_ptr,
    labels_ptr,
    scale_ptr,
    V,
    inner,
    zs_s_outer,
    zs_s_inner,
    zs_s_col,
    zt_s_outer,
    zt_s_inner,
    zt_s_col,
    scale_stride,
    inv_t,
    weight,
    log_w1,
    log_w2,
    ignore_index,
    MODE: tl.constexpr,
    HAS_LABELS: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    outer = row // inner
    in_row = row % inner
    zs_row = zs_ptr + outer * zs_s_outer + in_row * zs_s_inner
    zt_row = zt_ptr + outer * zt_s_outer + in_row * zt_s_inner
    grad_row = grad_ptr + row * V
    lanes = tl.arange(0, BLOCK)
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

    # Pass 1: log-normalizers of both rows.
    m_s = tl.full([BLOCK], float("-inf"), tl.float32)
    z_s = tl.zeros([BLOCK], tl.float32)
    m_t = tl.full([BLOCK], float("-inf"), tl.float32)
    z_t = tl.zeros([BLOCK], tl.float32)
    for i in range(0, n_blocks):
        cols = i * BLOCK + lanes
        mask = cols < V
        x = tl.load(zs_row + cols * zs_s_col, mask=mask, other=float("-inf")).to(tl.float32)
        y = tl.load(zt_row + cols * zt_s_col, mask=mask, other=float("-inf")).to(tl.float32)
        m_s, z_s = online_softmax_update(m_s, z_s, x, inv_t)
        m_t, z_t = online_softmax_update(m_t, z_t, y, inv_t)
    top_s, log_z_s = online_softmax_finish(m_s, z_s, inv_t)
    top_t, log_z_t = online_softmax_finish(m_t, z_t, inv_t)

    # Pass 2: loss and C (skipped by forward_kl when it writes a gradient).
    loss = 0.0
    c_sum = -1.0
    if MODE != 0 or not WRITE_GRAD:
        ell_acc = tl.zeros([BLOCK], tl.float32)
        pg_acc = tl.zeros([BLOCK], tl.float32)
        for i in range(0, n_blocks):
            cols = i * BLOCK + lanes
            mask = cols < V
            x = tl.load(zs_row + cols * zs_s_col, mask=mask, other=float("-inf")).to(tl.float32)
            y = tl.load(zt_row + cols * zt_s_col, mask=mask, other=float("-inf")).to(tl.float32)
            a = (x - top_s) * inv_t - log_z_s
            b = (y - top_t) * inv_t - log_z_t
            ell, pg = divergence_terms(a, b, MODE, weight, log_w1, log_w2)
            ell_acc += tl.where(mask, ell, 0.0)
            pg_acc += tl.where(mask, pg, 0.0)
        loss = tl.sum(ell_acc, axis=0)
        if MODE != 0:
            c_sum = tl.sum(pg_acc, axis=0)

    # Pass 3: the gradient, last blocks first.
    if WRITE_GRAD:
        scale = tl.load(scale_ptr + row * scale_stride).to(tl.float32) * inv_t
        ell_acc = tl.zeros([BLOCK], tl.float32)
        for j in range(0, n_blocks):
            cols = (n_blocks - 1 - j) * BLOCK + lanes
            mask = cols < V
            x = tl.load(zs_row + cols * zs_s_col, mask=mask, other=float("-inf")).to(tl.float32)
            y = tl.load(zt_row + cols * zt_s_col, mask=mask, other=float("-inf")).to(tl.float32)
            a = (x - top_s) * inv_t - log_z_s
            b = (y - top_t) * inv_t - log_z_t
            ell, pg = divergence_terms(a, b, MODE, weight, log_w1, log_w2)
            grad = (pg - tl.exp(a) * c_sum) * scale
            tl.store(grad_row + cols, grad.to(grad_ptr.dtype.element_ty), mask=mask)
            if MODE == 0:
                ell_acc += tl.where(mask, ell, 0.0)
        if MODE == 0:
            loss = tl.sum(ell_acc, axis=0)
    tl.store(loss_ptr + row, loss)
