"""Evaluation during training: the train's objective on dev rows, without gradients.

With ``eval_data = NAME`` and ``eval_every = N``, after every N-th optimizer step and after the
last one, the student (in eval mode: no dropout, no random draw) computes the train's loss
lines on every row of NAME exactly as a training step would on them: the weights, temperatures,
β and α settled at that step, the targets of the data (off-policy, whatever the schedule of
samples says), each line's sum over all dev rows divided by what it counts over all of them.
Under several processes the dev rows are split as a step's rows are and the sums reduced.

The values go into that step's record (``metrics.jsonl``, TensorBoard): ``eval/loss`` (the
weighted total) and ``eval/<key>`` for each loss line, keys that say they are evaluations. A
step's record is written once, so a resumed run never repeats an evaluation in the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .examples import Example, Pair
from .metrics import EVAL


@dataclass
class DevRows:
    """The dev rows, tokenized as the training rows are: ``examples`` and ``pairs`` (either
    may be empty) and the pairs' reference log-probs (``dpo``)."""

    examples: list[Example] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    reference: torch.Tensor | None = None

    def __len__(self) -> int:
        return max(len(self.examples), len(self.pairs))


def dev_rows(name: str, rows: list[dict], example, pair, learns_from: set[str]) -> DevRows:
    """The dev rows ``rows`` of ``name``, each made into an example (``example(i, row)``) and
    a pair (``pair(i, row)``) as the train learns from tokens and from pairs."""
    from ..errors import RunError

    if not rows:
        raise RunError(f"`{name}` has no rows to evaluate on")
    return DevRows(
        [example(i, row) for i, row in enumerate(rows)] if "tokens" in learns_from else [],
        [pair(i, row) for i, row in enumerate(rows)] if "pairs" in learns_from else [],
    )


def due(train, done: int, total: int) -> bool:
    """Whether the step that completes ``done`` steps of ``total`` is evaluated."""
    every = getattr(train, "eval_every", None)
    return every is not None and (done % every == 0 or done == total)


@torch.no_grad()
def evaluate(job, models, step: int, autocast) -> dict[str, float]:
    """``{"eval/loss": ..., "eval/<key>": ...}``: the objective settled at ``step`` on the dev
    rows of ``job.dev``. Collective under several processes (every rank calls it)."""
    from .loop import micro_inputs, step_counts

    dev, dist, objective = job.dev, job.dist, job.objective
    settled = objective.at_step(step)
    indices = dist.shard(list(range(len(dev))))
    examples = [dev.examples[i] for i in indices] if dev.examples else []
    pairs = [dev.pairs[i] for i in indices] if dev.pairs else []
    counts = step_counts(examples, pairs, job.online, dist, job.device)
    view = _DevJob(job, dev)
    parts = {line.key: 0.0 for line in objective.lines if objective.applies(line, False)}
    size = -(-job.train.batch // job.train.grad_accum)  # a training micro-batch's rows
    chunks = [list(range(i, min(i + size, len(indices)))) for i in range(0, len(indices), size)]
    fillers = 0
    if job.sharded:  # as many forwards on every rank (the student's shards gather in each)
        most = -(-len(dev) // dist.world)
        fillers = -(-most // size) - len(chunks)
    student = models.student
    was_training = student.training
    student.eval()
    try:
        for chunk in chunks + [None] * fillers:
            if chunk is None:  # a filler: the first dev row, not counted
                tokens, batch, reference = micro_inputs(
                    view,
                    [0],
                    [0],
                    examples[:1] or dev.examples[:1],
                    pairs[:1] or dev.pairs[:1],
                    False,
                )
            else:
                tokens, batch, reference = micro_inputs(
                    view, chunk, indices, examples, pairs, False
                )
            with autocast():
                _, micro_parts = objective.micro_loss(
                    models, settled, counts, tokens, batch, reference, False
                )
            if chunk is None:
                continue
            for key, value in micro_parts.items():
                parts[key] += float(value)
    finally:
        student.train(was_training)
    parts = {key: dist.sum(value, job.device) for key, value in parts.items()}
    weights = settled.weights
    total = sum(weights[key] * value for key, value in parts.items())
    return {f"{EVAL}loss": total, **{f"{EVAL}{key}": value for key, value in parts.items()}}


class _DevJob:
    """The job as :func:`~.loop.micro_inputs` reads it, with the dev rows' reference
    log-probs in place of the training rows'."""

    def __init__(self, job, dev: DevRows):
        self._job, self.reference = job, dev.reference

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)


def last_evaluation(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The last record holding an evaluation's values (``{}`` when none), with its step."""
    for record in reversed(records):
        if f"{EVAL}loss" in record:
            return {
                "step": record["step"],
                **{k: v for k, v in record.items() if k.startswith(EVAL)},
            }
    return {}
