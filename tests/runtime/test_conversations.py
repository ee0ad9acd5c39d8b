"""Conversation columns read from every layout to the same canonical ``[{role, content}]`` rows."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kdlang.runtime.data import canonical_turns, load_source

from kdlang.lower import lower
from kdlang.syntax.diagnostics import Collector
from kdlang.syntax.parser import parse

TURNS = [
    ("system", "Be brief."),
    ("user", "What is 2 + 2?"),
    ("assistant", "4."),
    ("user", "And 3 + 3?"),
    ("assistant", "6."),
]
CANONICAL = [{"role": role, "content": text} for role, text in TURNS]
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def declared(source: str):
    """The dataset ``d`` of ``dataset d = SOURCE``, lowered as a recipe's."""
    errors = Collector()
    recipe = lower(parse(f"dataset d = {source}\n", "r.kd"), errors)
    assert errors.diagnostics == []
    return recipe.datasets["d"]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def test_every_layout_gives_the_same_canonical_rows(tmp_path: Path):
    sharegpt = [{"from": SHAREGPT_ROLES[r], "value": t} for r, t in TURNS]
    custom = [
        {"speaker": {"user": "asker", "assistant": "expert"}.get(r, r), "text": t} for r, t in TURNS
    ]
    _jsonl(tmp_path / "canonical.jsonl", [{"id": 7, "chat": CANONICAL}])
    _jsonl(tmp_path / "sharegpt.jsonl", [{"id": 7, "chat": sharegpt}])
    _jsonl(tmp_path / "custom.jsonl", [{"id": 7, "chat": custom}])
    pq.write_table(pa.Table.from_pylist([{"id": 7, "chat": sharegpt}]), tmp_path / "s.parquet")
    (tmp_path / "chat.csv").write_text(
        "id,chat\n7," + json.dumps(json.dumps(CANONICAL)).replace('\\"', '""') + "\n",
        encoding="utf-8",
    )
    # a column mixing both layouts row by row, and in one conversation turn by turn
    mixed = sharegpt[:2] + CANONICAL[2:]
    sources = [
        'jsonl("canonical.jsonl")',
        'jsonl("sharegpt.jsonl")',
        'jsonl("custom.jsonl") { messages = chat  role_key = "speaker"  content_key = "text"\n'
        "  roles = {asker: user, expert: assistant} }",
        'parquet("s.parquet")',
        'csv("chat.csv") { columns = {id: str, chat: messages} }',
        "inline(" + json.dumps([{"id": 7, "chat": mixed}]) + ")",
    ]
    for source in sources:
        data = declared(source)
        rows = load_source(data, tmp_path, seed=0)
        chat = rows[0]["chat"]
        assert chat == CANONICAL, data.kind
        assert str(rows[0]["id"]) == "7"


def test_rows_of_both_layouts_in_one_file(tmp_path: Path):
    sharegpt = [{"from": SHAREGPT_ROLES[r], "value": t} for r, t in TURNS]
    _jsonl(tmp_path / "both.jsonl", [{"chat": CANONICAL}, {"chat": sharegpt}, {"chat": None}])
    rows = load_source(declared('jsonl("both.jsonl")'), tmp_path, seed=0)
    assert [row["chat"] for row in rows] == [CANONICAL, CANONICAL, None]


def test_text_columns_are_left_alone(tmp_path: Path):
    _jsonl(tmp_path / "t.jsonl", [{"q": "hi", "tags": ["a", "b"]}])
    assert load_source(declared('jsonl("t.jsonl")'), tmp_path, seed=0) == [
        {"q": "hi", "tags": ["a", "b"]}
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([{"from": "narrator", "value": "x"}], "row 1, `c`, turn 1 has role 'narrator'"),
        ([{"speaker": "user"}], "row 1, `c`, turn 1 has no role and content (keys: speaker)"),
        ([{"role": "user", "content": 3}], "row 1, `c`, turn 1: the content is no text"),
        ('{"role": "user"}', "row 1, `c` is not a conversation: dict, not a list"),
        ("not json", "row 1, `c` is not a conversation (text that is no JSON list)"),
    ],
)
def test_a_turn_that_fits_no_layout_names_the_row_and_turn(value, message):
    data = declared('jsonl("x.jsonl") { messages = c }')
    with pytest.raises(ValueError) as failure:
        canonical_turns(value, data, "row 1, `c`")
    assert str(failure.value).startswith(message)
