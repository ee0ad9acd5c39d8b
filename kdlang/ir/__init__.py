"""The IR: validated pydantic models of a recipe, every node carrying its source span.

The lowering from syntax (:mod:`kdlang.lower`) builds it; this package imports neither the
lowering nor the expression language's checker and evaluator.
"""

from kdlang.ir.recipe import Recipe, strip_spans

__all__ = ["Recipe", "strip_spans"]
