"""The loss terms of a ``train`` block, each as a *sum* over the positions (or pairs) it counts.

Sums, not means: the loop divides every term by the number of counted positions (pairs for
``dpo``) of the whole optimizer step — across micro-batches and processes — so the gradient of a
step is the same whatever ``grad_accum`` and the number of processes are. Shapes below use the
shifted coordinates of :class:`~kdlang.runtime.train.examples.Batch`: ``logits`` ``[B, L-1, V]``
(position t predicts the token at t + 1), ``labels`` ``[B, L-1]`` with −100 where nothing counts.

- ``sft``: Σ −log p_S(y_t) (cross-entropy on target tokens).
- divergences: Σ D(p_T ‖ p_S) of ``distill_loss`` (softened by T; DESIGN.md gives each D), the
  teacher as full logits (online) or a cached top-k; from logits, or from hidden states and the
  lm_head without the full logits (fused-linear path).
- ``hidden_mse``: Σ_t mean_d (P h_S − h_T)²; ``hidden_cosine``: Σ_t 1 − cos(P h_S, h_T), where
  P is a learned linear map when the widths differ, the identity otherwise.
- ``dpo``: Σ_pairs −log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]),
  log π(y) being the summed log-probs of the response tokens.

This module imports no part of the language side (benchmarks use it on machines without it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..losses import distill_loss, fused_linear_distill_loss

IGNORE = -100
CHUNK_LOGITS_BYTES = 256 * 2**20
"""Fused path, terms without a kernel: rows per chunk so one chunk's fp32 logits stay near this."""


def sft_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ over counted positions of −log softmax(logits)[label], in float32."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )


def divergence_sum(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    kind: str,
    temperature: float,
    beta: float = 0.5,
    alpha: float = 0.1,
    teacher_logits: torch.Tensor | None = None,
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Σ over counted positions of the divergence ``kind`` (see ``distill_loss``)."""
    return distill_loss(
        student_logits,
        teacher_logits,
        kind,
        temperature=temperature,
        beta=beta,
        alpha=alpha,
        labels=labels,
        reduction="sum",
        teacher_topk=teacher_topk,
        backend=backend,
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
    beta: float = 0.5,
    alpha: float = 0.1,
    width: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """The same sum as :func:`divergence_sum` from hidden states ``[..., H]`` and the two
    lm_heads, without the full logits. Only counted positions are computed: they are gathered
    first. ``width`` keeps the first ``width`` vocabulary rows of both heads."""
    keep = labels != IGNORE
    hs, ht, kept = student_hidden[keep], teacher_hidden[keep], labels[keep]
    ws, bs = _head(student_head, width)
    wt, bt = _head(teacher_head, width)
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
            beta=beta,
            alpha=alpha,
            labels=kept,
            reduction="sum",
            student_bias=bs.to(dtype) if bs is not None else None,
            teacher_bias=bt,
            backend=backend,
        )


def chunked_head_sum(hidden, head: nn.Linear, labels, fn, *extra, width: int | None = None):
    """Σ over counted rows of ``fn(logits_chunk, labels_chunk, *extra_chunks)`` where the logits
    are ``head(hidden)`` made one chunk of rows at a time and recomputed in the backward pass
    (activation checkpointing): the fused path for terms that have no fused kernel (``sft``,
    cached top-k divergences). Only the counted rows are gathered and computed."""
    keep = labels != IGNORE
    rows, kept = hidden[keep], labels[keep]
    extra = [x[keep] for x in extra]
    weight, bias = _head(head, width)
    size = max(1, CHUNK_LOGITS_BYTES // (4 * weight.shape[0]))
    total = hidden.new_zeros((), dtype=torch.float32)

    def piece(h, lab, *more):
        return fn(F.linear(h, weight, bias), lab, *more)

    for start in range(0, rows.shape[0], size):
        part = slice(start, start + size)
        args = (rows[part], kept[part], *[x[part] for x in extra])
        total = total + checkpoint(piece, *args, use_reentrant=False)
    return total


def _head(head: nn.Linear, width: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight, bias = head.weight, head.bias
    if width is not None and width < weight.shape[0]:
        weight = weight[:width]
        bias = bias[:width] if bias is not None else None
    return weight, bias


class Projection(nn.Module):
    """``P`` of a hidden-state term: a learned ``Linear(d_S, d_T)`` (no bias) when the widths
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


def hidden_sum(
    kind: str,
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    counted: torch.Tensor,
    projection: nn.Module,
) -> torch.Tensor:
    """Σ over counted positions of ``hidden_mse`` (mean over features of the squared error) or
    ``hidden_cosine`` (1 − cosine similarity), student states projected to the teacher width;
    computed in float32."""
    s = projection(student_hidden[counted].float())
    t = teacher_hidden[counted].detach().float()
    if kind == "hidden_mse":
        per = (s - t).pow(2).mean(dim=-1)
    elif kind == "hidden_cosine":
        per = 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)
    else:
        raise ValueError(f"not a hidden-state term: {kind!r}")
    return per.sum()


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[B]``: Σ_t log p(label_t) over each row's counted positions (float32)."""
    nll = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    )
    return -nll.view(labels.shape).sum(dim=-1)


def dpo_sum(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> torch.Tensor:
    """Σ over pairs of the DPO loss. ``policy`` and ``reference``: ``[2P]`` sequence log-probs,
    the P chosen responses first, then the P rejected ones."""
    pairs = policy.shape[0] // 2
    margin = (policy[:pairs] - reference[:pairs]) - (policy[pairs:] - reference[pairs:])
    return -F.logsigmoid(beta * margin).sum()
