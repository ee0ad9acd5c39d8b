"""Where a step's targets come from: the data, the student (GKD's λ, or DistiLLM's adaptive
schedule with its replay buffer), or the online teacher (sequence-level KD).

**The adaptive schedule** (``replay = adaptive(threshold = t0, capacity = C, loss_eps = ε)``,
DistiLLM, ICML 2024). The schedule keeps a threshold t (from t0) and a replay buffer of at most
C student samples (the oldest leave first). At step s of S it draws r ~ U(0, 1) seeded by
(seed, s) and takes

- ``fresh`` when ``r < t·(1 − s/S)``, or when ``r < t`` and the buffer is not full: the student
  samples the step's targets, which then go into the buffer;
- ``replay`` when ``r < t`` (and the buffer is full): the step's batch (batch ×
  ``num_generations`` sequences) is drawn from the buffer without replacement, seeded by
  (seed, s);
- ``data`` otherwise: the data's targets.

After each evaluation (:mod:`.evaluation`) the dev loss L is compared with a reference: the
first evaluation sets it; when ``L > reference + ε``, t rises by 0.1 (at most 1) and L becomes the
reference. The buffer holds whole steps' samples, the same on every process (under several
processes each decodes the whole step and keeps its share), and it is part of the checkpoint
with t and the reference, so a resumed run makes the same decisions.

**Sequence-level KD** (``seq_kd = true``): on a step whose targets come from the data, the
online teacher samples them instead (seeded by (seed, s, row), at the train's sampling
settings), and every loss applies as usual.

**Several samples per prompt** (``num_generations = G``): a student-sampled step turns each row
into G sequences (sample g of row i seeded by (seed, s, i, g); g = 0 as with one), so it learns
from batch × G sequences; the losses' means are over all of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .examples import Example, truncate
from .onpolicy import is_on_policy, sample_targets

FRESH, REPLAY, DATA = "fresh", "replay", "data"


@dataclass
class Replay:
    """The adaptive schedule's state: threshold, reference dev loss and the buffer of
    ``(row, sampled target ids)`` entries, oldest first."""

    threshold: float
    capacity: int
    loss_eps: float
    reference: float | None = None
    buffer: list[tuple[int, list[int]]] = field(default_factory=list)

    @classmethod
    def of(cls, settings) -> Replay:
        return cls(settings.threshold, settings.capacity, settings.loss_eps)

    def decide(self, seed: int, step: int, total: int) -> str:
        """Where step ``step``'s targets come from: :data:`FRESH`, :data:`REPLAY` or :data:`DATA`."""
        r = random.Random(f"kdlang-replay:{seed}:{step}").random()
        fresh_share = self.threshold * (1.0 - step / total)
        if r < fresh_share or (r < self.threshold and len(self.buffer) < self.capacity):
            return FRESH
        return REPLAY if r < self.threshold else DATA

    def add(self, entries: list[tuple[int, list[int]]]) -> None:
        self.buffer.extend(entries)
        del self.buffer[: max(0, len(self.buffer) - self.capacity)]

    def draw(self, seed: int, step: int, count: int) -> list[tuple[int, list[int]]]:
        """``count`` entries of the buffer (without replacement while it has enough)."""
        picker = random.Random(f"kdlang-replay-draw:{seed}:{step}")
        if count <= len(self.buffer):
            return [self.buffer[i] for i in picker.sample(range(len(self.buffer)), count)]
        return [self.buffer[picker.randrange(len(self.buffer))] for _ in range(count)]

    def observe(self, dev_loss: float) -> None:
        """After an evaluation: raise the threshold when the dev loss rose by more than ε."""
        if self.reference is None:
            self.reference = dev_loss
        elif dev_loss > self.reference + self.loss_eps:
            self.threshold = min(1.0, round(self.threshold + 0.1, 10))
            self.reference = dev_loss

    def state(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "reference": self.reference, "buffer": self.buffer}

    def load(self, state: dict[str, Any] | None) -> None:
        if state is not None:
            self.threshold, self.reference = state["threshold"], state["reference"]
            self.buffer = [(int(r), [int(t) for t in ids]) for r, ids in state["buffer"]]


@dataclass
class Drawn:
    """A step's training sequences: this process's ``examples`` with the data rows they come
    from (``rows``), the number of sequences of the whole step (``whole``), where the targets
    come from (``source``) and whether the student sampled them (``on_policy``)."""

    examples: list[Example]
    rows: list[int]
    whole: int
    source: str

    @property
    def on_policy(self) -> bool:
        return self.source in (FRESH, REPLAY)


def draw_step(job, student, step: int, ratio: float, step_rows: list[int], autocast) -> Drawn:
    """The sequences of step ``step`` (``ratio``: GKD's λ settled at the step)."""
    dist, train = job.dist, job.train
    rows = dist.shard(step_rows)
    examples = [job.examples[r] for r in rows] if job.examples else []
    if job.replay is not None:
        source = job.replay.decide(job.seed, step, job.total_steps)
    else:
        source = FRESH if is_on_policy(job.seed, step, ratio) else DATA
    if not job.examples:
        return Drawn(examples, rows, len(step_rows), DATA)
    if source == REPLAY:
        picked = job.replay.draw(job.seed, step, len(step_rows) * train.num_generations)
        made = [job.examples[r].for_sampling().with_target(ids) for r, ids in picked]
        mine = dist.shard(list(range(len(made))))
        return Drawn([made[i] for i in mine], [picked[i][0] for i in mine], len(made), REPLAY)
    if source == FRESH:
        everywhere = dist.active and (job.sharded or job.replay is not None)
        # under fsdp (the same forwards on every rank) or with a buffer (the same on every
        # rank), every rank samples the whole step, then keeps its share
        chosen = step_rows if everywhere else rows
        generations = train.num_generations
        wanted = [(r, g) for r in chosen for g in range(generations)]
        with autocast():
            made = sample_rows(job, student, wanted, step, teacher=False)
        if job.replay is not None:
            job.replay.add([(r, list(e.target)) for (r, _), e in zip(wanted, made, strict=True)])
        if everywhere:
            mine = dist.shard(list(range(len(made))))
            made, wanted = [made[i] for i in mine], [wanted[i] for i in mine]
        return Drawn(made, [r for r, _ in wanted], len(step_rows) * generations, FRESH)
    if train.seq_kd:
        with autocast():
            examples = sample_rows(job, job.models.teacher, [(r, 0) for r in rows], step, True)
    return Drawn(examples, rows, len(step_rows), DATA)


def sample_rows(job, model, wanted: list[tuple[int, int]], step: int, teacher: bool):
    """Examples of rows ``wanted`` (``(row, generation)``) with targets sampled from ``model``
    (the student, or the teacher under ``seq_kd``), truncated to ``max_length``."""
    train = job.train
    bases = [job.examples[r].for_sampling() for r, _ in wanted]
    sampled = sample_targets(
        model,
        job.tokenizer,
        bases,
        seed=job.seed,
        step=step,
        temperature=train.sample_temperature,
        top_p=train.sample_top_p,
        top_k=train.sample_top_k,
        max_new_tokens=train.max_new_tokens,
        batch_size=train.sample_batch or job.sample_batch,
        generations=[g for _, g in wanted],
        source="teacher" if teacher else "sample",
    )
    return [e.with_target(truncate(e.prompt, e.target, train.max_length)[1]) for e in sampled]
