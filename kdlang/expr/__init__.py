"""The expression language of filters and metrics: built-ins, type checking, evaluation, and the
lowering of its syntax to IR (:mod:`kdlang.expr.lower`, used by :mod:`kdlang.lower`)."""

from kdlang.expr.evaluate import evaluate
from kdlang.expr.functions import FUNCTIONS
from kdlang.expr.typecheck import typecheck

__all__ = ["FUNCTIONS", "evaluate", "typecheck"]
