"""Type checking of filter and metric expressions against the columns available at a stage.

Types: ``str``, ``int``, ``float``, ``bool``, ``list``, ``range``, ``null`` and ``any`` (a
column whose values' type is not known before the run). ``any`` is compatible with everything;
errors are reported only where a mistake is certain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from kdlang.expr.functions import FUNCTIONS, NUMERIC, SCORED_METRICS
from kdlang.ir import expr as ir
from kdlang.syntax.diagnostics import Collector, suggestion

_ARITHMETIC = {"+", "-", "*", "/"}
_ORDER = {"<", "<=", ">", ">="}


def typecheck(node, columns: Mapping[str, str], errors: Collector, want: str | None = None) -> str:
    """The type of ``node``; problems go to ``errors``. ``want`` = "bool" for keep conditions,
    "metric" for metric lines (bool or number)."""
    checker = _Checker(columns, errors)
    if want == "metric" and isinstance(node, ir.Apply) and node.func in SCORED_METRICS:
        return checker.scored(node)
    kind = checker.type(node)
    if want == "bool" and kind not in ("bool", "any"):
        errors.error(
            "KD0208",
            f"a `keep` condition must be true or false, this is {_name(kind)}",
            node.span,
            help="compare it, e.g. `len(x) > 0`, or test it with a function such as matches(...)",
        )
    if want == "metric" and kind not in ("bool", "int", "float", "any"):
        errors.error(
            "KD0208",
            f"a metric must be a number or true/false per row, this is {_name(kind)}",
            node.span,
        )
    return kind


def _name(kind: str) -> str:
    return {
        "str": "a string",
        "int": "an integer",
        "float": "a number",
        "bool": "true/false",
        "list": "a list",
        "map": "a map",
        "range": "a range",
        "null": "null",
    }.get(kind, kind)


class _Checker:
    def __init__(self, columns: Mapping[str, str], errors: Collector):
        self.columns = columns
        self.errors = errors

    def type(self, node) -> str:
        method = getattr(self, "_" + type(node).__name__.lower())
        return method(node)

    def _lit(self, node: ir.Lit) -> str:
        value = node.value
        if value is None:
            return "null"
        return {bool: "bool", int: "int", float: "float", str: "str"}.get(type(value), "any")

    def _column(self, node: ir.Column) -> str:
        if node.name not in self.columns:
            self.errors.error(
                "KD0205",
                f"unknown column `{node.name}`",
                node.span,
                help=suggestion(node.name, self.columns) or _available(self.columns),
            )
            return "any"
        return self.columns[node.name]

    def _seq(self, node: ir.Seq) -> str:
        for item in node.items:
            self.type(item)
        return "list"

    def _between(self, node: ir.Between) -> str:
        for end in (node.low, node.high):
            kind = self.type(end)
            if kind not in NUMERIC | {"any"}:
                self.errors.error(
                    "KD0208", f"range ends must be numbers, not {_name(kind)}", end.span
                )
        return "range"

    def _unop(self, node: ir.UnOp) -> str:
        kind = self.type(node.operand)
        if node.op == "not":
            return "bool"
        if kind not in NUMERIC | {"any"}:
            self.errors.error("KD0208", f"cannot negate {_name(kind)}", node.operand.span)
        return kind if kind in NUMERIC else "any"

    def _binop(self, node: ir.BinOp) -> str:
        left, right = self.type(node.left), self.type(node.right)
        op = node.op
        if op in ("and", "or"):
            return "bool"
        if op in ("in", "not in"):
            if right not in ("list", "range", "str", "any"):
                self.errors.error(
                    "KD0208",
                    f"`{op}` needs a list, range or string on its right, not {_name(right)}",
                    node.right.span,
                )
            if right == "str" and left not in ("str", "any"):
                self.errors.error(
                    "KD0208",
                    f"only a string can be in a string, not {_name(left)}",
                    node.left.span,
                )
            if right == "range" and left not in NUMERIC | {"any"}:
                self.errors.error(
                    "KD0208", f"only numbers can be in a range, not {_name(left)}", node.left.span
                )
            return "bool"
        if op in ("==", "!="):
            return "bool"
        if op in _ORDER:
            if not _comparable(left, right):
                self.errors.error(
                    "KD0208",
                    f"cannot order {_name(left)} and {_name(right)} with `{op}`",
                    node.span,
                )
            return "bool"
        if op == "+" and left == right == "str":
            return "str"
        for side, kind in ((node.left, left), (node.right, right)):
            if kind not in NUMERIC | {"any"}:
                self.errors.error("KD0208", f"`{op}` needs numbers, not {_name(kind)}", side.span)
        if op == "/" or "float" in (left, right):
            return "float"
        return "int" if left == right == "int" else "any"

    def _apply(self, node: ir.Apply) -> str:
        if node.func in SCORED_METRICS:
            self.errors.error(
                "KD0208",
                f"`{node.func}(...)` is a whole metric, not part of an expression",
                node.span,
                help=f"write it alone: `metric {node.func}(column)`",
            )
            return "float"
        function = FUNCTIONS.get(node.func)
        if function is None:
            self.errors.error(
                "KD0209",
                f"unknown function `{node.func}`",
                node.span,
                help=suggestion(node.func, FUNCTIONS) or "functions: " + ", ".join(FUNCTIONS),
            )
            for unknown_arg in node.args:
                self.type(unknown_arg)
            return "any"
        names = [name for name, _ in function.params]
        args: list[ir.ExprNode | None] = list(node.args)
        for key, value in node.kwargs.items():
            if key not in names:
                self.errors.error(
                    "KD0208",
                    f"`{node.func}` has no argument `{key}`",
                    value.span,
                    help=suggestion(key, names),
                )
                continue
            position = names.index(key)
            while len(args) <= position:
                args.append(None)
            args[position] = value
        low, high = function.arity
        given = sum(a is not None for a in args)
        if not low <= len(args) <= high or given < low:
            expected = f"{low}" if low == high else f"{low} to {high}"
            self.errors.error(
                "KD0208", f"`{node.func}` takes {expected} argument(s), got {len(args)}", node.span
            )
        kinds: list[str] = []
        for index, (arg, (param, allowed)) in enumerate(zip(args, function.params, strict=False)):
            if arg is None:
                continue
            kind = self.type(arg)
            if NUMERIC & allowed:
                kinds.append(kind)
            if "any" not in allowed and kind not in allowed | {"any"}:
                self.errors.error(
                    "KD0208",
                    f"argument `{param}` of `{node.func}` must be "
                    + " or ".join(sorted(_name(t) for t in allowed))
                    + f", not {_name(kind)}",
                    arg.span,
                )
            if (
                index == function.pattern_arg
                and isinstance(arg, ir.Lit)
                and isinstance(arg.value, str)
            ):
                try:
                    re.compile(arg.value)
                except re.error as bad:
                    self.errors.error(
                        "KD0208",
                        f"invalid regular expression: {bad}",
                        arg.span,
                        help='write patterns as raw strings: r"..."',
                    )
        if function.returns == "num":
            return _numeric_result(kinds)
        return function.returns

    def scored(self, node: ir.Apply) -> str:
        if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], ir.Column):
            self.errors.error(
                "KD0208", f"`{node.func}` takes one column: {node.func}(target)", node.span
            )
            return "float"
        self._column(node.args[0])
        return "float"


def _numeric_result(kinds: list[str]) -> str:
    if all(kind == "int" for kind in kinds):
        return "int"
    return "float" if all(kind in NUMERIC for kind in kinds) else "any"


def _comparable(left: str, right: str) -> bool:
    if "any" in (left, right):
        return True
    return (left in NUMERIC and right in NUMERIC) or left == right == "str"


def _available(columns: Mapping[str, str]) -> str:
    return (
        "available columns: " + ", ".join(sorted(columns))
        if columns
        else "no columns are available here"
    )
