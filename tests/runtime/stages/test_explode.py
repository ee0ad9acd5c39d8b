"""``explode``: one row per item of a list, on real rows."""

from __future__ import annotations

import pytest

from tests.runtime.stages.support import node, rows, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(60)


def test_one_row_per_item_and_none_for_an_empty_list(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
dataset gen = inline([
  {id: 1, output: "Write a haiku.\\nSum two numbers.\\nName a river."},
  {id: 2, output: ""},
  {id: 3, output: "Translate 'cat'."},
])
stage lines = explode(gen) { instruction = split(output, "\\n") }
stage words = explode(gen) { output = split(output) }
""",
    )
    document = run_recipe(recipe)
    assert rows(document, "lines") == [
        {
            "id": 1,
            "output": "Write a haiku.\nSum two numbers.\nName a river.",
            "instruction": "Write a haiku.",
        },
        {
            "id": 1,
            "output": "Write a haiku.\nSum two numbers.\nName a river.",
            "instruction": "Sum two numbers.",
        },
        {
            "id": 1,
            "output": "Write a haiku.\nSum two numbers.\nName a river.",
            "instruction": "Name a river.",
        },
        {"id": 2, "output": "", "instruction": ""},  # "".split("\n") is [""]
        {"id": 3, "output": "Translate 'cat'.", "instruction": "Translate 'cat'."},
    ]
    # an item replaces the column it is written to; an empty list gives no row
    assert [(r["id"], r["output"]) for r in rows(document, "words")] == [
        (1, "Write"),
        (1, "a"),
        (1, "haiku."),
        (1, "Sum"),
        (1, "two"),
        (1, "numbers."),
        (1, "Name"),
        (1, "a"),
        (1, "river."),
        (3, "Translate"),
        (3, "'cat'."),
    ]
    result = node(document, "words")
    assert (result["rows_in"], result["rows_out"]) == (3, 11)
    assert result["dropped"] == {"no items": 1}


def test_explode_turns_of_a_conversation_and_json_lists(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
dataset chats = inline([
  {id: 1, chat: [{role: "user", content: "Hi"}, {role: "assistant", content: "Hello"}], steps: "[3, 1]"},
  {id: 2, chat: [{role: "user", content: "Bye"}], steps: "not json"},
])
stage turns = explode(chats) { turn = chat }
stage texts = map(turns) { keep = [id]  role = turn.role  text = turn.content }
stage steps = explode(chats) { step = json(steps) }
""",
    )
    document = run_recipe(recipe)
    assert rows(document, "texts") == [
        {"id": 1, "role": "user", "text": "Hi"},
        {"id": 1, "role": "assistant", "text": "Hello"},
        {"id": 2, "role": "user", "text": "Bye"},
    ]
    assert [(r["id"], r["step"]) for r in rows(document, "steps")] == [(1, 3), (1, 1)]
