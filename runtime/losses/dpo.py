"""``loss dpo``: direct preference optimisation on chosen/rejected pairs, as a sum over pairs.

    Σ_pairs −log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))])

where log π(y) is the summed log-probs of a response's tokens under the student and π_ref the
student before its first step (the job computes those once with :func:`sequence_logprobs`).
The objective divides the sum by the pairs of the whole optimizer step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distill import IGNORE


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
    the P chosen responses first, then the P rejected ones; ``beta``: the loss's β."""
    pairs = policy.shape[0] // 2
    margin = (policy[:pairs] - reference[:pairs]) - (policy[pairs:] - reference[pairs:])
    return -F.logsigmoid(beta * margin).sum()
