"""Lowering of expressions: a ``keep`` condition's, a ``metric`` line's or a computed column's
syntax to its IR.

Settings are values, lowered by :mod:`kdlang.lower.settings`; filter conditions and metrics
are expressions of the language of :mod:`kdlang.ir.expr`, evaluated on rows later. The two
read the same syntax differently: a bare name here is a column and ``a.b`` its field ``b`` (in
a setting, a reference or a symbol), and arithmetic stays an operation on row values rather
than being folded into a constant.

Only the syntax tree's node and field names are read (:mod:`kdlang.syntax.ast`) and only the
IR's expression nodes built: this module depends on neither the declaration lowering that uses
it (:mod:`kdlang.lower`) nor the rest of the expression language.
"""

from __future__ import annotations

from kdlang.ir import expr as ir
from kdlang.ir.validation import Unlowerable
from kdlang.syntax import ast
from kdlang.syntax.diagnostics import Collector
from kdlang.syntax.span import Span

# The parser writes exactly these operators (the grammar's); as the IR's literal types:
_BINARY: dict[str, ir.BinaryOperator] = {op: op for op in ir.BINARY_OPERATORS}
_UNARY: dict[str, ir.UnaryOperator] = {op: op for op in ir.UNARY_OPERATORS}


def lower_expression(node: ast.Expr, errors: Collector) -> ir.ExprNode:
    """The expression IR of ``node``. A construct with no meaning in an expression (a map,
    ``a -> b``) is reported to ``errors`` and raises :class:`Unlowerable`."""
    span = node.span
    if isinstance(node, ast.String | ast.Number | ast.Bool | ast.Percent):
        return ir.Lit(value=node.value, span=span)
    if isinstance(node, ast.Null):
        return ir.Lit(value=None, span=span)
    if isinstance(node, ast.Ref):
        return _dotted(node) if len(node.parts) > 1 else ir.Column(name=node.parts[0], span=span)
    if isinstance(node, ast.Index):
        return ir.Index(
            base=lower_expression(node.base, errors),
            index=lower_expression(node.index, errors),
            span=span,
        )
    if isinstance(node, ast.Member):
        return ir.Member(base=lower_expression(node.base, errors), name=node.name, span=span)
    if isinstance(node, ast.Call):
        return ir.Apply(
            func=node.name,
            args=[lower_expression(arg, errors) for arg in node.args],
            kwargs={kw.name: lower_expression(kw.value, errors) for kw in node.kwargs},
            span=span,
        )
    if isinstance(node, ast.Binary):
        return ir.BinOp(
            op=_BINARY[node.op],
            left=lower_expression(node.left, errors),
            right=lower_expression(node.right, errors),
            span=span,
        )
    if isinstance(node, ast.Unary):
        return ir.UnOp(
            op=_UNARY[node.op], operand=lower_expression(node.operand, errors), span=span
        )
    if isinstance(node, ast.ListExpr):
        return ir.Seq(items=[lower_expression(item, errors) for item in node.items], span=span)
    if isinstance(node, ast.Range):
        return ir.Between(
            low=lower_expression(node.low, errors),
            high=lower_expression(node.high, errors),
            span=span,
        )
    errors.error("KD0103", "maps and `->` have no meaning in an expression", node.span)
    raise Unlowerable


def _dotted(node: ast.Ref) -> ir.ExprNode:
    """``a.b.c``: column ``a`` and its fields ``b``, then ``c``; each node spans the text up to
    its own part."""
    start = node.span
    result: ir.ExprNode = ir.Column(
        name=node.parts[0],
        span=Span(
            start.file, start.line, start.column, start.line, start.column + len(node.parts[0])
        ),
    )
    end = start.column + len(node.parts[0])
    for part in node.parts[1:]:
        end += 1 + len(part)
        span = Span(start.file, start.line, start.column, start.line, end)
        result = ir.Member(base=result, name=part, span=span)
    return result


def metric_name(node: ast.Expr) -> str:
    """The name a ``metric`` line without ``NAME =`` gets: its function's, else ``metric``."""
    return node.name if isinstance(node, ast.Call) else "metric"
