"""Training examples: token ids of prompt and target (and of a cached teacher), padded batches,
and the order in which rows are visited.

An :class:`Example` is one sequence ``prompt + target``; only target tokens are learned. A
:class:`Batch` is a right-padded block of examples in *shifted* coordinates: ``labels[b, t]`` is
the token that position ``t`` predicts (the input token at ``t + 1``) when that token belongs to
the target, else ``IGNORE`` (−100). Logits ``[B, L, V]`` of the model line up with ``labels`` as
``logits[:, :-1]``. ``kd_labels`` equals ``labels`` where a teacher distribution exists for the
position (always with an online teacher; only the cached rows with a cached one), so a term such
as ``sft`` can learn a token the cache has no teacher row for (a truncated row, an appended EOS)
while the divergence skips it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

import numpy as np
import torch

IGNORE = -100


@dataclass
class Example:
    """One training sequence. ``topk_ids``/``topk_logprobs`` (``[T', k]``, T' ≤ len(target))
    hold the cached teacher's distribution for target tokens ``0 .. T'-1``. ``learn`` (one flag
    per target token; ``None``: all of them) marks the target tokens learned: a conversation's
    target holds the assistant's turns and the user turns between them."""

    prompt: list[int]
    target: list[int]
    topk_ids: np.ndarray | None = None
    topk_logprobs: np.ndarray | None = None
    row: int = -1
    learn: list[bool] | None = None
    sample_prompt: list[int] | None = None
    """What the student answers when it samples this row's target (on-policy), when that is
    not ``prompt``: a conversation's turns up to its last user turn."""

    @property
    def tokens(self) -> int:
        return len(self.target) if self.learn is None else sum(self.learn)

    def with_target(self, target: list[int]) -> Example:
        """The same prompt with another target (an on-policy sample); no cached teacher rows."""
        return replace(self, target=list(target), topk_ids=None, topk_logprobs=None, learn=None)

    def for_sampling(self) -> Example:
        """The example whose prompt the student answers on-policy (target unchanged)."""
        if self.sample_prompt is None:
            return self
        return replace(self, prompt=list(self.sample_prompt), sample_prompt=None)


@dataclass
class Pair:
    """A preference pair for ``dpo``: one prompt, a chosen and a rejected response."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    row: int = -1


@dataclass
class Batch:
    """Right-padded tensors; ``labels``, ``kd_labels`` and the top-k are shifted (``[B, L-1]``)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    kd_labels: torch.Tensor
    topk_ids: torch.Tensor | None = None
    topk_logprobs: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)
    position_ids: torch.Tensor | None = None
    """Set on a packed batch (:mod:`.packing`): one row holding several sequences, each with
    positions from 0; ``attention_mask`` is then all ones and attention stays within each
    sequence."""

    @property
    def tokens(self) -> int:
        """Positions that count for the token-level terms."""
        return int((self.labels != IGNORE).sum())

    def to(self, device: torch.device) -> Batch:
        move = {
            k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()
        }
        return Batch(**move)


def truncate(prompt: list[int], target: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Fit ``prompt + target`` into ``max_length`` tokens: the target loses its end first; a
    prompt longer than half the budget keeps its last tokens so some target still fits."""
    if len(prompt) + len(target) <= max_length:
        return prompt, target
    if len(prompt) > max_length // 2:
        prompt = prompt[-max(1, max_length // 2) :] if len(target) else prompt[-max_length:]
    return prompt, target[: max(0, max_length - len(prompt))]


def encode(
    tokenizer, prompt, target: str, *, chat: bool, system: str | None = None, args=None
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, target_ids)`` as the teachers encode them (same rendering and chat
    template), the target ending with EOS so the student learns to stop; a prompt that encodes
    to nothing is given BOS (or EOS) to condition on."""
    from ..teachers.prompts import encode_pair

    prompt_ids, target_ids = encode_pair(tokenizer, prompt, target, system, chat=chat, args=args)
    if not prompt_ids:
        start = tokenizer.bos_token_id
        prompt_ids = [start if start is not None else tokenizer.eos_token_id]
    return prompt_ids, with_eos(target_ids, tokenizer.eos_token_id)


def with_eos(target: list[int], eos_id: int | None) -> list[int]:
    if eos_id is None or (target and target[-1] == eos_id):
        return list(target)
    return [*target, eos_id]


def collate(examples: list[Example], pad_id: int, *, kd_everywhere: bool = True) -> Batch:
    """Right-pad ``examples`` into a :class:`Batch`. ``kd_everywhere``: every target position has
    a teacher distribution (online teacher); otherwise only the cached rows do."""
    width = max(len(e.prompt) + len(e.target) for e in examples)
    size = len(examples)
    ids = torch.full((size, width), pad_id, dtype=torch.long)
    mask = torch.zeros((size, width), dtype=torch.long)
    labels = torch.full((size, width - 1), IGNORE, dtype=torch.long)
    kd_labels = torch.full((size, width - 1), IGNORE, dtype=torch.long)
    cached = [e for e in examples if e.topk_ids is not None]
    k = cached[0].topk_ids.shape[1] if cached else 0
    topk_ids = topk_lps = None
    if k:
        # Filler rows: k distinct ids at log-prob 0 (a valid distribution, never counted).
        topk_ids = torch.arange(k, dtype=torch.long).expand(size, width - 1, k).clone()
        topk_lps = torch.zeros((size, width - 1, k), dtype=torch.float32)
    for b, example in enumerate(examples):
        start, length = len(example.prompt), len(example.target)
        sequence = example.prompt + example.target
        ids[b, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[b, : len(sequence)] = 1
        if not length:
            continue
        span = slice(start - 1, start - 1 + length)
        learned = torch.tensor(example.target, dtype=torch.long)
        if example.learn is not None:  # a conversation: the tokens of other turns are not learned
            learned[~torch.tensor(example.learn, dtype=torch.bool)] = IGNORE
        labels[b, span] = learned
        if kd_everywhere:
            kd_labels[b, span] = labels[b, span]
        elif example.topk_ids is not None:
            rows = min(length, example.topk_ids.shape[0])
            cover = slice(start - 1, start - 1 + rows)
            kd_labels[b, cover] = labels[b, cover]
            topk_ids[b, cover] = torch.from_numpy(np.asarray(example.topk_ids[:rows], np.int64))
            topk_lps[b, cover] = torch.from_numpy(
                np.asarray(example.topk_logprobs[:rows], np.float32)
            )
    return Batch(ids, mask, labels, kd_labels, topk_ids, topk_lps)


def collate_pairs(pairs: list[Pair], pad_id: int) -> Batch:
    """The chosen responses (rows ``0 .. B-1``) then the rejected ones (``B .. 2B-1``), each
    after its prompt; ``labels`` mark the response tokens."""
    sequences = [Example(p.prompt, p.chosen) for p in pairs]
    sequences += [Example(p.prompt, p.rejected) for p in pairs]
    return collate(sequences, pad_id)


@dataclass(frozen=True)
class DataOrder:
    """Which rows each optimizer step reads: epoch ``e`` visits the rows in a permutation seeded
    by ``(seed, e)``, ``batch`` rows per step (the last step of an epoch may have fewer). A pure
    function of the step, so the data position of a checkpoint is its step."""

    rows: int
    batch: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.rows / self.batch))

    def permutation(self, epoch: int) -> list[int]:
        order = list(range(self.rows))
        random.Random(f"kdlang-train:{self.seed}:{epoch}").shuffle(order)
        return order

    def step_rows(self, step: int) -> list[int]:
        epoch, offset = divmod(step, self.steps_per_epoch)
        return self.permutation(epoch)[offset * self.batch : (offset + 1) * self.batch]

    def position(self, step: int) -> dict[str, int]:
        epoch, offset = divmod(step, self.steps_per_epoch)
        return {"epoch": epoch, "batch_in_epoch": offset}


def micro_batches(items: list, count: int) -> list[list]:
    """``items`` split into at most ``count`` consecutive, nearly equal, non-empty parts."""
    count = max(1, min(count, len(items)))
    size, extra = divmod(len(items), count)
    parts, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        parts.append(items[start:end])
        start = end
    return [p for p in parts if p]
