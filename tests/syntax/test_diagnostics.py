"""Diagnostics as values and their renderings: text with source lines and carets, and JSON."""

from __future__ import annotations

import json

import pytest

from kdlang.syntax.diagnostics import (
    Collector,
    Diagnostic,
    DiagnosticError,
    Severity,
    did_you_mean,
    edit_distance,
    render,
    render_json,
    suggestion,
)
from kdlang.syntax.span import Span, source_lines

SOURCE = 'model teacher = hf("x")\nstage s = label(d) {\n  tempreature = 0.8\n}\n'


def test_render_one_line_span():
    found = Diagnostic(
        "KD0102",
        "unknown setting `tempreature`",
        Span("r.kd", 3, 3, 3, 14),
        help='did you mean "temperature"?',
    )
    assert render([found], {"r.kd": SOURCE}) == (
        "error[KD0102]: unknown setting `tempreature`\n"
        " --> r.kd:3:3\n"
        "  |\n"
        "3 |   tempreature = 0.8\n"
        "  |   ^^^^^^^^^^^\n"
        '  = help: did you mean "temperature"?\n'
    )


def test_render_multi_line_span_notes_and_warning():
    found = Diagnostic(
        "KD0111",
        "a second header",
        Span("r.kd", 2, 11, 4, 2),
        notes=(("first here", Span("r.kd", 1, 1, 1, 6)), ("no place", None)),
        severity=Severity.WARNING,
    )
    assert render([found], {"r.kd": SOURCE}) == (
        "warning[KD0111]: a second header\n"
        " --> r.kd:2:11\n"
        "  |\n"
        "2 | stage s = label(d) {\n"
        "  |           ^^^^^^^^^^\n"
        "3 |   tempreature = 0.8\n"
        "  |   ^^^^^^^^^^^^^^^^^\n"
        "4 | }\n"
        "  | ^\n"
        "  = note: first here (r.kd:1:1)\n"
        "  = note: no place\n"
    )


def test_render_widens_the_gutter_for_long_files():
    source = "\n" * 11 + "model m = 1\n"
    found = Diagnostic("KD0107", "not a call", Span("r.kd", 12, 11, 12, 12))
    lines = render([found], {"r.kd": source}).splitlines()
    assert lines[1] == "  --> r.kd:12:11"
    assert lines[3] == "12 | model m = 1"
    assert lines[4] == "   |           ^"


def test_render_without_the_source_keeps_the_header():
    found = Diagnostic("KD0402", "file not found", Span("gone.kd", 1, 1, 1, 2))
    assert render([found], {}) == "error[KD0402]: file not found\n --> gone.kd:1:1\n"


def test_render_counts_lines_like_the_parser():
    # A form feed or a Unicode line separator in a comment is no new line for the parser.
    source = "# note \x0c here \u2028 too\nmodel m = hf(dtpye = 1)\n"
    found = Diagnostic("KD0102", "unknown", Span("r.kd", 2, 14, 2, 23))
    lines = render([found], {"r.kd": source}).splitlines()
    assert lines[3] == "2 | model m = hf(dtpye = 1)"
    assert lines[4] == "  |              ^^^^^^^^^"
    assert source_lines("a\r\nb\x0cc\n") == ["a", "b\x0cc", ""]


def test_render_in_color():
    found = Diagnostic("KD0001", "bad", Span("r.kd", 1, 1, 1, 2))
    text = render([found], {"r.kd": "@\n"}, color=True)
    assert text.startswith("\x1b[1;31merror[KD0001]\x1b[0m: \x1b[1mbad\x1b[0m\n")
    assert "\x1b[1;31m^\x1b[0m" in text


def test_json_rendering():
    found = Diagnostic(
        "KD0102",
        "unknown",
        Span("r.kd", 3, 3, 3, 14),
        help="h",
        notes=(("first", Span("r.kd", 1, 2, 1, 3)),),
    )
    (entry,) = json.loads(render_json([found]))
    assert entry == {
        "severity": "error",
        "code": "KD0102",
        "message": "unknown",
        "file": "r.kd",
        "line": 3,
        "column": 3,
        "end_line": 3,
        "end_column": 14,
        "help": "h",
        "notes": [{"message": "first", "file": "r.kd", "line": 1, "column": 2}],
    }


def test_collector_and_error_sort_by_position():
    errors = Collector()
    errors.warning("KD0305", "later", Span("b.kd", 1, 1, 1, 2))
    assert not errors.has_errors
    errors.raise_if_errors()  # warnings alone do not raise
    errors.error("KD0102", "second", Span("a.kd", 5, 2, 5, 3))
    errors.error("KD0101", "first", Span("a.kd", 5, 1, 5, 2))
    assert errors.has_errors
    with pytest.raises(DiagnosticError) as caught:
        errors.raise_if_errors()
    assert [d.message for d in caught.value.diagnostics] == ["first", "second", "later"]
    assert str(caught.value).startswith("a.kd:5:1: KD0101 first")


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("", "", 0),
        ("abc", "abc", 0),
        ("tempreature", "temperature", 1),  # one transposition
        ("kitten", "sitting", 3),
        ("", "abc", 3),
        ("flaw", "lawn", 2),
    ],
)
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_did_you_mean():
    candidates = ["temperature", "top_p", "max_tokens", "samples"]
    assert did_you_mean("tempreature", candidates) == "temperature"
    assert did_you_mean("TOP_P", candidates) == "top_p"
    assert did_you_mean("sample", candidates) == "samples"
    assert did_you_mean("colour", candidates) is None
    assert did_you_mean("x", []) is None
    assert suggestion("max_token", candidates) == 'did you mean "max_tokens"?'
    assert suggestion("zzz", candidates) is None
