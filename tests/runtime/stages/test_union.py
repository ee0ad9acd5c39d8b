"""``union``: the rows of several inputs, input after input, with their source."""

from __future__ import annotations

import pytest

from tests.runtime.stages.support import node, plan, rows, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(60)

BODY = """
dataset alpaca = inline([{instruction: "Name a prime.", output: "7"}, {instruction: "Add 2 and 2.", output: "4"}])
dataset dolly = inline([{instruction: "Name a colour.", output: "red"}])
stage mixed = union(alpaca, dolly, alpaca)
stage named = union(dolly, alpaca) { source = "origin" }
stage picked = filter(mixed) { keep source == "dolly" or output == "4" }
"""


def test_rows_of_every_input_in_order_with_their_source(tmp_path):
    recipe = write_recipe(tmp_path, BODY)
    document = run_recipe(recipe)
    assert rows(document, "mixed") == [
        {"instruction": "Name a prime.", "output": "7", "source": "alpaca"},
        {"instruction": "Add 2 and 2.", "output": "4", "source": "alpaca"},
        {"instruction": "Name a colour.", "output": "red", "source": "dolly"},
        {"instruction": "Name a prime.", "output": "7", "source": "alpaca"},
        {"instruction": "Add 2 and 2.", "output": "4", "source": "alpaca"},
    ]
    assert rows(document, "named") == [
        {"instruction": "Name a colour.", "output": "red", "origin": "dolly"},
        {"instruction": "Name a prime.", "output": "7", "origin": "alpaca"},
        {"instruction": "Add 2 and 2.", "output": "4", "origin": "alpaca"},
    ]
    assert [r["output"] for r in rows(document, "picked")] == ["4", "red", "4"]
    assert node(document, "mixed")["stats"]["inputs"] == {"alpaca": 2, "dolly": 1}


def test_a_changed_input_reruns_the_union(tmp_path):
    recipe = write_recipe(tmp_path, BODY)
    run_recipe(recipe)
    write_recipe(tmp_path, BODY.replace('"red"', '"blue"'))
    statuses = {name: n["status"] for name, n in plan(recipe).items()}
    assert statuses == {
        "alpaca": "cached",
        "dolly": "will run",
        "mixed": "will run",
        "named": "will run",
        "picked": "will run",
    }
    assert [r["output"] for r in rows(run_recipe(recipe), "mixed")][2] == "blue"
