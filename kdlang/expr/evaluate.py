"""Evaluating filter and metric expressions on one row (a mapping of column to value).

Null propagates: arithmetic with null is null, an ordering comparison with null is false, a
function given null for a typed argument returns null (``is_null``, ``str``, ``exact_match`` and
the other comparisons of whole values see null as it is). Evaluation never raises on data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kdlang.expr.functions import FUNCTIONS
from kdlang.ir import expr as ir

_NULL_AWARE = {"is_null", "str", "exact_match", "set_equal", "numeric_equal"}


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
        return None if value is None else -value
    if isinstance(node, ir.BinOp):
        return _binop(node, row)
    if isinstance(node, ir.Apply):
        return _apply(node, row)
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
    if left is None or right is None:
        return False if op in ("<", "<=", ">", ">=") else None
    try:
        if op == "<":
            return left < right
        if op == "<=":
            return left <= right
        if op == ">":
            return left > right
        if op == ">=":
            return left >= right
        if op == "+":
            return left + right
        if op == "-":
            return left - right
        if op == "*":
            return left * right
        if op == "/":
            return left / right if right != 0 else None
    except TypeError:
        return None if op in "+-*/" else False
    raise ValueError(op)


def _equal(left: Any, right: Any) -> bool:
    # Numbers compare by value whatever their type; a numeric string never equals a number,
    # which would hide a real type confusion in the data.
    return left == right


def _contains(container: Any, item: Any) -> bool:
    if container is None or item is None:
        return False
    if isinstance(container, tuple):  # an inclusive range low..high
        low, high = container
        try:
            return low <= item <= high
        except TypeError:
            return False
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    return item in container


def _apply(node: ir.Apply, row: Mapping[str, Any]) -> Any:
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
    except (TypeError, ValueError, OverflowError):
        return None
