"""A ``label`` stage answering conversations through the ``openai`` teacher: the request bodies
carry the real multi-turn ``messages`` (``turns = last`` and ``turns = each``), the output is a
conversation column, and a stage's ``system`` replaces the conversation's own."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.openai_server import FakeOpenAIServer, echo_reply
from tests.runtime.stages.support import (
    BASE_URL_ENV,
    api_model,
    row_seed,
    rows,
    run_recipe,
    write_recipe,
)

pytestmark = pytest.mark.timeout(60)

ROUND_SEED = 1_000_003

CHATS = [
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "old one"},
        {"role": "user", "content": "Add 2 and 2"},
        {"role": "assistant", "content": "old two"},
    ],
    [{"role": "user", "content": "Name a colour"}],
]


def recipe_text(settings: str) -> str:
    data = json.dumps([{"id": i, "chat": chat} for i, chat in enumerate(CHATS)])
    return (
        f"dataset chats = inline({data})\n"
        + api_model("api", concurrency=1)
        + f"\nstage answers = label(chats) {{ teacher = api  messages = chat  {settings} }}\n"
    )


def run(tmp_path, monkeypatch, settings: str):
    recipe = write_recipe(tmp_path, recipe_text(settings))
    with FakeOpenAIServer() as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        document = run_recipe(recipe)
        bodies = list(server.bodies)
    return rows(document, "answers"), bodies


def by_conversation(bodies: list[dict]) -> list[list[dict]]:
    return sorted((b["messages"] for b in bodies), key=json.dumps)


def test_turns_last_answers_the_last_user_turn(tmp_path, monkeypatch):
    out, bodies = run(tmp_path, monkeypatch, "turns = last  answer = reply")
    first, second = CHATS
    assert by_conversation(bodies) == sorted([first[:4], second], key=json.dumps)
    reply = [echo_reply("Add 2 and 2", row_seed(7, "label", 0))]
    reply.append(echo_reply("Name a colour", row_seed(7, "label", 1)))
    assert [row["chat"] for row in out] == CHATS  # the input column is left as it was
    assert [row["output"] for row in out] == [
        [*first[:4], {"role": "assistant", "content": reply[0]}],
        [*second, {"role": "assistant", "content": reply[1]}],
    ]
    assert [row["reply"] for row in out] == reply


def test_turns_each_writes_every_assistant_turn_after_the_teachers_earlier_ones(
    tmp_path, monkeypatch
):
    out, bodies = run(tmp_path, monkeypatch, 'turns = each  system = "Answer in one line."')
    system = {"role": "system", "content": "Answer in one line."}
    seed0, seed1 = row_seed(7, "label", 0), row_seed(7, "label", 1)
    one = echo_reply("Hi", seed0)
    two = echo_reply("Add 2 and 2", seed0 + ROUND_SEED)
    colour = echo_reply("Name a colour", seed1)
    sent = [
        [system, {"role": "user", "content": "Hi"}],
        [
            system,
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": one},  # the teacher's own first answer
            {"role": "user", "content": "Add 2 and 2"},
        ],
        [system, {"role": "user", "content": "Name a colour"}],
    ]
    assert by_conversation(bodies) == sorted(sent, key=json.dumps)
    assert [b["seed"] for b in bodies if b["messages"] == sent[1]] == [seed0 + ROUND_SEED]
    assert [row["output"] for row in out] == [
        sent[1] + [{"role": "assistant", "content": two}],
        sent[2] + [{"role": "assistant", "content": colour}],
    ]
    assert "answer" not in out[0] and set(out[0]) == {"id", "chat", "output"}
