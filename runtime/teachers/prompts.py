"""How a prompt (text or chat messages, plus an optional system prompt) becomes model input.

One place for it, because the teacher that writes or scores a target and the student that
trains on it must see exactly the same tokens: ``teacher_logits`` caches top-k log-probs per
target token, and training lines the student's positions up with them through
:func:`encode_pair`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Message, Prompt


def to_messages(prompt: Prompt, system: str | None = None) -> list[Message]:
    """The chat conversation for ``prompt``: a text becomes one user message; ``system`` (if
    given) is put first. A conversation that already has a system message plus ``system`` is
    ambiguous and rejected."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
        for m in messages:
            if "role" not in m or "content" not in m:
                raise ValueError(f"a chat message needs 'role' and 'content', got keys {sorted(m)}")
    if system is not None:
        if messages and messages[0]["role"] == "system":
            raise ValueError("system prompt given twice: as `system` and as a system message")
        messages.insert(0, {"role": "system", "content": system})
    return messages


def render_plain(prompt: Prompt, system: str | None = None) -> str:
    """Plain prompt text for models and endpoints without chat formatting.

    ``system`` (or a leading system message) is prepended, separated by a blank line. A
    conversation is accepted only if it is a single user turn (after an optional system
    message): several turns cannot be written as plain text without inventing a format.
    """
    messages = to_messages(prompt, system)
    roles = [m["role"] for m in messages]
    if roles not in (["user"], ["system", "user"]):
        raise ValueError(
            f"a conversation with roles {roles} needs a chat template (the model has none); "
            "pass a plain prompt or set chat_template"
        )
    return "\n\n".join(m["content"] for m in messages)


def render_prompt(
    tokenizer: Any,
    prompt: Prompt,
    system: str | None,
    *,
    chat: bool,
    args: Mapping[str, Any] | None = None,
) -> str:
    """The prompt text the model reads: its chat template with a generation prompt when
    ``chat`` (``args``: the template's keyword arguments, ``chat_template_args``), else
    :func:`render_plain`."""
    if not chat:
        return render_plain(prompt, system)
    text = tokenizer.apply_chat_template(
        to_messages(prompt, system),
        add_generation_prompt=True,
        tokenize=False,
        **dict(args or {}),
    )
    if not isinstance(text, str):
        raise TypeError(f"chat template rendered {type(text).__name__}, expected text")
    return text


def encode_prompt(
    tokenizer: Any,
    prompt: Prompt,
    system: str | None,
    *,
    chat: bool,
    args: Mapping[str, Any] | None = None,
) -> list[int]:
    """Token ids of the rendered prompt. Chat templates write their own special tokens; plain
    text gets the tokenizer's usual ones (e.g. BOS)."""
    text = render_prompt(tokenizer, prompt, system, chat=chat, args=args)
    return list(tokenizer(text, add_special_tokens=not chat)["input_ids"])


def encode_pair(
    tokenizer: Any,
    prompt: Prompt,
    target: str,
    system: str | None = None,
    *,
    chat: bool,
    args: Mapping[str, Any] | None = None,
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, target_ids)``: the prompt as :func:`encode_prompt`, the target tokenized
    on its own without special tokens (append ``tokenizer.eos_token`` to the target text to
    score or train the end of sequence). The model input is ``prompt_ids + target_ids``."""
    prompt_ids = encode_prompt(tokenizer, prompt, system, chat=chat, args=args)
    target_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
    return prompt_ids, target_ids
