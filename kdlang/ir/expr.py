"""The expression language of ``keep`` filters and ``metric`` lines, as IR.

A small, typed, side-effect-free language evaluated by kdlang itself (never Python ``eval``):
literals, column names, calls of built-in functions, arithmetic, comparisons, ``and``/``or``/
``not``, ``in`` with lists and ranges. Types are checked by :mod:`kdlang.check` before any row is
seen; :mod:`kdlang.check.functions` defines the built-ins.
"""

from typing import Any, Literal

from pydantic import Field

from kdlang.ir.values import Node, lowered


class ExprNode(Node):
    """Base of the expression nodes below."""


Expr = lowered(ExprNode)
"""Any expression node."""


class Lit(ExprNode):
    kind: Literal["lit"] = "lit"
    value: Any


class Column(ExprNode):
    kind: Literal["column"] = "column"
    name: str


class Apply(ExprNode):
    """A call of a built-in function: ``extract(rationale, r"#### (-?\\d+)")``."""

    kind: Literal["apply"] = "apply"
    func: str
    args: list[Expr]
    kwargs: dict[str, Expr] = Field(default_factory=dict)


class BinOp(ExprNode):
    kind: Literal["binop"] = "binop"
    op: Literal["+", "-", "*", "/", "==", "!=", "<", "<=", ">", ">=", "in", "not in", "and", "or"]
    left: Expr
    right: Expr


class UnOp(ExprNode):
    kind: Literal["unop"] = "unop"
    op: Literal["-", "not"]
    operand: Expr


class Seq(ExprNode):
    kind: Literal["seq"] = "seq"
    items: list[Expr]


class Between(ExprNode):
    """``low..high``, inclusive at both ends (``len(x) in 8..400``)."""

    kind: Literal["range"] = "range"
    low: Expr
    high: Expr


def columns_used(expr: Any) -> list[Column]:
    """Every column an expression reads, in source order."""
    found: list[Column] = []

    def walk(node: Any) -> None:
        if isinstance(node, Column):
            found.append(node)
        elif isinstance(node, Apply):
            for arg in [*node.args, *node.kwargs.values()]:
                walk(arg)
        elif isinstance(node, BinOp):
            walk(node.left)
            walk(node.right)
        elif isinstance(node, UnOp):
            walk(node.operand)
        elif isinstance(node, Seq):
            for item in node.items:
                walk(item)
        elif isinstance(node, Between):
            walk(node.low)
            walk(node.high)

    walk(expr)
    return found
