"""No edit of a recipe, however broken, makes the compiler raise anything but diagnostics.

Each example damages a good recipe once (a character or a token deleted, inserted or replaced, a
line duplicated or cut short) and runs parsing, lowering and rendering on it.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdlang.lower import lower
from kdlang.syntax.diagnostics import Collector, DiagnosticError, render
from kdlang.syntax.parser import parse
from tests.syntax.support import GOOD

SOURCE = (GOOD / "arith_cot.kd").read_text(encoding="utf-8")
PIECES = [
    "{", "}", "(", ")", "[", "]", ",", "=", "==", ":", "..", "->", "-", '"', "'", '"""', "r",
    "#", "\\", "\n", " ", "@", "loss", "keep", "weight", "temperature", "prompt", "stage",
    "not", "in", "1", "2.5", "30%", "x", "true", "null", "by", "to", "env(", "lora(",
]  # fmt: skip


@st.composite
def damaged(draw) -> str:
    start = draw(st.integers(0, len(SOURCE)))
    length = draw(st.integers(0, 12))
    piece = draw(st.one_of(st.sampled_from(PIECES), st.text(max_size=3)))
    kind = draw(st.sampled_from(["delete", "insert", "replace", "duplicate_line", "truncate"]))
    if kind == "delete":
        return SOURCE[:start] + SOURCE[start + length :]
    if kind == "insert":
        return SOURCE[:start] + piece + SOURCE[start:]
    if kind == "replace":
        return SOURCE[:start] + piece + SOURCE[start + length :]
    if kind == "duplicate_line":
        lines = SOURCE.split("\n")
        index = draw(st.integers(0, len(lines) - 1))
        return "\n".join([*lines[: index + 1], lines[index], *lines[index + 1 :]])
    return SOURCE[:start]


def compile_and_render(source: str) -> list:
    try:
        module = parse(source, "r.kd")
    except DiagnosticError as failure:
        found = failure.diagnostics
    else:
        errors = Collector()
        lower(module, errors)
        found = errors.diagnostics
    text = render(found, {"r.kd": source})
    for diagnostic in found:
        assert diagnostic.code in text
        assert diagnostic.span.line >= 1 and diagnostic.span.column >= 1
        assert (diagnostic.span.end_line, diagnostic.span.end_column) >= (
            diagnostic.span.line,
            diagnostic.span.column,
        )
        assert diagnostic.span.line <= source.count("\n") + 1
    return found


def test_the_good_recipe_has_no_diagnostic():
    assert compile_and_render(SOURCE) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_damaged_recipes_give_diagnostics_not_exceptions(source):
    compile_and_render(source)
