"""Expressions of the language on a whole batch of rows at once, as ``pyarrow.compute`` kernels.

:func:`values` gives an expression's value on every row of a batch, and :func:`mask` the rows
where it is true (what ``keep`` keeps). The forms Arrow computes with exactly the meaning of
the row evaluator (:mod:`kdlang.expr.evaluate`) run as kernels: literals and columns,
comparisons, ``and``/``or``/``not``, ``in`` a list or a range, arithmetic, ``len`` of strings
and lists, ``matches``, ``contains``, ``startswith``, ``endswith``, ``lower``, ``upper``,
``strip`` and ``is_null``. Any other part of an expression (``extract``, ``if``, fields of
maps, ...) is evaluated row by row on that batch and its values joined back in; and where the
two would disagree on a batch the whole expression is evaluated row by row on it:

- a regular expression RE2 (Arrow's engine) reads otherwise than Python's ``re``: one that
  RE2 does not accept (look-arounds, back-references), one with a POSIX class, a ``{,n}`` or
  verbose flags, and, on a batch with any text that is not ASCII, one with ``\\d``, ``\\w``,
  ``\\s``, ``\\b`` or ignoring case (Python's classes are Unicode, RE2's ASCII);
- ``lower``/``upper`` of text that is not ASCII (Python maps some letters to two);
- integers beyond 2**53 meeting floats, and sums that overflow 64 bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from kdlang.expr import evaluate
from kdlang.ir import expr as ir

__all__ = ["Batch", "lowered", "mask", "values", "vectorised"]

PY_SPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""The characters Python's ``str.strip`` and ``str.split`` take for white space."""
_EXACT_FLOAT = 2**53


class _RowWise(Exception):
    """This part (or the whole expression) is evaluated row by row on the batch."""


class Batch:
    """The columns of a batch and, made once when a part needs them, its rows as dicts."""

    def __init__(self, columns: Mapping[str, pa.Array], length: int):
        self.columns = columns
        self.length = length
        self._rows: list[dict[str, Any]] | None = None
        self.rowwise: list[str] = []  # what ran row by row (for tests and the report)

    @classmethod
    def of(cls, batch: pa.RecordBatch | pa.Table) -> Batch:
        if isinstance(batch, pa.Table):
            batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else batch
        columns = dict(zip(batch.schema.names, batch.columns, strict=True))
        return cls(
            {k: pa.array(v) if isinstance(v, pa.ChunkedArray) else v for k, v in columns.items()},
            batch.num_rows,
        )

    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = (
                pa.RecordBatch.from_pydict(dict(self.columns)).to_pylist()
                if (self.columns)
                else [{} for _ in range(self.length)]
            )
        return self._rows


_FAILURES = (_RowWise, pa.ArrowException, OverflowError)


def vectorised(node: ir.ExprNode, batch: Batch) -> pa.Array | None:
    """The value of ``node`` on every row of ``batch`` as kernels give it; None where a part
    of it is to be evaluated row by row on this batch (see the module)."""
    try:
        return _array(_lower(node, batch), batch)
    except _FAILURES:
        batch.rowwise.append("all")
        return None


def values(node: ir.ExprNode, batch: Batch) -> pa.Array:
    """The value of ``node`` on every row of ``batch`` (as :func:`evaluate` gives it)."""
    result = vectorised(node, batch)
    return result if result is not None else _python(node, batch)


def mask(node: ir.ExprNode, batch: Batch) -> pa.BooleanArray:
    """Where ``evaluate(node, row) is True``, never null."""
    result = vectorised(node, batch)
    if result is None:
        return pa.array([evaluate(node, row) is True for row in batch.rows()], pa.bool_())
    if result.type != pa.bool_():
        return pa.array([False] * batch.length, pa.bool_())
    return pc.fill_null(result, False)


def lowered(node: ir.ExprNode, batch: Batch) -> bool:
    """Whether ``node`` runs as kernels on ``batch`` alone (nothing row by row)."""
    values(node, batch)
    return not batch.rowwise


def _python(node: ir.ExprNode, batch: Batch) -> pa.Array:
    results = [evaluate(node, row) for row in batch.rows()]
    return pa.array(results) if results else pa.nulls(0)


# A lowered part is an Arrow array, or a constant (a Python literal, shared by every row).
class Const:
    def __init__(self, value: Any):
        self.value = value


def _array(part: pa.Array | Const, batch: Batch) -> pa.Array:
    if isinstance(part, Const):
        value = part.value
        if value is None:
            return pa.nulls(batch.length)
        return pa.array([value] * batch.length, type=_literal_type(value))
    return part


def _literal_type(value: Any) -> pa.DataType:
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise _RowWise
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    if isinstance(value, str):
        return pa.string()
    raise _RowWise


def _kind(part: pa.Array | Const) -> str:
    """``int``, ``float``, ``str``, ``bool``, ``null``, ``list`` or ``other``."""
    if isinstance(part, Const):
        value = part.value
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "bool"
        return {int: "int", float: "float", str: "str"}.get(type(value), "other")
    kind = part.type
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_floating(kind):
        return "float"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "str"
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_null(kind):
        return "null"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return "list"
    return "other"


def _num(part: pa.Array | Const) -> pa.Array | pa.Scalar:
    """A numeric part as int64 or float64 (Python's int and float)."""
    if isinstance(part, Const):
        return pa.scalar(part.value, _literal_type(part.value))
    if pa.types.is_integer(part.type):
        return part.cast(pa.int64())
    return part.cast(pa.float64())


def _operand(part: pa.Array | Const) -> pa.Array | pa.Scalar:
    if isinstance(part, Const):
        return pa.scalar(part.value, _literal_type(part.value))
    return part


def _exact_together(left: pa.Array | Const, right: pa.Array | Const) -> None:
    """Integers meet floats only where every integer is a float exactly."""
    kinds = {_kind(left), _kind(right)}
    if kinds != {"int", "float"}:
        return
    for part in (left, right):
        if _kind(part) != "int":
            continue
        if isinstance(part, Const):
            if abs(part.value) > _EXACT_FLOAT:
                raise _RowWise
        else:
            bounds = pc.min_max(part.cast(pa.int64()))
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low is not None and max(abs(low), abs(high)) > _EXACT_FLOAT:
                raise _RowWise


def _exact_floats(part: pa.Array | Const) -> None:
    """An integer part is a float exactly (no integer beyond 2**53)."""
    if _kind(part) == "int":
        _exact_together(part, Const(0.0))


def _false(batch: Batch) -> pa.Array:
    return pa.array([False] * batch.length, pa.bool_())


def _nulls(batch: Batch) -> pa.Array:
    return pa.nulls(batch.length)


def _both_null(left, right, batch: Batch) -> pa.Array:
    return pc.and_(pc.is_null(_array(left, batch)), pc.is_null(_array(right, batch)))


# -- the forms ----------------------------------------------------------------------------


def _lower(node: ir.ExprNode, batch: Batch) -> pa.Array | Const:
    if isinstance(node, ir.UnOp | ir.BinOp | ir.Apply) and _constant(node):
        value = evaluate(node, {})  # the same on every row: Python's value, once
        if value is None or isinstance(value, bool | int | float | str):
            return Const(value)
    if isinstance(node, ir.Lit):
        if node.value is not None and not isinstance(node.value, bool | int | float | str):
            raise _RowWise
        return Const(node.value)
    if isinstance(node, ir.Column):
        column = batch.columns.get(node.name)
        return column if column is not None else _nulls(batch)
    if isinstance(node, ir.UnOp):
        return _unary(node, batch)
    if isinstance(node, ir.BinOp):
        return _binary(node, batch)
    if isinstance(node, ir.Apply) and not node.kwargs:
        from .functions import FUNCTIONS

        if node.func in FUNCTIONS:
            return FUNCTIONS[node.func](node, batch)
    return _rowwise_part(node, batch)


def _constant(node: Any) -> bool:
    """Whether ``node`` reads no column."""
    if isinstance(node, ir.Column):
        return False
    if isinstance(node, ir.ExprNode):
        return all(_constant(getattr(node, name)) for name in type(node).model_fields)
    if isinstance(node, list):
        return all(_constant(item) for item in node)
    if isinstance(node, dict):
        return all(_constant(item) for item in node.values())
    return True


def _rowwise_part(node: ir.ExprNode, batch: Batch) -> pa.Array:
    """A part Arrow does not compute, row by row, as an array of a plain type."""
    batch.rowwise.append(type(node).__name__)
    result = _python(node, batch)
    if _kind(result) in ("other", "list"):
        raise _RowWise
    return result


def _truth(part: pa.Array | Const, batch: Batch) -> pa.Array:
    kind = _kind(part)
    if kind == "null":
        return _false(batch)
    if kind != "bool":
        raise _RowWise
    return pc.fill_null(_array(part, batch), False)


def _unary(node: ir.UnOp, batch: Batch) -> pa.Array | Const:
    operand = _lower(node.operand, batch)
    if node.op == "not":
        return pc.invert(_truth(operand, batch))
    kind = _kind(operand)
    if kind in ("int", "float") and not isinstance(operand, Const):
        return pc.negate_checked(_num(operand))
    if kind in ("str", "bool", "null", "list"):
        return _nulls(batch)
    raise _RowWise


_ORDER = {"<": pc.less, "<=": pc.less_equal, ">": pc.greater, ">=": pc.greater_equal}
_CHECKED = {"+": pc.add_checked, "-": pc.subtract_checked, "*": pc.multiply_checked}
_SCALAR = ("int", "float", "str", "bool", "null")


def _binary(node: ir.BinOp, batch: Batch) -> pa.Array | Const:
    op = node.op
    if op in ("and", "or"):
        left = _truth(_lower(node.left, batch), batch)
        right = _truth(_lower(node.right, batch), batch)
        return pc.and_(left, right) if op == "and" else pc.or_(left, right)
    if op in ("in", "not in"):
        inside = _inside(node, batch)
        return inside if op == "in" else pc.invert(inside)
    left, right = _lower(node.left, batch), _lower(node.right, batch)
    kinds = (_kind(left), _kind(right))
    if any(kind not in _SCALAR for kind in kinds):
        raise _RowWise
    numbers = all(kind in ("int", "float") for kind in kinds)
    if op in ("==", "!="):
        if "null" in kinds:
            equal = _both_null(left, right, batch)
        elif numbers or kinds[0] == kinds[1]:
            _exact_together(left, right)
            a, b = (_num(left), _num(right)) if numbers else (_operand(left), _operand(right))
            equal = pc.or_(
                pc.fill_null(pc.equal(_array_of(a, batch), b), False),
                _both_null(left, right, batch),
            )
        else:
            equal = _both_null(left, right, batch)
        return equal if op == "==" else pc.invert(equal)
    if op in _ORDER:
        if numbers:
            _exact_together(left, right)
            compared = _ORDER[op](_array_of(_num(left), batch), _num(right))
        elif kinds == ("str", "str"):
            compared = _ORDER[op](_array_of(_operand(left), batch), _operand(right))
        else:
            return _false(batch)
        return pc.fill_null(compared, False)
    if op == "+" and kinds == ("str", "str"):
        return pc.binary_join_element_wise(
            _array(left, batch), _array(right, batch), pa.scalar("", pa.string())
        )
    if not numbers:
        return _nulls(batch)
    _exact_together(left, right)
    a, b = _array_of(_num(left), batch), _num(right)
    if op == "/":
        _exact_floats(left)  # Python divides integers exactly, then rounds once
        _exact_floats(right)
        quotient = pc.divide(a.cast(pa.float64()), b.cast(pa.float64()))
        zero = pc.equal(_array_of(b, batch).cast(pa.float64()), 0.0)
        return pc.if_else(pc.fill_null(zero, False), pa.scalar(None, pa.float64()), quotient)
    return _CHECKED[op](a, b)


def _array_of(value: pa.Array | pa.Scalar, batch: Batch) -> pa.Array:
    if isinstance(value, pa.Scalar):
        return pa.array([value.as_py()] * batch.length, type=value.type)
    return value


def _inside(node: ir.BinOp, batch: Batch) -> pa.Array:
    """``left in right`` (never null), for a list of literals, a range or a text."""
    item = _lower(node.left, batch)
    kind = _kind(item)
    if kind not in _SCALAR:
        raise _RowWise
    container = node.right
    if isinstance(container, ir.Seq):
        if not all(isinstance(e, ir.Lit) for e in container.items):
            raise _RowWise
        found = _false(batch)
        for element in container.items:
            value = Const(element.value)  # type: ignore[attr-defined]
            other = _kind(value)
            same = (kind in ("int", "float") and other in ("int", "float")) or kind == other
            if not same or kind == "null" or other == "null":
                continue
            _exact_together(item, value)
            a = _num(item) if other in ("int", "float") else _operand(item)
            b = _num(value) if other in ("int", "float") else _operand(value)
            found = pc.or_(found, pc.fill_null(pc.equal(_array_of(a, batch), b), False))
        return found
    if isinstance(container, ir.Between):
        low, high = _lower(container.low, batch), _lower(container.high, batch)
        bounds = (_kind(low), _kind(high))
        if any(k not in _SCALAR for k in bounds):
            raise _RowWise
        if kind not in ("int", "float") or any(k not in ("int", "float") for k in bounds):
            return _false(batch)
        _exact_together(item, low)
        _exact_together(item, high)
        value = _array_of(_num(item), batch)
        inside = pc.and_(pc.greater_equal(value, _num(low)), pc.less_equal(value, _num(high)))
        return pc.fill_null(inside, False)
    text = _lower(container, batch)
    if _kind(text) == "null" or kind == "null":
        return _false(batch)
    if _kind(text) != "str":
        raise _RowWise
    if kind != "str":
        return _false(batch)
    if not isinstance(item, Const):
        raise _RowWise
    return pc.fill_null(pc.match_substring(_array(text, batch), item.value), False)
