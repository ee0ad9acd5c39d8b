"""Lowering of settings: call arguments and block settings to neutral values, by name.

A declaration's settings come from its call (positional arguments, named by the declaration
kind, and keywords) and from ``key = value`` lines of its block. Each becomes a neutral value
(:mod:`kdlang.ir.values`: ``str``, numbers, ``bool``, ``None``, lists, maps, :class:`Ref`,
:class:`Percent`, :class:`CallValue`, :class:`Transition`) in :class:`Fields`, with the spans
that locate it, for the declaration's pydantic model to give it meaning
(:mod:`kdlang.ir.validation`). Constant arithmetic is folded (``lr = 3e-4 * 2``); any other
expression is an error in a setting. :mod:`kdlang.lower.declarations` builds declarations on this.
"""

from __future__ import annotations

import math
from typing import Any

from kdlang.ir.captured import CapturedLogits
from kdlang.ir.sources import LoRA
from kdlang.ir.validation import Fields, NodeT, Unlowerable, validate
from kdlang.ir.values import CallValue, Node, Percent, Ref, Transition
from kdlang.syntax import ast
from kdlang.syntax.diagnostics import Collector
from kdlang.syntax.span import Span

NESTED_NODES: dict[str, type[Node]] = {"lora": LoRA, "topk": CapturedLogits}
"""Calls in value position that are nodes of their own, validated where they are written."""

STMT_WORDS: dict[type[ast.Stmt], str] = {
    ast.LossStmt: "loss",
    ast.KeepStmt: "keep",
    ast.DedupStmt: "dedup",
    ast.DecontaminateStmt: "decontaminate",
    ast.MetricStmt: "metric",
}
"""The keyword of each block line that is no setting."""


class SettingsLowering:
    """Settings to :class:`Fields`; every problem goes to ``errors``."""

    def __init__(self, errors: Collector):
        self.errors = errors

    def fields(
        self,
        block: ast.Block | None,
        call: ast.Call | None = None,
        positional: tuple[str, ...] = (),
        allow: tuple[type[ast.Stmt], ...] = (),
    ) -> Fields:
        """The settings of ``call`` (its positional arguments named by ``positional``) and of
        ``block``'s ``key = value`` lines; a block line of a kind in ``allow`` is left for the
        caller, any other is reported."""
        fields = Fields()
        if call is not None:
            if len(call.args) > len(positional):
                extra = call.args[len(positional)]
                self.errors.error(
                    "KD0112",
                    f"`{call.name}` takes {len(positional)} positional argument(s): "
                    + ", ".join(positional),
                    extra.span,
                )
                fields.missing_explained = True
            elif len(call.args) < len(positional) and not any(
                k.name in positional for k in call.kwargs
            ):
                missing = positional[len(call.args) :]
                self.errors.error(
                    "KD0112",
                    f"`{call.name}` needs its "
                    + ", ".join(f"`{m}`" for m in missing)
                    + " argument",
                    call.span,
                )
                fields.reported.update(missing)
            for name, arg in zip(positional, call.args, strict=False):
                fields.add(name, self.value(arg), arg.span, arg)
            self.keywords(fields, call)
        for stmt in block.stmts if block else []:
            if isinstance(stmt, ast.Setting):
                if stmt.key in fields.values:
                    self.errors.error(
                        "KD0106",
                        f"`{stmt.key}` is set twice",
                        stmt.key_span,
                        notes=[("first set here", fields.key_spans[stmt.key])],
                    )
                    continue
                fields.add(
                    stmt.key, self.value(stmt.value), stmt.value.span, stmt.value, stmt.key_span
                )
            elif not isinstance(stmt, allow):
                self.errors.error(
                    "KD0109",
                    f"`{STMT_WORDS[type(stmt)]}` is not allowed here",
                    stmt.span,
                    help=_where_allowed(stmt),
                )
        return fields

    def given(
        self,
        cls: type[Node],
        fields: Fields,
        key: str,
        value: Any,
        span: Span,
        expr: ast.Expr | None = None,
    ) -> None:
        """Add a field the declaration's syntax gives (``cls.syntax_fields``); a setting of the
        same name is reported rather than silently replaced."""
        if key in fields.values:
            self.errors.error(
                "KD0102",
                f"`{key}` is not a setting: it is given by {cls.syntax_fields[key]}",
                fields.key_spans[key],
            )
        fields.add(key, value, span, expr)

    def keywords(self, fields: Fields, call: ast.Call) -> None:
        """The keyword arguments of ``call``, each a setting."""
        for kw in call.kwargs:
            if kw.name in fields.values:
                self.errors.error("KD0106", f"`{kw.name}` is given twice", kw.span)
                continue
            fields.add(kw.name, self.value(kw.value), kw.value.span, kw.value, kw.span)

    def validated(
        self, cls: type[NodeT], fields: Fields, span: Span, subject: Span
    ) -> NodeT | None:
        """``cls`` built from ``fields``, or None once its problems are reported."""
        return validate(cls, fields, span, subject, self.errors)

    def value(self, node: ast.Expr) -> Any:
        """A neutral value (see :mod:`kdlang.ir.values`) for a setting's expression."""
        if isinstance(node, ast.String | ast.Number | ast.Bool):
            return node.value
        if isinstance(node, ast.Null):
            return None
        if isinstance(node, ast.Percent):
            return Percent(fraction=node.value)
        if isinstance(node, ast.Ref):
            return Ref(name=node.dotted, span=node.span)
        if isinstance(node, ast.ListExpr):
            return [self.value(item) for item in node.items]
        if isinstance(node, ast.MapExpr):
            return {entry.key: self.value(entry.value) for entry in node.entries}
        if isinstance(node, ast.Transition):
            return Transition(start=self.value(node.start), end=self.value(node.end))
        if isinstance(node, ast.Call):
            if node.name in NESTED_NODES:
                fields = Fields()
                self.keywords(fields, node)
                for arg in node.args:
                    self.errors.error("KD0112", f"`{node.name}` takes keyword arguments", arg.span)
                return self.validated(NESTED_NODES[node.name], fields, node.span, node.func.span)
            return CallValue(
                name=node.name,
                args=tuple(self.value(a) for a in node.args),
                kwargs={k.name: self.value(k.value) for k in node.kwargs},
                span=node.span,
            )
        try:
            folded = fold(node)
        except FoldError as error:
            self.errors.error("KD0104", f"this arithmetic has no value: {error}", node.span)
            raise Unlowerable from None
        if folded is not None:
            return folded
        self.errors.error(
            "KD0103", "an expression is not allowed in a setting; give a value", node.span
        )
        raise Unlowerable


class FoldError(Exception):
    """Constant arithmetic without a finite value (a division by zero, an overflow)."""


_ARITHMETIC = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
}


def fold(node: ast.Expr) -> float | int | None:
    """The value of constant arithmetic in a setting (``lr = 3e-4 * 2``), else None;
    :class:`FoldError` when it has no finite value."""
    if isinstance(node, ast.Number):
        return node.value
    if isinstance(node, ast.Unary) and node.op == "-":
        inner = fold(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.Binary) and node.op in _ARITHMETIC:
        left, right = fold(node.left), fold(node.right)
        if left is None or right is None:
            return None
        if node.op == "/" and right == 0:
            raise FoldError("a division by zero")
        value = _ARITHMETIC[node.op](left, right)
        if isinstance(value, float) and not math.isfinite(value):
            raise FoldError("the result is too large to be a number")
        return value
    return None


def _where_allowed(stmt: ast.Stmt) -> str:
    word = STMT_WORDS[type(stmt)]
    where = {"loss": "`train` blocks", "metric": "`eval` blocks"}.get(word, "`filter` stages")
    return f"`{word}` lines belong in {where}"
