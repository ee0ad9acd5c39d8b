"""Conversations as training sequences: the tokens of the rendered chat template, and which of
them the student learns.

A conversation ``[{role, content}, ...]`` is rendered whole by the tokenizer's own chat template
(``apply_chat_template``) and tokenized once. Which characters belong to an assistant turn is
derived by rendering prefixes, so templates without generation markers work too: turn ``i``
(an assistant turn) spans from the end of ``conversation[:i]`` rendered *with* the generation
prompt (the assistant header is the prompt's, not learned) to the end of ``conversation[:i+1]``
rendered without it (the turn's text and what closes it, such as ``<|im_end|>`` or
``<|eot_id|>``, so the student learns to stop). Both renderings must be prefixes of the whole
one; a template that writes earlier turns differently once later ones follow (one that drops
past reasoning, say) cannot be split this way and is an error naming the turn.

A template with ``{% generation %}`` markers is checked against them: a token it marks as the
assistant's outside every derived span is an error.

A token is learned when it starts inside a learned span (character offsets of a fast
tokenizer; a slow one counts the tokens of the prefixes instead). ``train_on`` picks the spans:
``assistant`` every assistant turn, ``last_assistant`` the last one, ``all`` every token of the
rendering after the first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .examples import Example, truncate

TRAIN_ON = ("assistant", "last_assistant", "all")


class ConversationError(ValueError):
    """A conversation the chat template cannot be split into learned spans."""


def render(
    tokenizer, turns: list[dict], *, generation: bool, args: Mapping[str, Any] | None = None
) -> str:
    """``turns`` through the tokenizer's chat template, as text (``generation``: followed by
    the assistant's header, as when the model is asked to answer)."""
    from jinja2 import TemplateError

    try:
        text = tokenizer.apply_chat_template(
            list(turns), tokenize=False, add_generation_prompt=generation, **dict(args or {})
        )
    except TemplateError as error:  # the template's own checks (`raise_exception`) included
        raise ConversationError(f"the chat template failed: {error}") from None
    if not isinstance(text, str):
        raise ConversationError(f"the chat template rendered {type(text).__name__}, not text")
    return text


def learned_spans(
    tokenizer, turns: list[dict], train_on: str, args: Mapping[str, Any] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """``(text, spans)``: the whole rendering and the character spans ``[start, end)`` learned."""
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {', '.join(TRAIN_ON)}, got {train_on!r}")
    text = render(tokenizer, turns, generation=False, args=args)
    if train_on == "all":
        return text, [(0, len(text))]
    spans = []
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        before = _prefix(tokenizer, turns[:i], args)
        after = render(tokenizer, turns[: i + 1], generation=False, args=args)
        if not (text.startswith(after) and after.startswith(before)):
            raise ConversationError(
                f"the chat template writes the turns before turn {i + 1} differently once it "
                "follows; its assistant spans cannot be derived by rendering prefixes"
            )
        if len(after) > len(before):
            spans.append((len(before), len(after)))
    if train_on == "last_assistant":
        spans = spans[-1:]
    return text, spans


def _prefix(tokenizer, turns: list[dict], args) -> str:
    try:
        return render(tokenizer, turns, generation=True, args=args)
    except ConversationError:  # a template reading messages[0] fails on no turns
        if turns:
            raise
        return ""


def encode_conversation(
    tokenizer, turns: list[dict], train_on: str = "assistant", args: Mapping[str, Any] | None = None
) -> tuple[list[int], list[bool]]:
    """``(ids, learned)``: the token ids of the rendered conversation (the template writes its
    own special tokens) and, per token, whether the student learns it. A template with
    ``{% generation %}`` markers is checked against them: every token it marks as the
    assistant's lies in an assistant span."""
    last = train_on == "last_assistant"
    text, spans = learned_spans(tokenizer, turns, "assistant" if last else train_on, args)
    ids, flags = _flags(tokenizer, text, spans)
    if train_on != "all":
        _verify_markers(tokenizer, turns, ids, flags, args)
    if last:
        flags = _flags(tokenizer, text, spans[-1:])[1]
    if train_on == "all" and flags:
        flags[0] = False  # nothing predicts the first token
    return ids, flags


def _flags(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[bool]]:
    """The ids of ``text`` and whether each token starts inside one of ``spans``."""
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        starts = [start for start, _ in encoded["offset_mapping"]]
        return list(encoded["input_ids"]), [any(a <= s < b for a, b in spans) for s in starts]
    ids = _ids(tokenizer, text)
    flags = [False] * len(ids)
    for a, b in spans:
        for t in range(len(_ids(tokenizer, text[:a])), len(_ids(tokenizer, text[:b]))):
            flags[t] = True
    return ids, flags


_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


def _verify_markers(tokenizer, turns, ids: list[int], assistant: list[bool], args) -> None:
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or not _MARKER.search(template):
        return
    marked = tokenizer.apply_chat_template(
        list(turns),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        **dict(args or {}),
    )
    if list(marked["input_ids"]) != ids:
        return  # tokenized another way: nothing to compare token by token
    for t, (mark, ours) in enumerate(zip(marked["assistant_masks"], assistant, strict=True)):
        if mark and not ours:
            raise ConversationError(
                f"the chat template marks token {t} ({tokenizer.decode([ids[t]])!r}) as the "
                "assistant's, outside the assistant turns that rendering its prefixes gives"
            )


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def conversation_example(
    index: int,
    turns: list[dict],
    tokenizer,
    *,
    train_on: str,
    max_length: int,
    args: Mapping[str, Any] | None = None,
) -> Example:
    """The :class:`Example` of one conversation: its prompt is everything before the first
    learned token, its target the rest, with ``learn`` marking the learned target tokens."""
    if not turns:
        raise ConversationError("the conversation has no turns")
    ids, learned = encode_conversation(tokenizer, turns, train_on, args)
    first = next((t for t, flag in enumerate(learned) if flag), len(ids))
    first = max(1, first)
    prompt, target = truncate(ids[:first], ids[first:], max_length)
    return Example(prompt, target, row=index, learn=learned[first : first + len(target)])
