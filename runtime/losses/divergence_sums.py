"""The token-level divergences of a ``train`` block as sums over the counted positions.

``D(p_T ‖ p_S)`` of ``distill_loss`` at every position whose label counts, both distributions
softened by the temperature, the teacher as full logits (online) or a cached top-k; from the
logits, or from hidden states and the two lm_heads without the full logits (the fused-linear
path). ``kind`` is the loss's ``kernel_mode`` and ``options`` its ``kernel_options()`` (β of
jsd, α of the skews): the caller gives them, these sums restate no default.

Sums, not means: the objective divides them by the teacher positions of the whole optimizer
step, across micro-batches and processes. Shapes use the shifted coordinates of the training
batch: ``logits`` ``[B, L-1, V]``, ``labels`` ``[B, L-1]`` with −100 where nothing counts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .distill import IGNORE, distill_loss
from .fused_linear import fused_linear_distill_loss
from .head import head_weights


def divergence_sum(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    kind: str,
    temperature: float,
    teacher_logits: torch.Tensor | None = None,
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    topk_mass: str = "renormalize",
    backend: str = "auto",
    **options: Any,
) -> torch.Tensor:
    """Σ over counted positions of the divergence ``kind`` (see ``distill_loss``);
    ``options``: its options, numbers (``loss.kernel_options()``); ``topk_mass``: the loss's,
    against a top-k teacher."""
    return distill_loss(
        student_logits,
        teacher_logits,
        kind,
        temperature=temperature,
        labels=labels,
        reduction="sum",
        teacher_topk=teacher_topk,
        topk_mass=topk_mass,
        backend=backend,
        **options,
    )


def fused_divergence_sum(
    student_hidden: torch.Tensor,
    student_head: nn.Linear,
    teacher_hidden: torch.Tensor,
    teacher_head: nn.Linear,
    labels: torch.Tensor,
    *,
    kind: str,
    temperature: float,
    width: int | None = None,
    backend: str = "auto",
    **options: Any,
) -> torch.Tensor:
    """The same sum as :func:`divergence_sum` from hidden states ``[..., H]`` and the two
    lm_heads, without the full logits. Only counted positions are computed: they are gathered
    first. ``width`` keeps the first ``width`` vocabulary rows of both heads."""
    keep = labels != IGNORE
    hs, ht, kept = student_hidden[keep], teacher_hidden[keep], labels[keep]
    ws, bs = head_weights(student_head, width)
    wt, bt = head_weights(teacher_head, width)
    # The kernel multiplies in the operands' dtype: under autocast that is the autocast dtype
    # (as the materialized lm_head would run); gradients flow back through the casts.
    device = hs.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else ws.dtype
    with torch.autocast(device, enabled=False):
        return fused_linear_distill_loss(
            hs.to(dtype),
            ws.to(dtype),
            ht.to(wt.dtype),
            wt,
            kind,
            temperature=temperature,
            labels=kept,
            reduction="sum",
            student_bias=bs.to(dtype) if bs is not None else None,
            teacher_bias=bt,
            backend=backend,
            **options,
        )
