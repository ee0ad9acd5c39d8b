"""Host-side bookkeeping of the decode engine: one :class:`Row` per sequence in a slot.

The device runs several decode steps between two reads; a read hands each row the tokens its
slot produced since the last one, and the row decides where the sequence ended, exactly as the
per-token loop of :func:`.hf_decode.decode_batch` would have: at the first EOS, at the first
token after which the decoded text contains a stop string, or at ``max_tokens``. Tokens the
device produced past that point are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import FinishReason
from .hf_decode import SequenceSpec


@dataclass
class Row:
    """One sequence being decoded: ``index`` into the engine call's specs."""

    index: int
    spec: SequenceSpec
    tokens: list[int] = field(default_factory=list)
    read: int = 0  # tokens of the slot already read from the device
    finish: FinishReason | None = None
    stop_at: int | None = None
    searched: int = 0  # characters of text already searched for stop strings

    @property
    def remaining(self) -> int:
        return self.spec.max_tokens - self.read

    def absorb(self, produced: Sequence[int], tokenizer: Any, eos_ids: set[int]) -> bool:
        """Take the slot's newly produced tokens (ints); ``True`` once the sequence is finished."""
        self.read += len(produced)
        start = len(self.tokens)
        room = self.spec.max_tokens - start
        eos = False
        if eos_ids.isdisjoint(produced[:room]):
            self.tokens.extend(produced[:room])
        else:
            for token in produced[:room]:
                self.tokens.append(token)
                if token in eos_ids:
                    eos = True
                    break
        checked = len(self.tokens) - (1 if eos else 0)  # the EOS token ends before a stop check
        if self.spec.stop and checked > start:
            hit = self._first_stop(start, checked, tokenizer)
            if hit is not None:
                end, self.stop_at = hit
                del self.tokens[end:]
                self.finish = "stop"
                return True
        if eos:
            self.finish = "stop"
        elif len(self.tokens) >= self.spec.max_tokens:
            self.finish = "length"
        return self.finish is not None

    def _first_stop(self, start: int, end: int, tokenizer: Any) -> tuple[int, int] | None:
        """The first token count in ``(start, end]`` after which the text holds a stop string,
        with the string's character index; the same search the per-token loop makes."""
        stops = self.spec.stop
        longest = max(len(s) for s in stops)
        text = tokenizer.decode(self.tokens[:end], skip_special_tokens=True)
        begin = max(0, self.searched - longest + 1)
        if all(text.find(s, begin) < 0 for s in stops):
            self.searched = len(text)
            return None
        for count in range(start + 1, end + 1):  # a hit: find the token that completed it
            text = tokenizer.decode(self.tokens[:count], skip_special_tokens=True)
            begin = max(0, self.searched - longest + 1)
            hits = [i for i in (text.find(s, begin) for s in stops) if i >= 0]
            self.searched = len(text)
            if hits:
                return count, min(hits)
        return None


def prefill_units(
    slots: Sequence[int], prompts: Sequence[Sequence[int]], chunk: int
) -> list[list[tuple[int, int, list[int]]]]:
    """Waves of ``(slot, offset, token ids)`` chunks that write every prompt's keys but its
    last token's (the first decode step feeds that one). Wave ``w`` holds chunk ``w`` of each
    prompt, so a chunk always runs after the chunks before it."""
    waves: list[list[tuple[int, int, list[int]]]] = []
    for slot, prompt in zip(slots, prompts, strict=True):
        body = list(prompt[:-1])
        for wave, offset in enumerate(range(0, len(body), chunk)):
            if wave == len(waves):
                waves.append([])
            waves[wave].append((slot, offset, body[offset : offset + chunk]))
    return waves
