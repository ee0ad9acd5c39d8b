"""The IR: validated pydantic models of a recipe, every node carrying its source span."""

from kdlang.ir.lower import lower
from kdlang.ir.recipe import Recipe, strip_spans

__all__ = ["Recipe", "lower", "strip_spans"]
