"""Type checking of expressions (filters, metrics, computed columns) against the columns
available at a stage.

Types: ``str``, ``int``, ``float``, ``bool``, ``list``, ``map``, ``messages`` and ``turn``
(conversations and their turns), ``range``, ``null`` and ``any`` (a column whose values' type
is not known before the run); see :mod:`kdlang.expr.types`. ``any`` is compatible with
everything; errors are reported only where a mistake is certain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from kdlang.expr import types
from kdlang.expr.functions import FUNCTIONS, NUMERIC, SCORED_METRICS, format_fields
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
    return types.describe(kind)


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

    def _member(self, node: ir.Member) -> str:
        base = self.type(node.base)
        return self.field(base, node.name, node.span, node.base.span)

    def field(self, base: str, name: str, span, base_span) -> str:
        """The type of field ``name`` of a value of type ``base``."""
        if base == "turn":
            if name not in types.TURN_FIELDS:
                self.errors.error(
                    "KD0230",
                    f"a turn has no field `{name}`",
                    span,
                    help=suggestion(name, types.TURN_FIELDS)
                    or "a turn's fields: " + ", ".join(types.TURN_FIELDS),
                )
                return "any"
            return types.TURN_FIELDS[name]
        if base in ("map", "any"):
            return "any"
        self.errors.error(
            "KD0208",
            f"`.{name}`: {_name(base)} has no fields",
            base_span,
            help="fields are read from maps (JSON objects, parsed with json(...)) and turns",
        )
        return "any"

    def _index(self, node: ir.Index) -> str:
        base, key = self.type(node.base), self.type(node.index)
        if types.is_list(base) or base == "str":
            if key not in ("int", "any"):
                self.errors.error(
                    "KD0208",
                    f"an index of {_name(base)} is an integer, not {_name(key)}",
                    node.index.span,
                )
            return "str" if base == "str" else types.element(base)
        if types.is_map(base):
            if key not in ("str", "any"):
                self.errors.error(
                    "KD0208",
                    f"a key of {_name(base)} is a string, not {_name(key)}",
                    node.index.span,
                )
            if isinstance(node.index, ir.Lit) and isinstance(node.index.value, str):
                return self.field(base, node.index.value, node.index.span, node.base.span)
            return "any"
        if base != "any":
            self.errors.error(
                "KD0208",
                f"cannot index {_name(base)}: only lists, strings and maps have items",
                node.base.span,
            )
        return "any"

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
            if not (types.is_list(right) or right in ("range", "str", "any")):
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
        if node.func == "format":
            return self.format(node)
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
        given_kinds: dict[int, str] = {}
        for index, (arg, (param, allowed)) in enumerate(zip(args, function.params, strict=False)):
            if arg is None:
                continue
            kind = self.type(arg)
            given_kinds[index] = kind
            if NUMERIC & allowed:
                kinds.append(kind)
            if not types.accepts(allowed, kind):
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
        return self.refined(node, args, given_kinds, function.returns)

    def refined(self, node: ir.Apply, args: list, kinds: dict[int, str], declared: str) -> str:
        """The result type of the functions whose result depends on their arguments' types."""
        func = node.func
        if func == "split":
            return "list[str]"
        if func in ("first", "last"):
            return types.element(kinds.get(0, "any"))
        if func == "if":
            return types.unify(kinds.get(1, "any"), kinds.get(2, "null"))
        if func == "get" and len(args) > 1:
            key = args[1]
            base = kinds.get(0, "any")
            if isinstance(key, ir.Lit) and isinstance(key.value, str) and base == "turn":
                found = self.field(base, key.value, key.span, args[0].span)
                default = kinds.get(2)
                return found if default is None else types.unify(found, default)
        return declared

    def format(self, node: ir.Apply) -> str:
        """``format(template, values..., name = value)``: any number of values, and fields that
        a literal template names must have one."""
        for arg in [*node.args[1:], *node.kwargs.values()]:
            self.type(arg)
        if not node.args:
            self.errors.error("KD0208", "`format` needs its template", node.span)
            return "str"
        template = node.args[0]
        kind = self.type(template)
        if kind not in ("str", "any"):
            self.errors.error(
                "KD0208",
                f"the template of `format` must be a string, not {_name(kind)}",
                template.span,
            )
        if not (isinstance(template, ir.Lit) and isinstance(template.value, str)):
            return "str"
        try:
            fields = format_fields(template.value)
        except ValueError as bad:
            self.errors.error("KD0208", f"invalid `format` template: {bad}", template.span)
            return "str"
        positional = len(node.args) - 1
        automatic = 0
        for name in fields:
            if name == "":
                automatic += 1
                wanted, missing = automatic, automatic > positional
            elif name.isdigit():
                wanted, missing = int(name) + 1, int(name) >= positional
            else:
                wanted, missing = 0, name not in node.kwargs
            if missing:
                what = f"`{name}`" if wanted == 0 else f"value {wanted}"
                self.errors.error(
                    "KD0208",
                    f"the `format` template wants {what}, which is not given",
                    template.span,
                    help='give it after the template: format("{} and {}", a, b) or '
                    'format("{x}", x = a)',
                )
                break
        return "str"

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


def column_type(node, columns: Mapping[str, str], errors: Collector, items: bool = False) -> str:
    """The column type of a computed column's values (``items``: of the items of the list the
    expression gives, one row per item, as ``explode`` makes them)."""
    kind = typecheck(node, columns, errors)
    if items:
        if not (types.is_list(kind) or kind == "any"):
            errors.error(
                "KD0231",
                f"`explode` needs a list to take apart, this is {_name(kind)}",
                node.span,
                help='make one, e.g. split(text, "\\n"), or json(text) for a JSON list',
            )
            return "any"
        kind = types.element(kind)
    return types.column_kind(kind)
