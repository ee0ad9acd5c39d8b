"""What a ``loss dpo`` line logs at each step, named as TRL's ``DPOTrainer`` logs it.

With r(y) = β·(log π(y) − log π_ref(y)) the implicit reward of a response (log π its summed
log-probs under the student, π_ref the student before its first step) and the means taken over
the step's pairs:

- ``rewards/chosen``, ``rewards/rejected``: the mean reward of the chosen / rejected responses;
- ``rewards/margins``: the mean of r(chosen) − r(rejected);
- ``rewards/accuracies``: the share of pairs whose chosen reward is above the rejected one;
- ``logps/chosen``, ``logps/rejected``: the mean summed log-probs under the student.

Each micro-batch adds its sums divided by the pairs of the whole step, so the micro-batches'
values summed (and the processes', in the one all-reduce of the step's values) are the step's
means, whatever the split. These are records only: nothing here enters the loss. A second
``dpo`` line's names end with its key (``rewards/chosen/dpo#2``).
"""

from __future__ import annotations

import torch

NAMES = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)


def names(key: str) -> list[str]:
    """The record names of the ``dpo`` line ``key``."""
    return [name if key == "dpo" else f"{name}/{key}" for name in NAMES]


def empty(objective, on_policy: bool) -> dict[str, float]:
    """Zeros for every name the step records: the same on every process (each adds its
    micro-batches to them), nothing on an on-policy step (``dpo`` does not apply)."""
    out: dict[str, float] = {}
    for line in objective.lines:
        if line.loss.learns_from == "pairs" and objective.applies(line, on_policy):
            out.update(dict.fromkeys(names(line.key), 0.0))
    return out


def pair_sums(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> list[torch.Tensor]:
    """The sums over the micro-batch's pairs of each of :data:`NAMES`' quantities.
    ``policy``, ``reference``: ``[2P]`` summed log-probs, the P chosen responses first."""
    pairs = policy.shape[0] // 2
    policy, reference = policy.detach().double(), reference.detach().double()
    chosen = beta * (policy[:pairs] - reference[:pairs])
    rejected = beta * (policy[pairs:] - reference[pairs:])
    return [
        chosen.sum(),
        rejected.sum(),
        (chosen - rejected).sum(),
        (chosen > rejected).double().sum(),
        policy[:pairs].sum(),
        policy[pairs:].sum(),
    ]


def add(
    metrics: dict, key: str, policy: torch.Tensor, reference: torch.Tensor, beta: float, pairs: int
) -> None:
    """Add one micro-batch's share of the step's means of line ``key`` to ``metrics``."""
    for name, total in zip(names(key), pair_sums(policy, reference, beta), strict=True):
        metrics[name] = metrics.get(name, 0.0) + total / max(pairs, 1)
