"""How the kernels address rows of logits, and facts about where they run.

A logits tensor ``[..., V]`` is seen as ``n_rows = outer × inner`` rows: row r lives at
``(r // inner)·s_outer + (r % inner)·s_inner`` and its entry v at ``v·s_col``. Leading
dims that merge by a view become ``outer``; so the usual non-contiguous slices —
``logits[:, :-1]`` (B, L−1, V) of a contiguous (B, L, V), a strided vocabulary — are
read in place, never copied. Only a layout no two-level row index can express (three or
more leading dims that do not merge) is copied.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rows:
    """A tensor's rows as the kernels index them (strides in elements)."""

    tensor: torch.Tensor
    n_rows: int
    inner: int
    s_outer: int
    s_inner: int
    s_col: int

    @property
    def strides(self) -> tuple[int, int, int]:
        return self.s_outer, self.s_inner, self.s_col


def as_rows(x: torch.Tensor) -> Rows:
    """View ``x [..., V]`` as rows without copying where the strides allow it."""
    width = x.shape[-1]
    if x.dim() == 1:
        x = x.unsqueeze(0)
    inner = x.shape[-2]
    try:
        x3 = x.view(-1, inner, width)
    except RuntimeError:
        x3 = x.reshape(-1, inner, width)
    outer = x3.shape[0]
    s_outer = x3.stride(0) if outer > 1 else 0
    return Rows(x3, outer * inner, max(inner, 1), s_outer, x3.stride(1), x3.stride(2))


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def multiprocessors(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (4 for the CPU interpreter)."""
    if device.type != "cuda":
        return 4
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())
