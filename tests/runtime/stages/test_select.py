"""``select``: the top rows by a numeric column or a seeded sample, in input order; checked
settings, planned row counts and a run end to end."""

from __future__ import annotations

import math
import random

import pytest
from kdlang.runtime.stages.select import number, sample, top

from kdlang.check import check_files
from tests.runtime.stages.support import node, plan, rows, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(60)

GRADED = """
dataset graded = inline([
  {q: "a", s: 3.0}, {q: "b", s: 9.0}, {q: "c", s: 5.0}, {q: "d", s: 9.0},
  {q: "e", s: 1.0}, {q: "f", s: 7.0}, {q: "g", s: 2.0}
])
"""


def test_top_keeps_the_highest_in_input_order_ties_to_the_earlier_row():
    data = [{"s": v} for v in (3.0, 9.0, 5.0, 9.0, 1.0, 7.0)]
    assert top(data, 3, "s") == [1, 3, 5]  # 9, 9, 7
    assert top(data, 1, "s") == [1]  # of the two 9s, the earlier
    assert top(data, 6, "s") == list(range(6))


def test_rows_without_a_number_rank_after_every_number():
    data = [{"s": None}, {"s": "n/a"}, {"s": -50}, {"s": float("nan")}, {"s": True}, {"s": "2"}]
    assert [number(row["s"]) for row in data] == [None, None, -50.0, None, None, 2.0]
    assert top(data, 2, "s") == [2, 5]
    assert top(data, 3, "s") == [0, 2, 5]  # then the first unranked row


def test_sample_is_the_seeded_draw_kept_in_input_order():
    data = [{"i": i} for i in range(50)]
    chosen = sample(data, 10, seed=7)
    assert chosen == sorted(random.Random(7).sample(range(50), 10))
    assert len(set(chosen)) == 10 and chosen == sorted(chosen)
    assert sample(data, 10, seed=8) != chosen


@pytest.mark.parametrize(
    ("n", "rows", "kept"),
    [("70%", 10, 7), ("5%", 10, 1), ("100%", 3, 3), ("4", 10, 4), ("40", 10, 10)],
)
def test_a_share_is_rounded_up_and_a_count_capped_by_the_input(tmp_path, n, rows, kept):
    body = "dataset d = inline([" + ", ".join(f"{{s: {i}}}" for i in range(rows)) + "])\n"
    recipe = write_recipe(tmp_path, body + f"stage best = select(d) {{ n = {n}  by = s }}\n")
    assert plan(recipe)["best"]["estimates"]["rows"] == kept
    assert kept == min(
        rows, math.ceil(float(n.rstrip("%")) / 100 * rows) if n.endswith("%") else int(n)
    )


@pytest.mark.parametrize(
    ("settings", "code", "column"),
    [
        ("n = 3  by = grade", "KD0205", 43),  # no such column
        ("n = 3  by = q", "KD0211", 43),  # text, not numbers
        ("n = 0%", "KD0104", 35),
        ("n = 150%", "KD0104", 35),
        ("n = 0", "KD0104", 35),
        ("by = s", "KD0105", 7),  # n is required
    ],
)
def test_settings_are_checked_with_positions(tmp_path, settings, code, column):
    recipe = write_recipe(tmp_path, GRADED + f"stage best = select(graded) {{ {settings} }}\n")
    diagnostics, _ = check_files([str(recipe)], [])
    assert [(d.code, d.span.line, d.span.column) for d in diagnostics] == [(code, 9, column)]


def test_select_runs_top_and_sample_end_to_end(tmp_path):
    recipe = write_recipe(
        tmp_path,
        GRADED
        + "stage best = select(graded) { n = 40%  by = s }\n"
        + "stage some = select(graded) { n = 3 }\n",
        seed=11,
    )
    document = run_recipe(recipe)
    assert rows(document, "best") == [
        {"q": "b", "s": 9.0},
        {"q": "d", "s": 9.0},
        {"q": "f", "s": 7.0},
    ]
    picked = sorted(random.Random(11).sample(range(7), 3))
    assert [r["q"] for r in rows(document, "some")] == ["abcdefg"[i] for i in picked]
    assert node(document, "best")["dropped"] == {"select": 4}
    assert node(document, "best")["rows_in"] == 7 and node(document, "best")["rows_out"] == 3


LEVELS = """
dataset graded = inline([
  {q: "a", s: 3.0, level: "easy"}, {q: "b", s: 9.0, level: "hard"},
  {q: "c", s: 5.0, level: "easy"}, {q: "d", s: 8.0, level: "hard"},
  {q: "e", s: 1.0, level: "mid"}, {q: "f", s: 7.0, level: "easy"},
  {q: "g", s: 2.0, level: "hard"}, {q: "h", s: 12.0, level: "mid"}
])
"""


def test_a_stratified_select_keeps_the_top_of_each_stratum_in_input_order(tmp_path):
    recipe = write_recipe(
        tmp_path,
        LEVELS
        + "stage per_level = select(graded) { stratify = level  per_bin = 2  by = s }\n"
        + "stage per_bin = select(graded) { stratify = s  bins = [0, 4, 8, 12]  per_bin = 50% }\n",
        seed=5,
    )
    document = run_recipe(recipe)
    # easy: a 3, c 5, f 7 -> f, c; hard: b 9, d 8, g 2 -> b, d; mid: e 1, h 12 -> both
    assert [r["q"] for r in rows(document, "per_level")] == ["b", "c", "d", "e", "f", "h"]
    assert node(document, "per_level")["stats"]["strata"] == {'"easy"': 2, '"hard"': 2, '"mid"': 2}
    # bins [0,4): a 3, e 1, g 2 -> 2 of 3 (50% rounded up); [4,8): c 5, f 7 -> 1; [8,12]: b, d, h
    # (12 is the last bin's upper edge) -> 2; each drawn with seed 5 + the bin's order
    strata = {0: [0, 4, 6], 1: [2, 5], 2: [1, 3, 7]}
    expected = []
    for order, members in strata.items():
        count = math.ceil(len(members) / 2)
        expected += [
            members[i] for i in sorted(random.Random(5 + order).sample(range(len(members)), count))
        ]
    assert [r["q"] for r in rows(document, "per_bin")] == ["abcdefgh"[i] for i in sorted(expected)]
    assert node(document, "per_bin")["stats"]["strata"] == {"[0, 4)": 2, "[4, 8)": 1, "[8, 12]": 2}
    assert node(document, "per_bin")["dropped"] == {"select": 3}


@pytest.mark.parametrize(
    ("settings", "code", "column"),
    [
        ("stratify = level  n = 3", "KD0235", 49),  # n with stratify
        ("stratify = level", "KD0105", 31),  # per_bin missing
        ("per_bin = 2  n = 3", "KD0235", 31),  # per_bin without stratify
        ("stratify = level  per_bin = 2  bins = [0, 1]", "KD0235", 69),  # bins of text
        ("stratify = s  per_bin = 2  bins = [0, 5, 5]", "KD0104", 65),  # not ascending
        ("stratify = grade  per_bin = 2", "KD0205", 42),  # no such column
    ],
)
def test_stratified_settings_are_checked_with_positions(tmp_path, settings, code, column):
    recipe = write_recipe(tmp_path, LEVELS + f"stage best = select(graded) {{ {settings} }}\n")
    diagnostics, _ = check_files([str(recipe)], [])
    assert [(d.code, d.span.line, d.span.column) for d in diagnostics] == [(code, 11, column)]
