"""Every built-in function of the expression language against values computed by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdlang.expr import FUNCTIONS, evaluate
from tests.expr.support import keep

ROW = {
    "text": "  The Answer\n#### 42 ",
    "word": "banana",
    "items": ["a", "b", "c"],
    "number": "1,234",
    "missing": None,
}

CASES = {
    "len": [('len("héllo")', 5), ("len(items)", 3), ('len("")', 0)],
    "lower": [('lower("AbC Ä")', "abc ä")],
    "upper": [('upper("AbC")', "ABC")],
    "strip": [("strip(text)", "The Answer\n#### 42"), ('strip("\\t x \\n")', "x")],
    "contains": [('contains("distillation", "till")', True), ('contains(word, "x")', False)],
    "startswith": [('startswith("#### 42", "####")', True), ('startswith(word, "an")', False)],
    "endswith": [('endswith(word, "na")', True), ('endswith(word, "b")', False)],
    "matches": [
        # multiline: `^` and `$` match at every line's ends
        ('matches(text, r"^#### \\d+\\s*$")', True),
        ('matches(word, r"^an")', False),
        ('matches(word, r"an")', True),
    ],
    "extract": [
        ('extract("so #### -17 done", r"#### (-?\\d+)")', "-17"),
        ('extract("a=1, b=2", r"(\\w)=(\\d)", 2)', "1"),
        ('extract("a=1, b=2", r"(\\w)=(\\d)", group = 1)', "a"),
        ('extract(word, r"n.n")', "nan"),  # no group: the whole match
        ('extract("key:  v  ", r"key:(.*)")', "v"),  # stripped
        ('extract(word, r"(x)")', None),
    ],
    "count": [('count(word, "an")', 2), ('count("aaaa", "aa")', 2)],
    "words": [('words("  two  words\\nthree ")', 3), ('words("")', 0)],
    "lines": [('lines("a\\nb\\n")', 2), ('lines("")', 0), ("lines(text)", 2)],
    "int": [
        ('int("42")', 42),
        ("int(number)", 1234),
        ('int(" 3.0 ")', 3),
        ('int("3.5")', None),
        ('int("forty")', None),
        ("int(7.0)", 7),
    ],
    "float": [
        ('float("2.5")', 2.5),
        ('float("1e3")', 1000.0),
        ("float(number)", 1234.0),
        ('float("nan")', None),
        ('float("abc")', None),
    ],
    "str": [("str(12)", "12"), ("str(1.5)", "1.5"), ("str(true)", "true"), ("str(missing)", "")],
    "abs": [("abs(-3)", 3), ("abs(-2.5)", 2.5)],
    "round": [("round(2.567, 2)", 2.57), ("round(3.7)", 4.0), ("round(2.5)", 2.0), ("round(7)", 7)],
    "min": [("min(3, 2.5)", 2.5), ("min(-1, 4)", -1)],
    "max": [("max(3, 2.5)", 3), ("max(-1, -4)", -1)],
    "exact_match": [
        ('exact_match("  The   Answer ", "the answer")', True),
        ('exact_match(42, "42")', True),
        ('exact_match("4 2", "42")', False),
        ("exact_match(missing, missing)", False),
    ],
    "set_equal": [
        ('set_equal("a, b c", "c,b   a")', True),
        ('set_equal("a b", "a b b")', False),
        ('set_equal("a", missing)', False),
    ],
    "same_chars": [
        ('same_chars(" 6 2 4", "246")', True),
        ('same_chars("aab", "abb")', False),  # counts matter
        ('same_chars("ab", missing)', False),
    ],
    "numeric_equal": [
        ("numeric_equal(number, 1234)", True),
        ('numeric_equal("3.0000001", 3)', True),  # within 1e-6 x 3
        ('numeric_equal("3.1", 3)', False),
        ("numeric_equal(100, 101, 0.01)", True),  # |1| <= 0.01 x 101
        ("numeric_equal(100, 102, 0.01)", False),
        ('numeric_equal("x", 1)', False),
        ("numeric_equal(missing, 1)", False),
    ],
    "is_null": [("is_null(missing)", True), ("is_null(absent)", True), ('is_null("")', False)],
    "format": [
        ('format("{} of {}", word, 3)', "banana of 3"),
        ('format("{1}-{0}", "a", "b")', "b-a"),
        ('format("{w}!", w = word)', "banana!"),
        ('format("{:.2f}", 2.5)', "2.50"),
        ('format("[{}]", missing)', "[]"),  # null shows as empty text
        ('format("{}", items)', '["a", "b", "c"]'),  # a list as JSON
        ('format("{} {}", word)', None),  # a field without a value
    ],
    "split": [
        ('split("a,b,,c", ",")', ["a", "b", "", "c"]),
        ('split("  two  words\\n")', ["two", "words"]),
        ('split("ab", "")', ["a", "b"]),
    ],
    "join": [
        ('join(items, "+")', "a+b+c"),
        ("join(items)", "abc"),
        ('join([1, null, 2.5], ", ")', "1, 2.5"),
    ],
    "first": [("first(items)", "a"), ("first([])", None)],
    "last": [("last(items)", "c"), ("last([])", None)],
    "get": [
        ('get(json("{\\"k\\": 1}"), "k")', 1),
        ('get(json("{}"), "k", "d")', "d"),
        ('get(missing, "k", 0)', 0),
    ],
    "json": [
        ('json("[1, 2]")', [1, 2]),
        ('json("{\\"a\\": {\\"b\\": true}}")', {"a": {"b": True}}),
        ('json("not json")', None),
    ],
    "if": [
        ('if(len(word) > 3, "long", "short")', "long"),
        ('if(missing, "yes", "no")', "no"),  # null is not true
        ('if(false, "x")', None),
    ],
}


def test_every_function_has_cases():
    assert set(CASES) == set(FUNCTIONS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [case for cases in CASES.values() for case in cases],
)
def test_function_value(text: str, expected):
    value = evaluate(keep(text), ROW)
    assert value == expected
    assert type(value) is type(expected)


def test_functions_declare_their_signatures():
    extract = FUNCTIONS["extract"]
    assert [name for name, _ in extract.params] == ["s", "pattern", "group"]
    assert extract.arity == (2, 3)
    assert extract.pattern_arg == 1
    assert FUNCTIONS["len"].params[0][1] == frozenset({"str", "list"})
    assert FUNCTIONS["abs"].params[0][1] == frozenset({"int", "float"})
    assert all(f.doc for f in FUNCTIONS.values())


def test_every_function_is_documented():
    language = Path(__file__).resolve().parents[2] / "docs" / "language.md"
    section = language.read_text(encoding="utf-8").split("## Type system and checks", 1)[1]
    table = section.split("| function | result | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = re.findall(r"^\| `(\w+)\(", table, re.MULTILINE)
    assert len(documented) == len(set(documented))
    assert set(FUNCTIONS) <= set(documented)
    for name, function in FUNCTIONS.items():
        result = re.search(rf"^\| `{name}\(.*?\)` \| (\w+) \|", table, re.MULTILINE).group(1)
        assert result == function.returns
