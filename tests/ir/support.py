"""Helpers for the IR tests: lowering source text, and finding where a piece of it is."""

from __future__ import annotations

from kdlang.ir.recipe import Recipe
from kdlang.lower import lower
from kdlang.syntax.diagnostics import Collector, Diagnostic
from kdlang.syntax.parser import parse

FILE = "r.kd"


def lowered(source: str) -> Recipe:
    """The IR of a recipe that must lower without any diagnostic."""
    errors = Collector()
    recipe = lower(parse(source, FILE), errors)
    assert errors.diagnostics == [], [f"{d.code} {d.message}" for d in errors.diagnostics]
    return recipe


def diagnostics(source: str) -> list[Diagnostic]:
    errors = Collector()
    lower(parse(source, FILE), errors)
    return sorted(errors.diagnostics, key=lambda d: (d.span.line, d.span.column))


def only(source: str) -> Diagnostic:
    found = diagnostics(source)
    assert len(found) == 1, [f"{d.code} {d.message}" for d in found]
    return found[0]


def where(source: str, needle: str, occurrence: int = 1) -> tuple[int, int, int, int]:
    """(line, column, end_line, end_column) of the ``occurrence``-th ``needle`` in ``source``."""
    index = -1
    for _ in range(occurrence):
        index = source.index(needle, index + 1)
    line = source.count("\n", 0, index) + 1
    column = index - (source.rfind("\n", 0, index) + 1) + 1
    last = needle.split("\n")
    end_line = line + len(last) - 1
    end_column = (column if len(last) == 1 else 1) + len(last[-1])
    return line, column, end_line, end_column


def at(diagnostic: Diagnostic) -> tuple[int, int, int, int]:
    s = diagnostic.span
    return s.line, s.column, s.end_line, s.end_column
