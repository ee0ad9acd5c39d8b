"""Scale gradients computed in the forward pass by the incoming ``grad_output``.

The fused losses write d(loss)/d(input) during the forward launch, since the loss is a
scalar; backward only has to multiply by ``grad_output``. Reading that scalar on the host
would synchronize the stream, so a persistent kernel reads it on the device and every
program returns at once when it is 1 (a loss used as is, the common case); otherwise the
tensor is scaled in place, one more read and write of it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .layout import multiprocessors

_BLOCK = 4096


@triton.jit
def scale_inplace_kernel(x_ptr, n, factor_ptr, BLOCK: tl.constexpr):
    factor = tl.load(factor_ptr).to(tl.float32)
    if factor != 1.0:
        start = tl.program_id(0).to(tl.int64) * BLOCK
        step = tl.num_programs(0).to(tl.int64) * BLOCK
        for offset in range(start, n, step):
            idx = offset + tl.arange(0, BLOCK)
            mask = idx < n
            x = tl.load(x_ptr + idx, mask=mask).to(tl.float32)
            tl.store(x_ptr + idx, (x * factor).to(x_ptr.dtype.element_ty), mask=mask)


def scale_inplace(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``x *= factor`` for a contiguous ``x`` and a one-element device ``factor``."""
    if x.numel() == 0:
        return x
    assert x.is_contiguous()
    factor = factor.reshape(1)
    programs = min(triton.cdiv(x.numel(), _BLOCK), 4 * multiprocessors(x.device))
    scale_inplace_kernel[(programs,)](x, x.numel(), factor, BLOCK=_BLOCK, num_warps=4)
    return x
