"""A teacher answering conversations: the ``label`` stage with ``messages = COLUMN``.

The teacher receives the turns themselves (the ``openai`` backend sends them as the request's
``messages``; an ``hf`` teacher renders them with its chat template and the generation prompt)
and writes the assistant's turns:

- ``turns = last``: the conversation up to its last user turn (an assistant turn after it is
  dropped) is answered once per sample; each output row holds that conversation followed by the
  teacher's turn.
- ``turns = each``: every assistant turn is written again in order, round by round: round ``k``
  asks for the ``k``-th assistant turn of every conversation that has one, after the turns
  before it, the teacher's own earlier answers included. A conversation ending with a user
  turn gets the answer to it as its last round. Each round has its own progress log, so a
  stopped run resumes within the round it was in.

``answer = COLUMN`` also writes the teacher's last turn as text. The stage's ``system``
(rendered per row) replaces the conversation's system turn, in what is sent and in what is
written. Sampling is seeded by the row (``turns = last``) and by the row and
round (``turns = each``).
"""

from __future__ import annotations

from typing import Any

from .errors import RunError
from .teachers import GenerationRequest

ROUND_SEED = 1_000_003
"""Round ``k`` of ``turns = each`` samples with the row's seed plus ``k`` times this."""


def with_system(turns: list[dict], system: str | None) -> list[dict]:
    """The conversation with ``system`` as its system turn (replacing its own), if given."""
    turns = [{"role": t["role"], "content": t["content"]} for t in turns]
    if system is None:
        return turns
    return [{"role": "system", "content": system}] + [t for t in turns if t["role"] != "system"]


def answer_points(turns: list[dict], mode: str) -> list[int]:
    """Indices at which the teacher writes a turn: where an assistant turn is (replaced) or
    ``len(turns)`` (appended, after a final user turn). ``last``: one point."""
    points = [i for i, t in enumerate(turns) if t["role"] == "assistant"]
    if mode == "each":
        if not turns or turns[-1]["role"] != "assistant":
            points.append(len(turns))
        return points
    end = len(turns) - 1 if turns and turns[-1]["role"] == "assistant" else len(turns)
    return [end]


def _request(ctx, stage, context: list[dict], seed: int, n: int) -> GenerationRequest:
    return GenerationRequest(
        prompt=context,
        n=n,
        temperature=stage.temperature,
        top_p=stage.top_p,
        top_k=stage.top_k,
        max_tokens=stage.max_tokens,
        seed=seed,
        stop=tuple(stage.stop) if stage.stop else None,
    )


def label_conversations(ctx, stage, rows: list[dict], generate) -> list[dict]:
    """The output rows of a ``label`` stage answering ``stage.messages``; ``generate`` is
    :func:`~kdlang.runtime.stages.label.generate_rows`-like: ``(requests, log_name) -> texts``."""
    system = ctx.template(stage.system) if stage.system is not None else None
    column = stage.messages
    conversations = []
    for index, row in enumerate(rows):
        turns = row.get(column)
        if not isinstance(turns, list):
            raise RunError(f"row {index + 1}: `{column}` holds no conversation")
        own = system.render(index, **row) if system is not None else None
        conversations.append(with_system(turns, own))
    points = [answer_points(turns, stage.turns) for turns in conversations]
    for index, (turns, where) in enumerate(zip(conversations, points, strict=True)):
        if not turns[: where[0]] or all(t["role"] == "system" for t in turns[: where[0]]):
            raise RunError(f"row {index + 1}: `{column}` has no user turn to answer")
    if stage.turns == "last":
        requests = [
            _request(ctx, stage, turns[: where[0]], ctx.row_seed(index), stage.samples)
            for index, (turns, where) in enumerate(zip(conversations, points, strict=True))
        ]
        outputs = generate(requests, "progress.jsonl")
        result = []
        for row, turns, where, texts in zip(rows, conversations, points, outputs, strict=True):
            for sample, text in enumerate(texts):
                answered = [*turns[: where[0]], {"role": "assistant", "content": text}]
                labelled: dict[str, Any] = {**row, stage.output: answered}
                if stage.answer is not None:
                    labelled[stage.answer] = text
                if stage.samples > 1:
                    labelled["sample"] = sample
                result.append(labelled)
        return result
    rounds = max(len(where) for where in points)
    for k in range(rounds):
        asked = [i for i, where in enumerate(points) if len(where) > k]
        requests = [
            _request(
                ctx, stage, conversations[i][: points[i][k]], ctx.row_seed(i) + k * ROUND_SEED, 1
            )
            for i in asked
        ]
        outputs = generate(requests, f"progress-turn{k + 1}.jsonl")
        for i, texts in zip(asked, outputs, strict=True):
            turn = {"role": "assistant", "content": texts[0]}
            at = points[i][k]
            conversations[i][at : at + 1] = [turn]
    result = []
    for row, turns in zip(rows, conversations, strict=True):
        labelled = {**row, stage.output: turns}
        if stage.answer is not None:
            labelled[stage.answer] = turns[-1]["content"]  # the last point is the last turn
        result.append(labelled)
    return result


def conversation_text(value: Any) -> Any:
    """What a filter rule compares of a cell: a conversation's contents, joined by new lines
    (the roles are not part of the text); any other value as it is."""
    if isinstance(value, list) and all(isinstance(t, dict) and "content" in t for t in value):
        return "\n".join(str(t["content"]) if t["content"] is not None else "" for t in value)
    return value


def last_user_prompts(rows: list[dict], column: str) -> list[list[dict]]:
    """Each row's conversation up to its last user turn (an assistant turn after it dropped):
    what a model answers when it is evaluated on ``column``."""
    prompts = []
    for index, row in enumerate(rows):
        turns = row.get(column)
        if not isinstance(turns, list):
            raise RunError(f"row {index + 1}: `{column}` holds no conversation")
        turns = with_system(turns, None)
        end = answer_points(turns, "last")[0]
        if not any(t["role"] == "user" for t in turns[:end]):
            raise RunError(f"row {index + 1}: `{column}` has no user turn to answer")
        prompts.append(turns[:end])
    return prompts
