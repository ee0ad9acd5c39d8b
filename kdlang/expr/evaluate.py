"""Evaluating filter and metric expressions on one row (a mapping of column to value).

Null propagates: arithmetic with null is null, an ordering comparison with null is false, a
function given null for a typed argument returns null (``is_null``, ``str``, ``exact_match`` and
the other comparisons of whole values see null as it is). A value of the wrong type, which only
a column typed ``any`` can hold, is treated like null: ``true`` is no number and ``"a" * 3`` no
string. Evaluation never raises on data.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from typing import Any

from kdlang.expr.functions import FUNCTIONS
from kdlang.ir import expr as ir

_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_NULL_AWARE = {
    "is_null",
    "str",
    "exact_match",
    "set_equal",
    "same_chars",
    "numeric_equal",
    "get",
}


def evaluate(node, row: Mapping[str, Any]) -> Any:
    """The value of a (type-checked) expression on ``row``."""
    if isinstance(node, ir.Lit):
        return node.value
    if isinstance(node, ir.Column):
        return row.get(node.name)
    if isinstance(node, ir.Seq):
        return [evaluate(item, row) for item in node.items]
    if isinstance(node, ir.Between):
        return (evaluate(node.low, row), evaluate(node.high, row))
    if isinstance(node, ir.UnOp):
        value = evaluate(node.operand, row)
        if node.op == "not":
            return not _truth(value)
        return -value if _is_number(value) else None
    if isinstance(node, ir.BinOp):
        return _binop(node, row)
    if isinstance(node, ir.Apply):
        return _apply(node, row)
    if isinstance(node, ir.Member):
        base = evaluate(node.base, row)
        return base.get(node.name) if isinstance(base, dict) else None
    if isinstance(node, ir.Index):
        return _index(evaluate(node.base, row), evaluate(node.index, row))
    raise TypeError(f"not an expression node: {type(node).__name__}")


def _truth(value: Any) -> bool:
    return bool(value) if value is not None else False


def _binop(node: ir.BinOp, row: Mapping[str, Any]) -> Any:
    op = node.op
    if op == "and":
        return _truth(evaluate(node.left, row)) and _truth(evaluate(node.right, row))
    if op == "or":
        return _truth(evaluate(node.left, row)) or _truth(evaluate(node.right, row))
    left, right = evaluate(node.left, row), evaluate(node.right, row)
    if op in ("in", "not in"):
        inside = _contains(right, left)
        return inside if op == "in" else not inside
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    both_numbers = _is_number(left) and _is_number(right)
    if op in ("<", "<=", ">", ">="):
        # Numbers with numbers, strings with strings; anything else (null included) is false.
        if not (both_numbers or (isinstance(left, str) and isinstance(right, str))):
            return False
        return _ORDER[op](left, right)
    if op == "+" and isinstance(left, str) and isinstance(right, str):
        return left + right
    if not both_numbers:
        return None  # null, or a value of the wrong type in an `any` column
    if op == "/":
        return left / right if right != 0 else None
    return _ARITHMETIC[op](left, right)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: Any, right: Any) -> bool:
    # Numbers compare by value whatever their type; a numeric string never equals a number,
    # which would hide a real type confusion in the data. Nor does true equal 1 (Python's bool is
    # an int; the language's is not).
    if isinstance(left, bool) != isinstance(right, bool):
        return False
    return left == right


def _contains(container: Any, item: Any) -> bool:
    if container is None or item is None:
        return False
    if isinstance(container, tuple):  # an inclusive range low..high
        low, high = container
        return all(map(_is_number, (low, item, high))) and low <= item <= high
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, list):
        return any(_equal(item, element) for element in container)
    return False


def _index(base: Any, key: Any) -> Any:
    if isinstance(base, dict):
        return base.get(key) if isinstance(key, str) else None
    if not isinstance(base, list | str) or not isinstance(key, int) or isinstance(key, bool):
        return None
    return base[key] if -len(base) <= key < len(base) else None


def _apply(node: ir.Apply, row: Mapping[str, Any]) -> Any:
    if node.func == "if":  # only the chosen branch is evaluated
        test = _branch(node, "condition", 0)
        condition = evaluate(test, row) if test is not None else None
        chosen = _branch(node, "then", 1) if _truth(condition) else _branch(node, "otherwise", 2)
        return evaluate(chosen, row) if chosen is not None else None
    if node.func == "format":
        values = [evaluate(a, row) for a in node.args]
        named = {key: evaluate(value, row) for key, value in node.kwargs.items()}
        if not values or not isinstance(values[0], str):
            return None
        return FUNCTIONS["format"].impl(values[0], values[1:], named)
    function = FUNCTIONS[node.func]
    args = [evaluate(a, row) for a in node.args]
    names = [name for name, _ in function.params]
    for key, value in node.kwargs.items():
        position = names.index(key)
        while len(args) <= position:
            args.append(None)
        args[position] = evaluate(value, row)
    while args and args[-1] is None and len(args) > function.arity[0]:
        args.pop()
    if node.func not in _NULL_AWARE and any(a is None for a in args):
        return None
    try:
        return function.impl(*args)
    except (TypeError, ValueError, OverflowError, re.error):  # a pattern from the data may be bad
        return None


def _branch(node: ir.Apply, name: str, position: int) -> ir.ExprNode | None:
    """The argument of ``if`` given by keyword ``name`` or at ``position``."""
    if name in node.kwargs:
        return node.kwargs[name]
    return node.args[position] if len(node.args) > position else None
