"""The reductions of a divergence that need more than one count of the step, and the
conventions its kernel call takes from the recipe.

A divergence's step value is ``Σ_i w_i · sum_i / count_i`` (:mod:`.objective`); by its
``reduction``, ``count_i`` is:

- ``token_mean``: the step's teacher positions; ``sum``: 1; ``topk_entries``: teacher
  positions × the cached k;
- ``batchmean``: the step's sequences (TRL's GKD ``batchmean``, torch's ``kl_div``);
- ``sequence_mean``: the step's sequences with at least one teacher position, the sum being
  weighted: each position by 1 / the teacher positions of its own sequence. A sequence lies
  whole in one micro-batch (padded row, or one sequence of a packed row), so its count is
  read there; the number of sequences is the step's, over micro-batches and processes.

``infinite_logits = zero`` (torchtune's masking of infinite student logits) runs on the torch
path of the logits it is given (the check refuses ``loss_path = fused_linear``; where ``auto``
picks that path with an online teacher, the logits are made from the hidden states by a
linear head and are finite whenever its weights are, so there is nothing to mask).
"""

from __future__ import annotations

from typing import Any

import torch

from .examples import IGNORE, Batch
from .packing import sequence_index


def denominator(loss: Any, counts: dict[str, int], batch: Batch) -> float:
    """What the step's sum of divergence ``loss`` (settled) is divided by (module docstring)."""
    reduction = getattr(loss, "reduction", "token_mean")  # minillm's part has none
    if reduction == "sum":
        return 1.0
    if reduction == "topk_entries" and batch.topk_ids is not None:
        return float(max(counts["kd_tokens"], 1) * batch.topk_ids.shape[-1])
    if reduction == "batchmean":
        return float(max(counts["sequences"], 1))
    if reduction == "sequence_mean":
        return float(max(counts["kd_sequences"], 1))
    return float(max(counts["kd_tokens"], 1))


def sequence_weights(batch: Batch) -> torch.Tensor:
    """``[B, L-1]``: 1 / (teacher positions of the position's sequence) where the position has
    a teacher distribution, 0 elsewhere; a packed row's sequences are told apart by their
    positions."""
    counted = batch.kd_labels != IGNORE
    if batch.position_ids is None:
        per_row = counted.sum(-1, keepdim=True).clamp(min=1)
        return counted / per_row
    index = sequence_index(batch.position_ids)[:, :-1]
    sizes = torch.zeros(int(index.max()) + 1, dtype=torch.long, device=index.device)
    sizes = sizes.index_add(0, index[counted], torch.ones_like(index[counted]))
    return counted / sizes[index].clamp(min=1)


def divergence_settings(loss: Any, batch: Batch, *, gathered: bool) -> dict[str, Any]:
    """The keywords beyond the kernel options that the divergence sum of ``loss`` takes:
    ``position_weights`` under ``sequence_mean`` (only the counted positions' when
    ``gathered``, as the fused-linear kernel with an online teacher takes them), and
    ``infinite_logits`` with the torch backend under ``infinite_logits = zero``."""
    out: dict[str, Any] = {}
    if getattr(loss, "reduction", None) == "sequence_mean":
        weights = sequence_weights(batch)
        out["position_weights"] = weights[batch.kd_labels != IGNORE] if gathered else weights
    # the fused kernel's logits (online teacher) come from a linear head: finite
    if getattr(loss, "infinite_logits", "keep") == "zero" and not gathered:
        out.update(infinite_logits="zero", backend="torch")
    return out
