"""Helpers of the expression tests: an expression's IR from its text, through the real parser
and lowering, so that positions are those a recipe would have."""

from __future__ import annotations

from kdlang.lower import lower
from kdlang.syntax.diagnostics import Collector
from kdlang.syntax.parser import parse

KEEP_COLUMN = len("  keep ") + 1
"""Column, on line 2 of the wrapping recipe, where a keep expression's text starts."""
METRIC_COLUMN = len("  metric ") + 1


def keep(text: str):
    """The IR of ``keep TEXT`` (written on line 2 from column :data:`KEEP_COLUMN`)."""
    recipe = _lowered(f"stage f = filter(d) {{\n  keep {text}\n}}\n")
    return recipe.stages["f"].rules[0].condition


def metric(text: str):
    """The IR of ``metric TEXT`` (written on line 2 from column :data:`METRIC_COLUMN`)."""
    recipe = _lowered(f"eval e = evaluate(m, d) {{\n  metric {text}\n  prompt = p\n}}\n")
    return recipe.evals["e"].metrics[0].expr


def _lowered(source: str):
    errors = Collector()
    recipe = lower(parse(source, "expr.kd"), errors)
    assert errors.diagnostics == [], [d.message for d in errors.diagnostics]
    return recipe
