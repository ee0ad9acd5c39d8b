"""``loss hidden_mse`` and ``loss hidden_cosine``: hidden states of chosen student and teacher
layers matched position by position, as sums over the counted positions.

- ``hidden_mse``: Σ_t mean_d (P h_S − h_T)²;
- ``hidden_cosine``: Σ_t 1 − cos(P h_S, h_T);

where P is a learned linear map (:class:`Projection`) when the widths differ, the identity
otherwise. :data:`HIDDEN` holds the per-position formula of each, by the loss's DSL word.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class Projection(nn.Module):
    """``P`` of a hidden-state loss: a learned ``Linear(d_S, d_T)`` (no bias) when the widths
    differ, the identity when they match."""

    def __init__(self, student_width: int, teacher_width: int):
        super().__init__()
        self.linear = (
            nn.Linear(student_width, teacher_width, bias=False)
            if student_width != teacher_width
            else None
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden) if self.linear is not None else hidden


def _mse(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (s - t).pow(2).mean(dim=-1)


def _cosine(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)


HIDDEN: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "hidden_mse": _mse,
    "hidden_cosine": _cosine,
}
"""Per-position loss of projected student states ``[N, d_T]`` against teacher states."""


def hidden_sum(
    kind: str,
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    counted: torch.Tensor,
    projection: nn.Module,
) -> torch.Tensor:
    """Σ over counted positions of the loss ``kind`` of :data:`HIDDEN`, student states
    projected to the teacher width; computed in float32."""
    formula = HIDDEN.get(kind)
    if formula is None:
        raise ValueError(f"not a hidden-state loss: {kind!r}; expected one of {sorted(HIDDEN)}")
    s = projection(student_hidden[counted].float())
    t = teacher_hidden[counted].detach().float()
    return formula(s, t).sum()
