"""Losses through the student's lm_head without its whole logits (the fused-linear path).

A loss with a fused kernel (a divergence against an online teacher) takes the hidden states
and the heads itself (``fused_linear_distill_loss``). The others — ``sft``, divergences against
a cached top-k teacher — run here on ``head(hidden)`` made one chunk of rows at a time and
recomputed in the backward pass (activation checkpointing), so one chunk's logits exist at a
time. Only the counted rows are gathered and computed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .distill import IGNORE

CHUNK_LOGITS_BYTES = 256 * 2**20
"""Rows per chunk so that one chunk's fp32 logits stay near this."""


def head_weights(head: nn.Linear, width: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(weight, bias)`` of ``head``, keeping its first ``width`` vocabulary rows when given."""
    weight: torch.Tensor = head.weight
    bias: torch.Tensor | None = head.bias
    if width is not None and width < weight.shape[0]:
        weight = weight[:width]
        bias = bias[:width] if bias is not None else None
    return weight, bias


def chunked_head_sum(
    hidden: torch.Tensor,
    head: nn.Linear,
    labels: torch.Tensor,
    fn: Callable[..., torch.Tensor],
    *extra: torch.Tensor,
    width: int | None = None,
) -> torch.Tensor:
    """Σ over counted rows of ``fn(logits_chunk, labels_chunk, *extra_chunks)``, the logits
    being ``head(hidden)`` (its first ``width`` rows) made chunk by chunk (module docstring)."""
    keep = labels != IGNORE
    rows, kept = hidden[keep], labels[keep]
    kept_extra = [x[keep] for x in extra]
    weight, bias = head_weights(head, width)
    size = max(1, CHUNK_LOGITS_BYTES // (4 * weight.shape[0]))
    total = hidden.new_zeros((), dtype=torch.float32)

    def piece(h, lab, *more):
        return fn(F.linear(h, weight, bias), lab, *more)

    for start in range(0, rows.shape[0], size):
        part = slice(start, start + size)
        args = (rows[part], kept[part], *[x[part] for x in kept_extra])
        total = total + checkpoint(piece, *args, use_reentrant=False)
    return total
