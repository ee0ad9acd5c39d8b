"""Type checking of expressions before any row exists: the type of well-typed expressions, type
errors (KD0208) and unknown functions (KD0209) at their positions."""

from __future__ import annotations

import pytest

from kdlang.expr import typecheck
from kdlang.syntax.diagnostics import Collector
from tests.expr.support import KEEP_COLUMN, METRIC_COLUMN, keep, metric

COLUMNS = {"text": "str", "n": "int", "x": "float", "ok": "bool", "tags": "list", "blob": "any"}


def check(text: str, want: str | None = None, maker=keep) -> tuple[str, list]:
    errors = Collector()
    kind = typecheck(maker(text), COLUMNS, errors, want=want)
    return kind, errors.diagnostics


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("len(text) + 1", "int"),
        ("n / 2", "float"),
        ("n * x", "float"),
        ("n - 1", "int"),
        ('text + "!"', "str"),
        ("blob + 1", "any"),
        ("-x", "float"),
        ("[1, n]", "list"),
        ("1..n", "range"),
        ("n in 1..9", "bool"),
        ("not ok", "bool"),
        ("text == null", "bool"),
        ("null", "null"),
        ('extract(text, r"(\\d+)")', "str"),
        ("abs(n)", "int"),  # abs, round, min and max keep an integer an integer
        ("round(x, 1)", "float"),
        ("max(n, x)", "float"),
        ("max(n, blob)", "any"),
        ('extract(text, r"(a)(b)", abs(n))', "str"),  # an int where an int is wanted
        ("blob", "any"),
    ],
)
def test_types_of_expressions(text: str, kind: str):
    assert check(text) == (kind, [])


def position(d) -> tuple[int, int, int]:
    return d.span.line, d.span.column - KEEP_COLUMN, d.span.end_column - KEEP_COLUMN


@pytest.mark.parametrize(
    ("text", "start", "end", "message"),
    [
        ("len(n) > 0", 4, 5, "argument `x` of `len` must be a list or a string, not an integer"),
        ("text > 3", 0, 8, "cannot order a string and an integer with `>`"),
        ("ok < ok", 0, 7, "cannot order true/false and true/false with `<`"),
        ("text + 1 > 0", 0, 4, "`+` needs numbers, not a string"),
        ("n * tags == 0", 4, 8, "`*` needs numbers, not a list"),
        ("-text == 0", 1, 5, "cannot negate a string"),
        ("n in 5", 5, 6, "`in` needs a list, range or string on its right, not an integer"),
        ("text in 1..5", 0, 4, "only numbers can be in a range, not a string"),
        ("n in text", 0, 1, "only a string can be in a string, not an integer"),
        ('n in 1.."z"', 8, 11, "range ends must be numbers, not a string"),
        (
            "contains(text, 3)",
            15,
            16,
            "argument `part` of `contains` must be a string, not an integer",
        ),
        ("extract(text) == n", 0, 13, "`extract` takes 2 to 3 argument(s), got 1"),
        ('len(text, "x") > 0', 0, 14, "`len` takes 1 argument(s), got 2"),
        (
            'matches(text, "(")',
            14,
            17,
            "invalid regular expression: missing ), unterminated subpattern at position 0",
        ),
        ('extract(text, "a", grp = 1) == ""', 25, 26, "`extract` has no argument `grp`"),
        ("len(text)", 0, 9, "a `keep` condition must be true or false, this is an integer"),
        (
            "perplexity(text) > 2",
            0,
            16,
            "`perplexity(...)` is a whole metric, not part of an expression",
        ),
    ],
)
def test_type_errors_at_their_position(text: str, start: int, end: int, message: str):
    _, diagnostics = check(text, want="bool")
    assert [(d.code, position(d), d.message) for d in diagnostics] == [
        ("KD0208", (2, start, end), message)
    ]


def test_a_misspelled_keyword_argument_gets_a_suggestion():
    _, [d] = check('extract(text, "(a)", grp = 1) == ""', want="bool")
    assert d.help == 'did you mean "group"?'


def test_unknown_function_at_its_position():
    _, diagnostics = check("lenght(text) > 0", want="bool")
    [d] = diagnostics
    assert (d.code, position(d)) == ("KD0209", (2, 0, 12))
    assert d.message == "unknown function `lenght`"
    assert d.help == 'did you mean "len"?'


def test_unknown_function_still_checks_its_arguments():
    _, diagnostics = check("frobnicate(txet)", want="bool")
    assert [(d.code, position(d)) for d in diagnostics] == [
        ("KD0209", (2, 0, 16)),
        ("KD0205", (2, 11, 15)),
    ]


def test_unknown_function_without_a_close_name_lists_the_functions():
    _, [d] = check("zzzzzz(text)", want="bool")
    assert d.help.startswith("functions: len, lower, upper")


def test_several_errors_in_one_expression_are_all_reported():
    _, diagnostics = check("len(n) > 0 and nope(text) and text > 1", want="bool")
    assert [(d.code, position(d)[1]) for d in diagnostics] == [
        ("KD0208", 4),
        ("KD0209", 15),
        ("KD0208", 30),
    ]


@pytest.mark.parametrize(
    ("text", "kind", "problems"),
    [
        ("exact_match(text, text)", "bool", []),
        ("len(text) / 4", "float", []),
        ("perplexity(text)", "float", []),
        (
            "lower(text)",
            "str",
            [("KD0208", 0, "a metric must be a number or true/false per row, this is a string")],
        ),
        (
            'perplexity("x")',
            "float",
            [("KD0208", 0, "`perplexity` takes one column: perplexity(target)")],
        ),
        ("perplexity(txt)", "float", [("KD0205", 11, "unknown column `txt`")]),
    ],
)
def test_metric_expressions(text: str, kind: str, problems: list):
    found_kind, diagnostics = check(text, want="metric", maker=metric)
    assert found_kind == kind
    assert [(d.code, d.span.column - METRIC_COLUMN, d.message) for d in diagnostics] == problems
