"""``pairs``: best and worst scored response per group, ties and small margins left out."""

from __future__ import annotations

import pytest
from kdlang.runtime.stages.pairs import make_pairs

from tests.runtime.stages.support import node, rows, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(60)


def scored(*entries):
    return [{"p": p, "r": r, "s": s} for p, r, s in entries]


def test_best_is_chosen_worst_is_rejected_per_group_in_order_of_first_appearance():
    data = scored(
        ("q2", "a", 3.0),
        ("q1", "b", 7.0),
        ("q2", "c", 9.0),
        ("q1", "d", 2.0),
        ("q2", "e", 5.0),
        ("q1", "f", 4.0),
    )
    pairs, dropped = make_pairs(data, "p", "r", "s", 0.0)
    assert pairs == [
        {"p": "q2", "chosen": "c", "rejected": "a", "margin": 6.0},
        {"p": "q1", "chosen": "b", "rejected": "d", "margin": 5.0},
    ]
    assert dropped == {"unscored": 0, "single": 0, "tie": 0, "below_min_margin": 0}


def test_ties_small_margins_single_and_unscored_responses_give_no_pair():
    data = scored(
        ("tie", "a", 5.0),
        ("tie", "b", 5.0),
        ("close", "c", 5.0),
        ("close", "d", 5.5),
        ("edge", "e", 4.0),
        ("edge", "f", 5.0),  # margin == min_margin: a pair
        ("alone", "g", 8.0),
        ("broken", "h", None),
        ("broken", "i", "n/a"),
        ("broken", "j", 3.0),
        ("broken", "k", float("nan")),
        ("equal-best", "l", 9.0),
        ("equal-best", "m", 9.0),
        ("equal-best", "n", 1.0),
    )
    pairs, dropped = make_pairs(data, "p", "r", "s", 1.0)
    assert pairs == [
        {"p": "edge", "chosen": "f", "rejected": "e", "margin": 1.0},
        {"p": "equal-best", "chosen": "l", "rejected": "n", "margin": 8.0},  # first of equals
    ]
    assert dropped == {"unscored": 3, "single": 2, "tie": 1, "below_min_margin": 1}


def test_groups_may_be_any_value_and_scores_numeric_text():
    data = [
        {"p": ["x", 1], "r": "a", "s": "2"},
        {"p": ["x", 1], "r": "b", "s": 4},
        {"p": {"k": 1}, "r": "c", "s": 1},
    ]
    pairs, dropped = make_pairs(data, "p", "r", "s", 0.0)
    assert pairs == [{"p": ["x", 1], "chosen": "b", "rejected": "a", "margin": 2.0}]
    assert dropped["single"] == 1


def test_pairs_stage_writes_the_documented_columns(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
dataset graded = inline([
  {instruction: "sum", response: "4", score: 9.0},
  {instruction: "sum", response: "5", score: 2.0},
  {instruction: "sum", response: "four", score: 7.0},
  {instruction: "capital", response: "Paris", score: 8.0},
  {instruction: "capital", response: "Lyon", score: 7.5},
  {instruction: "colour", response: "red", score: 5.0},
])
stage prefs = pairs(graded) { group = instruction  response = response  min_margin = 1 }
""",
    )
    document = run_recipe(recipe)
    assert rows(document, "prefs") == [
        {"instruction": "sum", "chosen": "4", "rejected": "5", "margin": 7.0}
    ]
    result = node(document, "prefs")
    assert result["dropped"] == {"unscored": 0, "single": 1, "tie": 0, "below_min_margin": 1}
    assert result["rows_in"] == 6 and result["rows_out"] == 1
