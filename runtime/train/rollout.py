"""MiniLLM's rollouts: token by token from the student, or from its mixture with the teacher.

At each position the next token is drawn from

    (1 − α) · softmax(z_S / T) + α · softmax(z_T / T)

(``teacher_mix = α``, ``sample_temperature = T``; α = 0 is the student's own distribution and
the teacher is then not run). Each row draws from its own generator, seeded by
``sample_seed(seed, rollout, row, 0, "minillm")``: a row's sample is a pure function of the
seed, the rollout's index, the row and the weights the rollout starts from, whichever process
draws it and whatever it drew before, so a run resumed mid-rollout draws the same tokens. A
row stops after an EOS (kept as its last token) or ``max_new_tokens`` tokens. Probabilities
are taken in float64 on the CPU and drawn there, so the draw itself does not depend on the
device's kernels.

Both models decode with their key/value caches, one row at a time (no padding to get right).
A scored rollout (:class:`Rollout`) is kept as a file until no checkpoint needs it.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .examples import Batch, Example
from .onpolicy import sample_seed

STREAM = "minillm"
"""The name of the rollouts' seed stream (never shared with other samples' seeds)."""
ROLLOUTS = "rollouts"
"""The folder of the scored rollouts, in a train's progress folder."""


def mixture(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """The sampling distribution over the next token (``[..., V]``, float64, on the CPU)."""
    student = torch.softmax(student_logits.detach().double().cpu() / temperature, dim=-1)
    if alpha <= 0.0 or teacher_logits is None:
        return student
    teacher = torch.softmax(teacher_logits.detach().double().cpu() / temperature, dim=-1)
    return (1.0 - alpha) * student + alpha * teacher


def draw(probs: torch.Tensor, generator: torch.Generator) -> int:
    """One token id drawn from ``probs`` (``[V]``, CPU) with ``generator``."""
    return int(torch.multinomial(probs, 1, generator=generator))


class Decoder:
    """One model's incremental forward: the prompt first, then a token at a time, through its
    key/value cache; returns the next token's logits (``[V]``, the first ``width`` rows)."""

    def __init__(self, model: nn.Module, width: int | None):
        self.model, self.width = model, width
        self.device = next(model.parameters()).device
        parameters = inspect.signature(model.forward).parameters
        self.keyword = "cache" if "cache" in parameters else "past_key_values"  # by version
        self.past = None

    def start(self, prompt: list[int]) -> torch.Tensor:
        self.past = None
        return self._forward(prompt)

    def step(self, token: int) -> torch.Tensor:
        return self._forward([token])

    def _forward(self, ids: list[int]) -> torch.Tensor:
        inputs = torch.tensor([ids], dtype=torch.long, device=self.device)
        out = self.model(input_ids=inputs, use_cache=True, **{self.keyword: self.past})
        returned = getattr(out, "cache", None)
        self.past = returned if returned is not None else out.past_key_values
        logits = out.logits[0, -1]
        return logits if self.width is None else logits[: self.width]


def sample_row(
    student: Decoder,
    teacher: Decoder | None,
    prompt: list[int],
    *,
    seed: int,
    alpha: float,
    temperature: float,
    max_new_tokens: int,
    eos_ids: set[int],
) -> list[int]:
    """The tokens one row draws (module docstring); ``seed``: its generator's seed."""
    generator = torch.Generator().manual_seed(seed)
    mixing = alpha > 0.0 and teacher is not None
    s_logits = student.start(prompt)
    t_logits = teacher.start(prompt) if mixing and teacher is not None else None
    tokens: list[int] = []
    while len(tokens) < max_new_tokens:
        token = draw(mixture(s_logits, t_logits, alpha, temperature), generator)
        tokens.append(token)
        if token in eos_ids or len(tokens) == max_new_tokens:
            break
        s_logits = student.step(token)
        if mixing and teacher is not None:
            t_logits = teacher.step(token)
    return tokens


@torch.no_grad()
def sample_rollouts(
    student: nn.Module,
    teacher: nn.Module | None,
    prompts: list[tuple[int, list[int]]],
    *,
    seed: int,
    rollout: int,
    alpha: float,
    temperature: float,
    max_new_tokens: int,
    eos_ids: set[int],
    width: int | None = None,
    on_row: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """The tokens of each ``(row, prompt_ids)`` of rollout ``rollout``, in order. The models
    run in eval mode (their modes are restored after); ``on_row(row)`` is called after each
    row is drawn."""
    models = [m for m in (student, teacher) if m is not None]
    modes = [m.training for m in models]
    for model in models:
        model.eval()
    s_decoder = Decoder(student, width)
    t_decoder = Decoder(teacher, width) if teacher is not None and alpha > 0 else None
    out = []
    try:
        for row, prompt in prompts:
            out.append(
                sample_row(
                    s_decoder,
                    t_decoder,
                    prompt,
                    seed=sample_seed(seed, rollout, row, 0, STREAM),
                    alpha=alpha,
                    temperature=temperature,
                    max_new_tokens=max_new_tokens,
                    eos_ids=eos_ids,
                )
            )
            if on_row is not None:
                on_row(row)
    finally:
        for model, mode in zip(models, modes, strict=True):
            model.train(mode)
    return out


@dataclass
class Rollout:
    """One rollout batch of this process: its rows (prompt + sampled target) and, per row,
    one value per sampled token of π_old, the importance weights and the advantages;
    ``stats``: what its steps record of it (summed over processes)."""

    index: int
    examples: list[Example]
    old: list[torch.Tensor]
    weights: list[torch.Tensor]
    advantages: list[torch.Tensor]
    stats: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "index": self.index,
            "rows": [e.row for e in self.examples],
            "prompts": [e.prompt for e in self.examples],
            "targets": [e.target for e in self.examples],
            "old": self.old,
            "weights": self.weights,
            "advantages": self.advantages,
            "stats": self.stats,
        }
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            torch.save(data, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)

    def row_digests(self) -> list[tuple[int, str]]:
        """``(row, hash)`` of each row: its prompt and sampled tokens (the scores, float sums
        whose last bits depend on how rows are batched, are not hashed)."""
        return [(e.row, digest_of([repr((e.row, e.prompt, e.target))])) for e in self.examples]

    def digest(self) -> str:
        """A hash of the rows' hashes in row order: the same for a rollout however its rows
        were shared out among processes (:func:`combined_digest` of every process's)."""
        return combined_digest([self.row_digests()])

    @classmethod
    def load(cls, path: Path) -> Rollout:
        data = torch.load(path, map_location="cpu", weights_only=False)
        examples = [
            Example(p, t, row=r)
            for r, p, t in zip(data["rows"], data["prompts"], data["targets"], strict=True)
        ]
        return cls(
            data["index"], examples, data["old"], data["weights"], data["advantages"], data["stats"]
        )


def spread(examples: list[Example], values: list[torch.Tensor], batch: Batch) -> torch.Tensor:
    """Per-token values of each row laid out as ``batch.labels`` (0 where nothing counts)."""
    out = torch.zeros(batch.labels.shape, dtype=torch.float32)
    for b, (example, value) in enumerate(zip(examples, values, strict=True)):
        start = len(example.prompt) - 1
        out[b, start : start + len(example.target)] = value.float()
    return out.to(batch.labels.device)


def per_row(examples: list[Example], values: torch.Tensor) -> list[torch.Tensor]:
    """The inverse of :func:`spread`: each row's values over its sampled tokens (CPU)."""
    out = []
    for b, example in enumerate(examples):
        start = len(example.prompt) - 1
        out.append(values[b, start : start + len(example.target)].detach().float().cpu())
    return out


def combined_digest(per_process: list[list[tuple[int, str]]]) -> str:
    """One hash of every process's ``(row, hash)`` pairs, taken in row order."""
    pairs = sorted(pair for rows in per_process for pair in rows)
    return digest_of([f"{row}:{value}" for row, value in pairs])


def digest_of(parts: list) -> str:
    """The first 16 hex digits of the SHA-256 of ``parts`` (bytes or text), in order."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part if isinstance(part, bytes) else str(part).encode())
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]
