"""The one interface every teacher backend implements.

Stages (``label``, ``expand``, ``curate``, ``judge``, ``teacher_logits``) and training talk to a
teacher only through :class:`Teacher`: ``generate`` for text, ``topk_logprobs`` for cached logit
distillation, ``stats`` for the plan/report, ``close`` to free resources. White-box backends also
expose ``model``, ``tokenizer`` and ``logits`` so training can run the teacher online.

This module imports neither torch nor any client library; backends import theirs lazily.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

Message = dict[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""

Prompt = str | list[Message]
"""A plain prompt text, or a chat conversation that the backend renders (chat template/API)."""

FinishReason = Literal["stop", "length"]


class TeacherError(RuntimeError):
    """A teacher could not produce what was asked. Messages never contain secrets."""


class TeacherCapabilityError(TeacherError):
    """The backend or server cannot do what was asked (e.g. no log-probs offered)."""


class TeacherRequestError(TeacherError):
    """Requests failed for good (retries exhausted or a non-retryable error).

    ``failed`` maps each failed request index to a one-line reason; ``not_attempted`` lists the
    indices that were never sent because the call stopped after the first failure.
    """

    def __init__(self, failed: dict[int, str], not_attempted: Sequence[int] = ()) -> None:
        self.failed = dict(sorted(failed.items()))
        self.not_attempted = list(not_attempted)
        lines = [f"request {i}: {reason}" for i, reason in self.failed.items()]
        tail = f"; {len(self.not_attempted)} request(s) not attempted" if self.not_attempted else ""
        super().__init__(
            f"{len(self.failed)} teacher request(s) failed{tail}:\n  " + "\n  ".join(lines)
        )


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to complete ``n`` times.

    Sampling contract shared by all backends: ``temperature == 0`` is greedy; otherwise
    sampling from the ``top_k`` most likely tokens (``0``: all; of tokens tied at the k-th
    probability the lower ids) and, of those renormalized, the nucleus of mass ``top_p``. Sample ``i`` of a request with seed ``s`` is drawn with seed
    ``s + i`` (so ``n`` samples equal ``n`` single-sample requests seeded ``s .. s+n-1``).
    Generation ends at EOS, at the first occurrence of any ``stop`` string (the stop string is
    not part of the text), or after ``max_tokens`` tokens. ``top_logprobs > 0`` also returns,
    per generated token, the teacher's top-k log-probs (see :attr:`Generation.logprobs`).
    """

    prompt: Prompt
    system: str | None = None
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0
    stop: tuple[str, ...] | list[str] | None = None
    top_logprobs: int = 0
    top_k: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.top_logprobs < 0:
            raise ValueError(f"top_logprobs must be >= 0, got {self.top_logprobs}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: off), got {self.top_k}")


@dataclass
class TopK:
    """Top-k next-token log-probs of the teacher, one row per target (or generated) token.

    Row ``t`` describes the distribution the teacher predicts *for* token ``t`` (from the
    context before it), at temperature 1, computed in float32:

    - ``logprobs``: float tensor ``[T, k]``, sorted descending.
    - ``ids``: int32 tensor ``[T, k]`` of token ids (white-box teachers), else ``None``.
    - ``tokens``: ``T`` lists of ``k`` token strings (black-box servers), else ``None``.
      Rows a server returned shorter are padded with ``""`` at log-prob ``-inf``.
    - ``target_ids``: int32 tensor ``[T]`` of the realised tokens (white-box), else ``None``;
      ``target_tokens``: their strings (black-box), else ``None``.
    - ``target_logprobs``: float32 tensor ``[T]``, log-prob of each realised token.
    """

    logprobs: torch.Tensor
    target_logprobs: torch.Tensor
    ids: torch.Tensor | None = None
    target_ids: torch.Tensor | None = None
    tokens: list[list[str]] | None = None
    target_tokens: list[str] | None = None

    def __len__(self) -> int:
        return int(self.logprobs.shape[0])


@dataclass
class Generation:
    """One completion: its text (stop string and EOS removed) and token counts."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    logprobs: TopK | None = None


@dataclass
class TeacherStats:
    """Counters accumulated over a teacher's life; safe to log (no prompts, no secrets).

    ``requests``: requests (or scored prompts) completed; ``calls``: backend calls made (HTTP
    requests including retries, or model batches); ``retries``: calls that repeated a failed
    one; ``failures``: requests given up on; ``non_json_replies``: replies whose content-type
    was not JSON although the body was read as JSON; ``null_content``: completions whose text
    was ``null`` (kept as ``""``); ``failovers``: retries sent at once to another server of a
    pool (``base_url = [...]``) after a failure.
    """

    requests: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: int = 0
    non_json_replies: int = 0
    null_content: int = 0
    failovers: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


OnResult = Callable[[int, list[Generation]], None]
"""Called as ``on_result(index, generations)`` as soon as request ``index`` has finished."""


class Teacher(ABC):
    """A model that writes text for distillation, and (if white-box) exposes its logits.

    ``white_box`` is a class attribute: ``True`` when the backend holds the model itself and
    offers ``model``, ``tokenizer`` and ``logits(input_ids, attention_mask)``.
    """

    white_box: bool = False

    def __init__(self) -> None:
        self.stats = TeacherStats()

    @abstractmethod
    def generate(
        self, requests: Sequence[GenerationRequest], *, on_result: OnResult | None = None
    ) -> list[list[Generation]]:
        """Complete every request; result ``i`` holds the ``requests[i].n`` generations.

        ``on_result`` fires once per request as it finishes (order not guaranteed), so a caller
        can persist progress. Raises :class:`TeacherRequestError` naming the failed indices if
        any request fails for good; results already passed to ``on_result`` stay valid.
        """

    @abstractmethod
    def topk_logprobs(
        self,
        prompts: Sequence[Prompt],
        targets: Sequence[str],
        k: int,
        *,
        systems: Sequence[str | None] | None = None,
    ) -> list[TopK]:
        """Score ``targets[i]`` as the continuation of ``prompts[i]``; one :class:`TopK` each.

        The prompt is rendered exactly as for ``generate`` (chat template or plain text, with
        ``systems[i]`` as system prompt); the target is tokenized on its own and appended.
        Row ``t`` of the result is the teacher's distribution for target token ``t``.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release models, clients and threads. The teacher is unusable afterwards."""

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
