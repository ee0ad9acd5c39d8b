"""``loss sft``: cross-entropy on the target tokens (sequence-level KD), as a sum.

Like every loss of a ``train`` block it is a *sum* over the positions it counts: the objective
divides it by the number of target positions of the whole optimizer step (all micro-batches,
all processes), so a step's gradient does not depend on ``grad_accum`` or the process count.
``logits`` ``[B, L-1, V]`` are in the shifted coordinates of the training batch (position t
predicts the token at t + 1), ``labels`` ``[B, L-1]`` with −100 where nothing counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distill import IGNORE


def sft_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ over counted positions of −log softmax(logits)[label], in float32."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
