"""The expression language of ``keep`` filters, ``metric`` lines and computed columns
(``map``, ``explode``), as IR.

A small, typed, side-effect-free language evaluated by kdlang itself (never Python ``eval``):
literals, column names, calls of built-in functions, arithmetic, comparisons, ``and``/``or``/
``not``, ``in`` with lists and ranges, items (``x[0]``) and fields (``turn.content``). Types are checked (:mod:`kdlang.expr.typecheck`, run by
:mod:`kdlang.check`) before any row is seen; :mod:`kdlang.expr.functions` defines the built-ins.
"""

from typing import Any, Literal, get_args

from pydantic import Field, InstanceOf, SerializeAsAny

from kdlang.ir.values import Node


class ExprNode(Node):
    """Base of the expression nodes below."""


Expr = SerializeAsAny[InstanceOf[ExprNode]]
"""Any expression node. Validated by an instance check: the nodes are made by the lowering alone
(:mod:`kdlang.expr.lower`), each validated by its own class as it is made, and never read from
dicts or JSON. Typed as the union of the node classes, a field would have pydantic build the
schema of every class of the union (recursive ones) inside each model with the field, used by
the recipe or not: a large part of ``kdlang check``'s start-up. Serialized as any: each node by
its own class, where ``InstanceOf`` alone would dump only the fields of :class:`ExprNode`."""


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


BinaryOperator = Literal[
    "+", "-", "*", "/", "==", "!=", "<", "<=", ">", ">=", "in", "not in", "and", "or"
]
UnaryOperator = Literal["-", "not"]
BINARY_OPERATORS: tuple[BinaryOperator, ...] = get_args(BinaryOperator)
UNARY_OPERATORS: tuple[UnaryOperator, ...] = get_args(UnaryOperator)


class BinOp(ExprNode):
    kind: Literal["binop"] = "binop"
    op: BinaryOperator
    left: Expr
    right: Expr


class UnOp(ExprNode):
    kind: Literal["unop"] = "unop"
    op: UnaryOperator
    operand: Expr


class Seq(ExprNode):
    kind: Literal["seq"] = "seq"
    items: list[Expr]


class Between(ExprNode):
    """``low..high``, inclusive at both ends (``len(x) in 8..400``)."""

    kind: Literal["range"] = "range"
    low: Expr
    high: Expr


class Index(ExprNode):
    """``base[index]``: a list's item (negative counts from the end), a string's character, a
    map's value at a key; null when there is none."""

    kind: Literal["index"] = "index"
    base: Expr
    index: Expr


class Member(ExprNode):
    """``base.name``: a field of a map (``row.meta.lang``, ``last(turns).content``); null when
    the map has no such key."""

    kind: Literal["member"] = "member"
    base: Expr
    name: str


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
        elif isinstance(node, Index):
            walk(node.base)
            walk(node.index)
        elif isinstance(node, Member):
            walk(node.base)

    walk(expr)
    return found
