"""The fused divergence kernel on dense logits.

Each row is cut into ``n_seg`` segments of ``segment`` columns, one program per
(row, segment); a program walks its segment in blocks of ``BLOCK`` columns:

1. softmax statistics of its student and teacher entries (running max and sum), which it
   publishes in ``part[row, seg, 0:4]`` before arriving at the row's barrier;
2. once all ``n_seg`` programs of the row have arrived: the row's log-normalizers, from
   every segment's share; then, for every mode but forward_kl (whose C is −1), the loss
   share Σ ell and C share Σ pg, published in ``part[row, seg, 4:6]``, and a second
   barrier;
3. the gradient ``(pg − p·C) / T · scale``, in the input dtype, blocks in reverse order
   (forward_kl sums its loss share here).

Passes 2 and 3 re-read the segment that pass 1 read a few microseconds before: with
segments of a few tens of kB, the re-reads come from L1/L2, so device memory sees each
entry read once and its gradient written once — 6 bytes per entry for bf16, the floor —
while registers hold only one block. With ``segment >= V`` (``n_seg == 1``) a program
owns a whole row and the barriers return at once: that form runs under Triton's
interpreter, which executes programs one after another.

The barrier spins on a per-row arrival counter. It cannot deadlock: programs start in
launch order and a row's programs are adjacent, so when any program of a row waits, the
rows before it have all started, and only the last started row can wait for siblings not
yet started — which start as soon as earlier programs finish (a GPU holds far more
programs at once than a row has segments).

Waiting is cheap only if it stays off the memory system's busy paths: each row's counter
has a 128-byte line of its own (``COUNTER_STRIDE``), and a waiting program polls it with
plain loads, taking one acquiring atomic once the count is reached — polling with atomics,
on counters sharing lines, cost 6% at V = 128,256 on an H100. Holding the whole segment in
registers instead of re-reading it (one block per segment) was measured slower: fewer
programs fit on a multiprocessor to hide the barrier's wait.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .entries import divergence_terms, softmax_block_update

PART_FIELDS = 8  # student max, sum, teacher max, sum, loss share, C share, 2 unused
COUNTER_STRIDE = 32  # int32 counters, one per 128-byte line
_COUNTER_STRIDE = tl.constexpr(COUNTER_STRIDE)  # the same, readable inside kernels


@triton.jit
def _arrive_and_wait(count_ptr, target):
    # Every thread's stores of this program are ordered before the release by the barrier.
    tl.debug_barrier()
    tl.atomic_add(count_ptr, 1, sem="release")
    while tl.load(count_ptr, volatile=True) < target:
        pass
    tl.atomic_add(count_ptr, 0, sem="acquire")  # the other segments' shares are visible
    tl.debug_barrier()


@triton.jit
def _combine(shares, smask, inv_t):
    """Row (max, log-sum) from every segment's (max, sum) share."""
    m = tl.load(shares, mask=smask, other=float("-inf"), cache_modifier=".cg")
    z = tl.load(shares + 1, mask=smask, other=0.0, cache_modifier=".cg")
    top = tl.max(m, axis=0)
    top = tl.where(top == float("-inf"), 0.0, top)
    return top, tl.log(tl.sum(z * tl.exp((m - top) * inv_t), axis=0))


@triton.jit
def divergence_kernel(
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
    ignore_index,
    segment,
    n_seg,
    MODE: tl.constexpr,
    HAS_LABELS: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
    SEG_POW2: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    row = pid // n_seg
    seg = pid % n_seg
    start = seg * segment
    stop = tl.minimum(start + segment, V)
    n_blocks = tl.cdiv(stop - start, BLOCK)
    lanes = tl.arange(0, BLOCK)
    zs_row = zs_ptr + (row // inner) * zs_s_outer + (row % inner) * zs_s_inner
    zt_row = zt_ptr + (row // inner) * zt_s_outer + (row % inner) * zt_s_inner
    grad_row = grad_ptr + row * V
    part_row = part_ptr + row * n_seg * 8
    my_part = part_row + seg * 8
    grad_dtype = grad_ptr.dtype.element_ty

    if HAS_LABELS:  # noqa: SIM102 (constexpr test first: no label load without labels)
        if tl.load(labels_ptr + row) == ignore_index:
            if WRITE_GRAD:
                for i in range(0, n_blocks):
                    cols = start + i * BLOCK + lanes
                    tl.store(grad_row + cols, tl.zeros([BLOCK], grad_dtype), mask=cols < stop)
            tl.store(my_part + 4, 0.0)
            return

    # Pass 1: this segment's softmax statistics, then the row's.
    m_s = tl.full([], float("-inf"), tl.float32)
    z_s = tl.zeros([], tl.float32)
    m_t = tl.full([], float("-inf"), tl.float32)
    z_t = tl.zeros([], tl.float32)
    for i in range(0, n_blocks):
        cols = start + i * BLOCK + lanes
        mask = cols < stop
        x = tl.load(
            zs_row + cols * zs_s_col, mask=mask, other=float("-inf"), eviction_policy="evict_last"
        ).to(tl.float32)
        y = tl.load(
            zt_row + cols * zt_s_col, mask=mask, other=float("-inf"), eviction_policy="evict_last"
        ).to(tl.float32)
        m_s, z_s = softmax_block_update(m_s, z_s, x, inv_t)
        m_t, z_t = softmax_block_update(m_t, z_t, y, inv_t)
    tl.store(my_part + 0, m_s)
    tl.store(my_part + 1, z_s)
    tl.store(my_part + 2, m_t)
    tl.store(my_part + 3, z_t)
    _arrive_and_wait(count_ptr + row * _COUNTER_STRIDE, n_seg)
    shares = part_row + tl.arange(0, SEG_POW2) * 8
    smask = tl.arange(0, SEG_POW2) < n_seg
    top_s, log_z_s = _combine(shares, smask, inv_t)
    top_t, log_z_t = _combine(shares + 2, smask, inv_t)

    # Pass 2: loss share and C share (forward_kl needs no C and sums its loss in pass 3).
    c_sum = -1.0
    if MODE != 0 or not WRITE_GRAD:
        ell_acc = tl.zeros([BLOCK], tl.float32)
        pg_acc = tl.zeros([BLOCK], tl.float32)
        for i in range(0, n_blocks):
            cols = start + i * BLOCK + lanes
            mask = cols < stop
            x = tl.load(zs_row + cols * zs_s_col, mask=mask, other=float("-inf")).to(tl.float32)
            y = tl.load(zt_row + cols * zt_s_col, mask=mask, other=float("-inf")).to(tl.float32)
            a = (x - top_s) * inv_t - log_z_s
            b = (y - top_t) * inv_t - log_z_t
            ell, pg = divergence_terms(a, b, tl.exp(a), tl.exp(b), MODE, weight)
            ell_acc += tl.where(mask, ell, 0.0)
            pg_acc += tl.where(mask, pg, 0.0)
        tl.store(my_part + 4, tl.sum(ell_acc, axis=0))
        if MODE != 0 and WRITE_GRAD:
            tl.store(my_part + 5, tl.sum(pg_acc, axis=0))
            _arrive_and_wait(count_ptr + row * _COUNTER_STRIDE, 2 * n_seg)
            c_sum = tl.sum(tl.load(shares + 5, mask=smask, other=0.0, cache_modifier=".cg"))

    # Pass 3: the gradient, last blocks first (the likeliest still cached).
    if WRITE_GRAD:
        scale = tl.load(scale_ptr + row * scale_stride).to(tl.float32) * inv_t
        ell_acc = tl.zeros([BLOCK], tl.float32)
        for j in range(0, n_blocks):
            cols = start + (n_blocks - 1 - j) * BLOCK + lanes
            mask = cols < stop
            x = tl.load(
                zs_row + cols * zs_s_col,
                mask=mask,
                other=float("-inf"),
                eviction_policy="evict_first",
            ).to(tl.float32)
            y = tl.load(
                zt_row + cols * zt_s_col,
                mask=mask,
                other=float("-inf"),
                eviction_policy="evict_first",
            ).to(tl.float32)
            a = (x - top_s) * inv_t - log_z_s
            b = (y - top_t) * inv_t - log_z_t
            p = tl.exp(a)
            ell, pg = divergence_terms(a, b, p, tl.exp(b), MODE, weight)
            grad = (pg - p * c_sum) * scale
            tl.store(grad_row + cols, grad.to(grad_dtype), mask=mask)
            if MODE == 0:
                ell_acc += tl.where(mask, ell, 0.0)
        if MODE == 0:
            tl.store(my_part + 4, tl.sum(ell_acc, axis=0))
