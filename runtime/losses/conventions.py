"""Two conventions of the peers' token-level losses that ``distill_loss`` takes as arguments.

- ``infinite_logits="zero"``: a student logit of −inf (a vocabulary entry the model masks)
  where the teacher has mass makes ``Σ p_T log p_S`` infinite; torchtune's ``ForwardKLLoss``
  sets those products to 0 instead. Here the teacher's log-prob is set to −inf on those entries
  (its mass there dropped, not renormalized), which gives the same sum and gradient: every
  divergence formula counts a zero-probability term as zero.
- ``position_weights``: a weighted sum over the counted positions, the per-sequence mean of a
  training step (``reduction = sequence_mean``: each position weighted by 1 / the teacher
  positions of its sequence).
"""

from __future__ import annotations

import math

import torch

INFINITE_LOGITS = ("keep", "zero")
"""What a student logit of −inf does where the teacher has mass (``distill_loss``)."""


def zero_infinite(student: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Teacher log-probs ``b`` ``[..., V]`` with −inf wherever the student's logit is infinite."""
    return b.masked_fill(torch.isinf(student), -math.inf)


def zero_infinite_topk(student: torch.Tensor, ids: torch.Tensor, logprobs: torch.Tensor):
    """A top-k teacher ``(ids, logprobs)`` with −inf at the ids where the student's logit is
    infinite (its raw mass there dropped, before any re-tempering)."""
    infinite = torch.isinf(student.gather(-1, ids.long()))
    return ids, logprobs.masked_fill(infinite, -math.inf)


def check(infinite_logits, position_weights, reduction, backend, student) -> None:
    """Validate the two arguments of ``distill_loss``."""
    if infinite_logits not in INFINITE_LOGITS:
        raise ValueError(
            f"infinite_logits must be one of {INFINITE_LOGITS}, got {infinite_logits!r}"
        )
    if infinite_logits == "zero" and backend == "triton":
        raise ValueError("infinite_logits='zero' is computed on the torch backend only")
    if position_weights is None:
        return
    if reduction != "sum":
        raise ValueError(f"position_weights need reduction='sum', got {reduction!r}")
    if position_weights.shape != student.shape[:-1]:
        raise ValueError(
            f"position_weights {tuple(position_weights.shape)} must be {tuple(student.shape[:-1])}"
        )
