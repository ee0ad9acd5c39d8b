"""The expression language of filters and metrics: built-ins, type checking, evaluation."""

from kdlang.expr.evaluate import evaluate
from kdlang.expr.functions import FUNCTIONS
from kdlang.expr.typecheck import typecheck

__all__ = ["FUNCTIONS", "evaluate", "typecheck"]
