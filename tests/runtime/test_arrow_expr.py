"""Expressions as Arrow kernels give exactly what the row evaluator gives, on edge cases.

Every expression is evaluated both ways on one table of awkward rows (nulls, empty strings,
unicode, regex specials, NaN, large integers); the row evaluator is the reference. Each lowered
form is also asserted to have run as kernels (nothing row by row) where it should, and to have
fallen back where Python and Arrow would disagree.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
from kdlang.runtime.arrow.expr import PY_SPACE, Batch, lowered, mask, values
from kdlang.runtime.arrow.functions import re2_pattern

from kdlang.expr import evaluate
from tests.expr.support import keep

ROWS = [
    {"s": "Hello World", "t": "hello", "n": 3, "f": 1.5, "b": True, "l": [1, 2]},
    {"s": "", "t": "", "n": 0, "f": 0.0, "b": False, "l": []},
    {"s": None, "t": None, "n": None, "f": None, "b": None, "l": None},
    {"s": "Ünïcødé straße İ", "t": "ß", "n": -7, "f": float("nan"), "b": True, "l": [3]},
    {"s": "a.b*c?(d)[e]{f}\\g", "t": "a.b", "n": 2**60, "f": -0.0, "b": False, "l": [1, 2, 3]},
    {"s": "line one\nline two\n", "t": "line", "n": 1, "f": 2.0, "b": True, "l": [0]},
    {"s": "  padded\t\u00a0\u2003", "t": " ", "n": 10, "f": 1e308, "b": False, "l": [5, 6]},
    {"s": "#### 42", "t": "####", "n": 42, "f": 42.0, "b": True, "l": [42]},
    {"s": "tab\x0bsep\x1cx", "t": "x", "n": 5, "f": -2.5, "b": None, "l": [1]},
    {"s": "日本語テキスト 123", "t": "日本", "n": 123, "f": 0.1, "b": True, "l": [None, 1]},
]

LOWERED = [
    # comparisons
    "n > 2",
    "n >= 0",
    "f < 1.6",
    "f <= 0.0",
    "s < t",
    's > "M"',
    "n == 3",
    "n != 3",
    "f == 42",
    "s == t",
    's == ""',
    "s == null",
    "b == true",
    "b != false",
    "n == s",
    "b == 1",
    "n < s",
    # and / or / not
    "b and n > 0",
    "b or f > 1.0",
    "not b",
    "not (n > 2) and b",
    # in
    "n in 1..10",
    "f in 0..2",
    "n in [1, 3, 42]",
    "f in [1.5, 42]",
    's in ["", "#### 42"]',
    "b in [true]",
    "n not in 0..5",
    '"o" in s',
    '"" in s',
    '"x" not in s',
    # arithmetic
    "n + 1 > 3",
    "n * 2 == 6",
    "f - 1 > 0",
    "n / 2 > 1",
    "f / n > 0.1",
    "-f < 0",
    's + t == "helloworld"',
    # functions
    "len(s) > 3",
    "len(s) == 0",
    "len(l) >= 2",
    "len(s) in 8..400",
    'contains(s, "o")',
    'contains(s, ".")',
    'contains(s, "")',
    'startswith(s, "He")',
    'startswith(s, "")',
    'endswith(s, "\\n")',
    'strip(s) == "padded"',
    "len(strip(s)) > 5",
    "is_null(s)",
    "is_null(f)",
    "not is_null(l)",
    'matches(s, "o W")',
    'matches(s, r"^line two$")',
    'matches(s, r"^$")',
    'matches(s, r"[a-z]+\\.[a-z]")',
    'matches(s, r"\\(d\\)")',
    'matches(s, r"a{2}|l{2}")',
    'matches(s, "")',
    'matches(s, r"(?i)hello")',
    'matches(s, r"\\d+$")',
    'matches(s, r"\\s")',
    'matches(s, r"\\bline\\b")',
]


@pytest.fixture
def batch() -> Batch:
    return Batch.of(pa.Table.from_pylist(ROWS))


def same(left, right) -> bool:
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    return type(left) is type(right) and left == right


def row_values(node, column: str | None = None):
    return [evaluate(node, row) for row in ROWS]


@pytest.mark.parametrize("text", LOWERED)
def test_lowered_forms_equal_the_row_evaluator(text, batch):
    node = keep(text)
    expected = [evaluate(node, row) for row in ROWS]
    got = values(node, batch).to_pylist()
    assert all(same(g, e) for g, e in zip(got, expected, strict=True)), (got, expected)
    assert mask(node, batch).to_pylist() == [e is True for e in expected]


ASCII_ROWS = [r for r in ROWS if r["s"] is None or r["s"].isascii()]


@pytest.mark.parametrize(
    "text",
    [t for t in LOWERED if not any(part in t for part in ("\\d", "\\s", "\\b", "(?i)"))]
    + ['lower(s) == "hello world"', 'upper(t) == "HELLO"'],
)
def test_lowered_forms_run_as_kernels(text):
    ascii_rows = [r for r in ASCII_ROWS if "\x0b" not in (r["s"] or "") and r["n"] != 2**60]
    batch = Batch.of(pa.Table.from_pylist(ascii_rows))
    node = keep(text)
    assert lowered(node, batch), batch.rowwise
    expected = [evaluate(node, row) for row in ascii_rows]
    assert values(node, batch).to_pylist() == expected


def test_unicode_classes_run_as_kernels_on_ascii_text_only():
    plain = Batch.of(pa.Table.from_pylist([{"s": "abc 12"}, {"s": "x"}]))
    assert re2_pattern(r"\d+", plain.columns["s"]) == r"(?m)\d+"
    assert lowered(keep(r'matches(s, r"\w\s\d")'), plain)
    unicode_text = pa.array(["١٢٣", "x"])  # Arabic-Indic digits: \d to Python, not to RE2
    assert re2_pattern(r"\d", unicode_text) is None
    assert re2_pattern(r"(?i)k", pa.array(["\u212a"])) is None  # the Kelvin sign folds to k
    odd_space = pa.array(["a\x1cb"])  # \s to Python, not to RE2
    assert re2_pattern(r"a\sb", odd_space) is None
    assert re2_pattern(r"ab", odd_space) == "(?m)ab"


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?=a)b",  # look-ahead: RE2 has none
        r"(a)\1",  # back-reference
        r"[[:alpha:]]",  # a POSIX class to RE2, a set of ':' 'a' 'l' ... to Python
        r"a{,3}",  # {0,3} to Python, literal text to RE2
        r"(?x) a b",  # verbose
        r"end\Z",
        r"caf\u00e9",
        "é",
    ],
)
def test_patterns_that_differ_fall_back_and_still_agree(pattern):
    assert re2_pattern(pattern, pa.array(["abc"])) is None
    rows = [{"s": t} for t in ["ab", "aa", "a:", "a", "aaa", "end", "café", "x{,3}", None]]
    batch = Batch.of(pa.Table.from_pylist(rows))
    node = keep(f'matches(s, "{pattern.replace(chr(92), chr(92) * 2)}")')
    assert values(node, batch).to_pylist() == [evaluate(node, row) for row in rows]


@pytest.mark.parametrize(
    "text",
    [
        'lower(s) == "hello world"',  # text that is not ASCII: Python's lower is not Arrow's
        'upper(t) == "SS"',  # "ß".upper() is "SS"
        "n * n > 0",  # 2**60 squared overflows 64 bits: Python's integers do not
        "n + 0.5 > 0",  # 2**60 is no float exactly
        "(n + 1) / 3 > 0",  # Python divides 2**60 + 1 exactly, then rounds
        'extract(s, r"(\\d+)") == "42"',  # a form Arrow does not compute
        "len(json(s)) > 0 or b",
        'str(n) == "3"',
    ],
)
def test_forms_that_fall_back_agree(text, batch):
    node = keep(text)
    expected = [evaluate(node, row) for row in ROWS]
    got = values(node, batch).to_pylist()
    assert all(same(g, e) for g, e in zip(got, expected, strict=True)), (got, expected)
    assert not lowered(node, batch)
    assert mask(node, batch).to_pylist() == [e is True for e in expected]


def test_strip_takes_python_white_space():
    assert "\u00a0" in PY_SPACE and "\x1c" in PY_SPACE and "a" not in PY_SPACE
    rows = [{"s": "\x1c\u2003 x \u3000\x85"}, {"s": "\u200b x"}]  # U+200B is no space
    batch = Batch.of(pa.Table.from_pylist(rows))
    node = keep('strip(s) == "x"')
    assert lowered(node, batch)
    assert values(node, batch).to_pylist() == [True, False]


def test_a_missing_column_is_null(batch):
    node = keep("is_null(nothing) and not (len(s) > 0 and nothing == 1)")
    assert values(node, batch).to_pylist() == [evaluate(node, r) for r in ROWS]
