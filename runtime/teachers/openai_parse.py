"""Reading OpenAI-compatible response bodies into :class:`Generation` and :class:`TopK`.

We parse the raw JSON ourselves rather than the client's typed objects: servers differ in the
fields they add or leave out, and a body we cannot use must become a retryable
:class:`MalformedResponse` instead of an ``AttributeError`` deep inside a stage. Missing
log-probs are not malformed: the server does not offer them, which no retry changes
(:class:`TeacherCapabilityError`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import torch

from .base import FinishReason, Generation, TeacherCapabilityError, TopK
from .openai_retry import MalformedResponse


def load_body(text: str) -> dict[str, Any]:
    """The JSON object in ``text``, or :class:`MalformedResponse`."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise MalformedResponse(f"body is not JSON ({error.msg} at char {error.pos})") from None
    if not isinstance(data, dict):
        raise MalformedResponse(f"body is a JSON {type(data).__name__}, expected an object")
    return data


def parse_generations(
    data: dict[str, Any], *, chat: bool, top_logprobs: int, stop: Sequence[str] | None
) -> list[Generation]:
    """All choices of a chat or completions response, ordered by their ``index``.

    Text is cut at the first ``stop`` string if the server left one in (servers differ), so
    every backend returns text without it. Usage counts are shared out over the choices when
    the server reports only totals.
    """
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse("no 'choices' list in the response")
    if not all(isinstance(c, dict) for c in choices):
        raise MalformedResponse("a choice is not an object")
    choices = sorted(
        choices, key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0
    )
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    prompt_tokens = _int(usage.get("prompt_tokens"))
    completion_total = _int(usage.get("completion_tokens"))
    out = []
    for choice in choices:
        text = _choice_text(choice, chat)
        finish = _finish_reason(choice.get("finish_reason"))
        for s in stop or ():
            cut = text.find(s)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        topk = None
        if top_logprobs:
            topk = (
                _chat_topk(choice.get("logprobs"), top_logprobs)
                if chat
                else _completion_topk(choice.get("logprobs"), top_logprobs, None)
            )
        completion = len(topk) if topk is not None else completion_total // len(choices)
        out.append(Generation(text, finish, prompt_tokens, completion, topk))
    return out


def count_null_content(data: dict[str, Any], *, chat: bool) -> int:
    """Choices of a parsed response whose text is ``null`` (a refusal, a filtered reply): they
    become ``""`` and are counted in the teacher's ``null_content``."""
    count = 0
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        holder = choice.get("message") if chat else choice
        if isinstance(holder, dict) and holder.get("text" if not chat else "content") is None:
            count += 1
    return count


def parse_echo_scores(
    data: dict[str, Any], *, prompt_chars: int, target_chars: int, k: int
) -> TopK:
    """Top-k log-probs of the target tokens from a completions response made with
    ``echo=True`` on ``prompt + target``. Target tokens are those whose text offset falls in
    ``[prompt_chars, prompt_chars + target_chars)``: a token straddling the boundary belongs to
    the prompt."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse("no 'choices' list in the response")
    window = (prompt_chars, prompt_chars + target_chars)
    return _completion_topk(choices[0].get("logprobs"), k, window)


def _choice_text(choice: dict[str, Any], chat: bool) -> str:
    if chat:
        message = choice.get("message")
        if not isinstance(message, dict):
            raise MalformedResponse("a chat choice has no 'message' object")
        content = message.get("content")
    else:
        content = choice.get("text")
    if content is None:
        return ""  # a refusal or a filtered completion: counted (count_null_content), not broken
    if not isinstance(content, str):
        raise MalformedResponse(f"completion text is a {type(content).__name__}, expected a string")
    return content


def _finish_reason(value: object) -> FinishReason:
    if value in ("length", "content_filter"):
        return value  # type: ignore[return-value]
    return "stop"


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _missing(what: str) -> TeacherCapabilityError:
    return TeacherCapabilityError(
        f"the server returned no {what}; it does not offer top-k log-probs for this endpoint "
        "(use a server that does, e.g. vLLM, or a white-box hf teacher)"
    )


def _chat_topk(logprobs: object, k: int) -> TopK:
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        raise _missing("log-probs (choices[].logprobs.content)")
    rows = []
    for entry in content:
        if not isinstance(entry, dict) or not isinstance(entry.get("top_logprobs"), list):
            raise _missing("top_logprobs for a generated token")
        alternatives = [
            (a.get("token", ""), a.get("logprob"))
            for a in entry["top_logprobs"]
            if isinstance(a, dict)
        ]
        rows.append((entry.get("token", ""), entry.get("logprob"), alternatives))
    return _topk(rows, k)


def _completion_topk(logprobs: object, k: int, window: tuple[int, int] | None) -> TopK:
    if not isinstance(logprobs, dict):
        raise _missing("log-probs (choices[].logprobs)")
    tokens, chosen, tops = (
        logprobs.get("tokens"),
        logprobs.get("token_logprobs"),
        logprobs.get("top_logprobs"),
    )
    offsets = logprobs.get("text_offset")
    if not isinstance(tokens, list) or not isinstance(chosen, list) or not isinstance(tops, list):
        raise _missing("token log-probs (tokens, token_logprobs, top_logprobs)")
    if not len(tokens) == len(chosen) == len(tops):
        raise MalformedResponse("log-prob lists of different lengths")
    positions = range(len(tokens))
    if window is not None:
        if not isinstance(offsets, list) or len(offsets) != len(tokens):
            raise _missing("text offsets needed to find the target tokens")
        positions = [i for i in positions if window[0] <= offsets[i] < window[1]]
    rows = []
    for i in positions:
        top = tops[i]
        if not isinstance(top, dict) or chosen[i] is None:
            raise _missing("top log-probs for every scored token")
        rows.append((tokens[i], chosen[i], list(top.items())))
    return _topk(rows, k)


def _topk(rows: list[tuple[str, object, list[tuple[str, object]]]], k: int) -> TopK:
    values = torch.full((len(rows), k), -math.inf, dtype=torch.float32)
    names: list[list[str]] = []
    targets, target_lps = [], []
    for t, (token, logprob, alternatives) in enumerate(rows):
        ranked = sorted(((str(a), _float(b)) for a, b in alternatives), key=lambda x: -x[1])[:k]
        names.append([a for a, _ in ranked] + [""] * (k - len(ranked)))
        values[t, : len(ranked)] = torch.tensor([b for _, b in ranked], dtype=torch.float32)
        targets.append(str(token))
        target_lps.append(_float(logprob))
    return TopK(
        logprobs=values,
        target_logprobs=torch.tensor(target_lps, dtype=torch.float32),
        tokens=names,
        target_tokens=targets,
    )


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedResponse(f"a log-prob is {value!r}, expected a number")
    return float(value)


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")
