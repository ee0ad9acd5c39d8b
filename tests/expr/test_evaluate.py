"""Evaluating filter and metric expressions on rows: operators, null semantics, values of the
wrong type in untyped columns, and a recipe's whole filter and metric."""

from __future__ import annotations

import pytest

from kdlang.expr import evaluate
from tests.expr.support import keep, metric

ROW = {"n": 7, "x": 2.5, "s": "abc", "flag": True, "tags": ["a", "b"], "none": None}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n + 1", 8),
        ("n - 10", -3),
        ("n * x", 17.5),
        ("n / 2", 3.5),
        ("n / 0", None),  # division by zero is null, not an error
        ('s + "def"', "abcdef"),
        ("-n", -7),
        ("n > 3 and x < 3", True),
        ('n > 30 or s == "abc"', True),
        ("not flag", False),
        ("n == 7.0", True),  # numbers compare by value
        ('n == "7"', False),  # a numeric string is no number
        ('s != "abd"', True),
        ('"b" in s', True),
        ('"a" in tags', True),
        ('"c" not in tags', True),
        ("n in 1..7", True),  # ranges include both ends
        ("x in 3..10", False),
        ("n in [1, 7, 9]", True),
        ('s < "abd"', True),
        ("50% < x", True),  # a percentage is its fraction
    ],
)
def test_operators(text: str, expected):
    value = evaluate(keep(text), ROW)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none + 1", None),  # arithmetic with null is null
        ("-none", None),
        ("none > 1", False),  # an ordering comparison with null is false
        ("none <= 1", False),
        ("not (none > 1)", True),
        ("none == null", True),
        ("absent == null", True),  # a column missing from the row is null
        ("n == null", False),
        ("none != 0", True),
        ("none in [1, 2]", False),
        ("none not in [1, 2]", True),
        ("none in 0..3", False),
        ("none and true", False),
        ("none or true", True),
        ("len(none)", None),  # a typed argument given null gives null
        ("len(none) > 0", False),
        ("lower(none)", None),
        ('extract(none, r"(x)")', None),
        ("is_null(none)", True),
        ('str(none) == ""', True),
        ("exact_match(none, none)", False),
        ('extract(s, r"(a)", none)', "a"),  # an omitted trailing option takes its default
    ],
)
def test_null_semantics(text: str, expected):
    assert evaluate(keep(text), ROW) == expected


@pytest.mark.parametrize(
    ("row", "text", "expected"),
    [
        # In a column whose type is not known at check time, a value of the wrong type is null.
        ({"v": "ab"}, "v * 3", None),
        ({"v": "ab"}, "v + 1", None),
        ({"v": "ab"}, "-v", None),
        ({"v": "ab"}, "v > 1", False),
        ({"v": True}, "v + 1", None),
        ({"v": True}, "v == 1", False),  # true is not 1
        ({"v": True}, "v in [1, 2]", False),
        ({"v": True}, "v in 0..2", False),
        ({"v": 3}, "lower(v)", None),
        ({"v": 3}, "len(v)", None),
        ({"v": {"k": 1}}, '"k" in v', False),
        ({"v": [1, 2]}, "v + 1", None),
        ({"v": "(unclosed"}, 'matches("text", v)', None),  # a bad pattern from the data
        ({"v": "12x"}, "int(v)", None),
    ],
)
def test_values_of_the_wrong_type_never_raise(row: dict, text: str, expected):
    assert evaluate(keep(text), row) == expected


FILTER = [
    r'matches(rationale, r"#### -?\d+\s*$")',
    r'extract(rationale, r"#### (-?\d+)") == answer',
    "len(rationale) in 8..400",
]
ROWS = [
    ({"rationale": "2 + 3 = 5\n#### 5", "answer": "5"}, [True, True, True]),
    ({"rationale": "2 + 3 = 6\n#### 6", "answer": "5"}, [True, False, True]),
    ({"rationale": "it is 5", "answer": "5"}, [False, False, False]),
    ({"rationale": "#### 5", "answer": "5"}, [True, True, False]),  # 6 characters
    ({"rationale": None, "answer": "5"}, [None, False, False]),
]


@pytest.mark.parametrize(("row", "verdicts"), ROWS)
def test_a_recipe_filter_on_rows(row: dict, verdicts: list):
    assert [evaluate(keep(rule), row) for rule in FILTER] == verdicts


def test_a_metric_averaged_over_rows():
    expression = metric(r'exact_match(extract(output, r"#### (-?\d+)"), answer)')
    rows = [
        {"output": "so\n#### 12", "answer": "12"},
        {"output": "#### 12.", "answer": "12"},
        {"output": "no number", "answer": "3"},
        {"output": "#### -4 ", "answer": " -4"},
    ]
    scores = [evaluate(expression, row) for row in rows]
    assert scores == [True, True, False, True]
    assert sum(scores) / len(scores) == 0.75


def test_a_numeric_metric():
    expression = metric("abs(int(output) - int(answer))")
    assert evaluate(expression, {"output": "40", "answer": "42"}) == 2
    assert evaluate(expression, {"output": "forty", "answer": "42"}) is None
