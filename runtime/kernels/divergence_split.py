"""Split-row divergence kernel: each row is cut into ``N_CHUNKS`` column chunks, one
program per (row, chunk), and every program keeps its chunk of both rows in registers
from the single read to the gradient write.

The row's reductions cross programs through a small scratch array ``part[row, chunk, 8]``
(fp32: student max and sum, teacher max and sum, loss share, C share) and a per-row
arrival counter:

1. load the chunk, reduce its softmax statistics, publish them, arrive on the counter
   and wait until all ``N_CHUNKS`` programs of the row have arrived;
2. combine the statistics into the log-normalizers; compute the entry terms; publish the
   loss share; modes that need C = Σ pg publish their share and wait a second time;
3. write ``grad = (pg − p·C) / T · scale``.

Each entry is read once and written once: 6 bytes per entry for bf16, the physical floor.
The wait is a spin on the counter; it cannot deadlock because programs are dispatched in
launch order, so the programs of a row that is waited on are running or finished once
any of them runs, and the programs of at most one row can be waiting for siblings not
yet dispatched (the grid has the row's chunks adjacent, and a GPU holds far more
programs than one row has chunks). The interpreter runs programs one after another, so
there a row must be a single chunk (``N_CHUNKS == 1``), where the waits return at once.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .terms import divergence_terms

PART_FIELDS = 8


@triton.jit
def _arrive_and_wait(count_ptr, target):
    # Make every thread's stores of this program visible before the release.
    tl.debug_barrier()
    tl.atomic_add(count_ptr, 1, sem="release")
    while tl.atomic_add(count_ptr, 0, sem="acquire") < target:
        pass
    tl.debug_barrier()


@triton.jit
def divergence_split_kernel(
    zs_ptr,
    zt_ptr,
    grad_ptr,
    part_ptr,
    count_ptr,
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
    CHUNK: tl.constexpr,
    N_CHUNKS: tl.constexpr,
    CHUNKS_POW2: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    row = pid // N_CHUNKS
    chunk = pid % N_CHUNKS
    outer = row // inner
    in_row = row % inner
    cols = chunk * CHUNK + tl.arange(0, CHUNK)
    mask = cols < V
    part_row = part_ptr + row * (N_CHUNKS * 8)
    my_part = part_row + chunk * 8
    grad_dtype = grad_ptr.dtype.element_ty

    counted = True
    if HAS_LABELS:
        counted = tl.load(labels_ptr + row) != ignore_index
    if not counted:
        if WRITE_GRAD:
            tl.store(grad_ptr + row * V + cols, tl.zeros([CHUNK], grad_dtype), mask=mask)
        tl.store(my_part + 4, 0.0)
    else:
        zs_row = zs_ptr + outer * zs_s_outer + in_row * zs_s_inner
        zt_row = zt_ptr + outer * zt_s_outer + in_row * zt_s_inner
        x = tl.load(zs_row + cols * zs_s_col, mask=mask, other=float("-inf")).to(tl.float32)
        y = tl.load(zt_row + cols * zt_s_col, mask=mask, other=float("-inf")).to(tl.float32)

        # Chunk statistics: max (raw logit units) and Σ exp((x − max)/T).
        m_s = tl.max(x, axis=0)
        m_t = tl.max(y, axis=0)
        z_s = tl.sum(tl.exp((x - tl.where(m_s == float("-inf"), 0.0, m_s)) * inv_t), axis=0)
        z_t = tl.sum(tl.exp((y - tl.where(m_t == float("-inf"), 0.0, m_t)) * inv_t), axis=0)
        tl.store(my_part + 0, m_s)
        tl.store(my_part + 1, z_s)
        tl.store(my_part + 2, m_t)
        tl.store(my_part + 3, z_t)
        _arrive_and_wait(count_ptr + row, N_CHUNKS)

        # Row statistics from every chunk's share (read through L2, not L1).
        ks = tl.arange(0, CHUNKS_POW2)
        kmask = ks < N_CHUNKS
        shares = part_row + ks * 8
        pm_s = tl.load(shares + 0, mask=kmask, other=float("-inf"), cache_modifier=".cg")
        pz_s = tl.load(shares + 1, mask=kmask, other=0.0, cache_modifier=".cg")
        pm_t = tl.load(shares + 2, mask=kmask, other=float("-inf"), cache_modifier=".cg")
        pz_t = tl.load(shares + 3, mask=kmask, other=0.0, cache_modifier=".cg")
        top_s = tl.max(pm_s, axis=0)
        top_t = tl.max(pm_t, axis=0)
        top_s = tl.where(top_s == float("-inf"), 0.0, top_s)
        top_t = tl.where(top_t == float("-inf"), 0.0, top_t)
        log_z_s = tl.log(tl.sum(pz_s * tl.exp((pm_s - top_s) * inv_t), axis=0))
        log_z_t = tl.log(tl.sum(pz_t * tl.exp((pm_t - top_t) * inv_t), axis=0))

        a = (x - top_s) * inv_t - log_z_s
        b = (y - top_t) * inv_t - log_z_t
        ell, pg = divergence_terms(a, b, MODE, weight, log_w1, log_w2)
        tl.store(my_part + 4, tl.sum(tl.where(mask, ell, 0.0), axis=0))

        if WRITE_GRAD:
            c_sum = -1.0
            if MODE != 0:
                tl.store(my_part + 5, tl.sum(tl.where(mask, pg, 0.0), axis=0))
                _arrive_and_wait(count_ptr + row, 2 * N_CHUNKS)
                c_sum = tl.sum(tl.load(shares + 5, mask=kmask, other=0.0, cache_modifier=".cg"))
            scale = tl.load(scale_ptr + row * scale_stride).to(tl.float32) * inv_t
            grad = (pg - tl.exp(a) * c_sum) * scale
            tl.store(grad_ptr + row * V + cols, grad.to(grad_dtype), mask=mask)
