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

The same split serves a ``teacher_logits`` stage (:class:`ConversationScorer` scores the
learned tokens of the teacher's rendering) and a train reading its cache
(:func:`cached_example` puts each cached row back at the position of the same token); a train
that samples answers the conversation's last user turn (:func:`sampling_prompt`); and a
``chat_template_mix`` picks each row's template arguments (:func:`template_mix_pick`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

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
    return _split(index, ids, learned, max_length)[0]


def _split(index: int, ids: list[int], learned: list[bool], max_length: int) -> tuple[Example, int]:
    """The example of a rendered conversation and where its target starts in ``ids``."""
    first = next((t for t, flag in enumerate(learned) if flag), len(ids))
    first = max(1, first)
    prompt, target = truncate(ids[:first], ids[first:], max_length)
    example = Example(prompt, target, row=index, learn=learned[first : first + len(target)])
    return example, first


def sampling_prompt(
    tokenizer, turns: list[dict], max_length: int, args: Mapping[str, Any] | None = None
) -> list[int]:
    """The ids the student answers when it samples a conversation's target on-policy: the
    turns up to its last user turn (an assistant turn after it dropped, as a ``label`` stage's
    ``turns = last`` does) rendered with the generation prompt; a prompt longer than half of
    ``max_length`` keeps its last tokens, as :func:`~.examples.truncate` keeps a prompt's."""
    from ..chat import answer_points

    end = answer_points(list(turns), "last")[0]
    if not any(t["role"] == "user" for t in turns[:end]):
        raise ConversationError("the conversation has no user turn for the student to answer")
    text = render(tokenizer, turns[:end], generation=True, args=args)
    ids = _ids(tokenizer, text)
    half = max(1, max_length // 2)
    return ids[-half:] if len(ids) > half else ids


def template_mix_pick(mix, seed: int, row: int) -> int:
    """Which entry of a ``chat_template_mix`` renders row ``row``: a draw in [0, 1) that is a
    function of the train's seed and the row only (sha256), against the entries' shares
    normalized to sum to 1, in order."""
    digest = hashlib.sha256(f"kdlang-chat-template-mix:{seed}:{row}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    total = sum(entry.share for entry in mix)
    reached = 0.0
    for index, entry in enumerate(mix):
        reached += entry.share / total
        if draw < reached:
            return index
    return len(mix) - 1  # rounding left the draw above the last bound


def scored_positions(example: Example) -> list[int]:
    """Indices into ``example.prompt + example.target`` of the target tokens it learns: the
    positions a ``teacher_logits`` stage caches the teacher's top-k for, in order."""
    start = len(example.prompt)
    flags = example.learn if example.learn is not None else [True] * len(example.target)
    return [start + j for j, flag in enumerate(flags) if flag]


def cached_example(
    index: int,
    turns: list[dict],
    tokenizer,
    *,
    train_on: str,
    cached_on: str,
    max_length: int,
    args: Mapping[str, Any] | None,
    topk_ids: np.ndarray,
    topk_logprobs: np.ndarray,
    topk_targets: Sequence[int],
) -> Example:
    """The :class:`Example` of one conversation learned from a top-k cache. The cache holds one
    row per token ``cached_on`` picks (in order, the first ones when the stage truncated the
    conversation), ``topk_targets`` being those tokens as the teacher rendered them; they must
    be the student's own tokens at those positions. The example's cached rows are spread over
    its target tokens (filler rows elsewhere, never learned); they end before the first learned
    token that has none, so a divergence skips the rest while ``sft`` still learns it."""
    if not turns:
        raise ConversationError("the conversation has no turns")
    ids, learned = encode_conversation(tokenizer, turns, train_on, args)
    scored = (
        learned
        if cached_on == train_on
        else encode_conversation(tokenizer, turns, cached_on, args)[1]
    )
    example, first = _split(index, ids, learned, max_length)
    positions = [t for t, flag in enumerate(scored) if flag]
    cached = [int(t) for t in topk_targets]
    mine = [ids[p] for p in positions[: len(cached)]]
    if mine != cached:
        where = next(
            (r for r, (a, b) in enumerate(zip(mine, cached, strict=False)) if a != b), len(mine)
        )
        raise ConversationError(
            f"the teacher's cached tokens differ from the student's rendering at scored token "
            f"{where + 1} of {len(cached)}: the cache lines up with the student only when both "
            "chat templates write the learned turns with the same tokens"
        )
    row_of = {p: r for r, p in enumerate(positions[: len(cached)])}
    k = topk_ids.shape[1] if topk_ids.ndim == 2 else 0
    size = len(example.target)
    dense_ids = np.tile(np.arange(k, dtype=np.int64), (size, 1))
    dense_lps = np.zeros((size, k), np.float32)
    cover = size
    for j in range(size):
        r = row_of.get(first + j)
        if r is not None:
            dense_ids[j] = topk_ids[r]
            dense_lps[j] = topk_logprobs[r]
        elif example.learn is not None and example.learn[j]:
            cover = j
            break
    example.topk_ids, example.topk_logprobs = dense_ids[:cover], dense_lps[:cover]
    return example


LOGITS_BUDGET = 2 * 2**30
"""Bytes of float32 logits one scoring forward may hold (a longer row is scored alone)."""


class ConversationScorer:
    """A white-box teacher's top-k on conversations, for a ``teacher_logits`` stage: each
    conversation rendered by the teacher's chat template (with its ``chat_template_args``),
    split as :func:`conversation_example` splits it for the stage's ``train_on`` and
    ``max_length``, and scored on the tokens it learns (:func:`scored_positions`); the log-probs
    are ``log_softmax`` of the teacher's float32 logits at the position before each."""

    def __init__(self, name: str, teacher, stage, conversations: list[list[dict]]):
        from ..errors import RunError

        if not getattr(teacher, "white_box", False):
            raise RunError(f"{name}: conversations are scored by an `hf` teacher")
        if not getattr(teacher, "chat", False):
            raise RunError(
                f"{name}: `{stage.target}` holds conversations, but the teacher has no chat "
                "template to render them"
            )
        self.name, self.teacher, self.stage = name, teacher, stage
        self.conversations = conversations

    def example(self, index: int) -> Example:
        from ..errors import RunError

        try:
            return conversation_example(
                index,
                self.conversations[index],
                self.teacher.tokenizer,
                train_on=self.stage.train_on,
                max_length=self.stage.max_length,
                args=self.teacher.chat_args,
            )
        except (ConversationError, KeyError, TypeError) as error:
            raise RunError(
                f"{self.name}: row {index + 1}, `{self.stage.target}`: {error}"
            ) from None

    def score(self, start: int, end: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(ids [n, k] int32, log-probs [n, k] float16, tokens [n] int32)`` of rows
        ``start .. end - 1``, ``n`` being each row's scored tokens."""
        import torch

        teacher, k = self.teacher, self.stage.top_k
        examples = [self.example(i) for i in range(start, end)]
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = [None] * len(examples)
        for group in self._batches(examples):
            batch = [examples[i] for i in group]
            sequences = [e.prompt + e.target for e in batch]
            width = max(len(s) for s in sequences)
            ids = torch.full((len(batch), width), int(teacher.pad_id), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for b, sequence in enumerate(sequences):
                ids[b, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
                mask[b, : len(sequence)] = 1
            logits = teacher.logits(ids, mask)
            teacher.stats.calls += 1
            for b, (i, sequence) in enumerate(zip(group, sequences, strict=True)):
                positions = scored_positions(examples[i])
                before = torch.tensor([p - 1 for p in positions], dtype=torch.long)
                logp = torch.log_softmax(logits[b, before.to(logits.device)].float(), dim=-1)
                values, indices = logp.topk(min(k, logp.shape[-1]), dim=-1)
                tokens = np.array([sequence[p] for p in positions], np.int32)
                out[i] = (
                    indices.to(torch.int32).cpu().numpy(),
                    values.cpu().numpy().astype(np.float16),
                    tokens,
                )
                teacher.stats.prompt_tokens += len(sequence)
            del logits
            teacher.stats.requests += len(batch)
        return out  # type: ignore[return-value]  # every row filled

    def _batches(self, examples: list[Example]) -> list[list[int]]:
        """Row indices per forward: longest first, at most the teacher's ``batch_size`` and,
        past one row, at most :data:`LOGITS_BUDGET` bytes of float32 logits. The groups depend
        only on the rows, so a resumed chunk is scored in the same batches."""
        lengths = [len(e.prompt) + len(e.target) for e in examples]
        order = sorted(range(len(examples)), key=lambda i: -lengths[i])
        size = max(1, getattr(self.teacher, "batch_size", 8))
        head = getattr(getattr(self.teacher, "model", None), "get_output_embeddings", None)
        vocab = head().out_features if callable(head) and head() is not None else 0
        groups: list[list[int]] = []
        for i in order:
            group = groups[-1] if groups else None
            width = lengths[group[0]] if group else 0
            if (
                group
                and len(group) < size
                and (len(group) + 1) * width * vocab * 4 <= LOGITS_BUDGET
            ):
                group.append(i)
            else:
                groups.append([i])
        return groups
