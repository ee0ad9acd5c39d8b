"""Validating settings with pydantic and reporting failures as positioned diagnostics.

pydantic knows the types, defaults and ranges of every setting; this module makes its errors
speak kdlang: the offending setting's span, a code (KD0102 unknown setting, KD0103 wrong type,
KD0104 out of range, KD0105 missing, KD0110 bad schedule) and a "did you mean" where one fits.
A raw pydantic error never reaches a user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from kdlang.ir.descriptor import reading_order
from kdlang.ir.losses import LossBase
from kdlang.ir.values import Node, describe
from kdlang.syntax import ast
from kdlang.syntax.diagnostics import Collector, suggestion
from kdlang.syntax.span import Span

_RANGE = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}
_TYPE_NAMES = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a map",
    "model_type": "a call such as lora(...)",
    "model_attributes_type": "a call such as lora(...)",
    "kd_reference": "the name of a declaration",
    "is_instance_of": "a different kind of value",
}
_CLASS_NAMES = {
    "Percent": "a percentage",
    "Schedule": "a number or a schedule such as linear(0.0 -> 1.0)",
    "LRSchedule": "constant, linear(...) or cosine(...)",
    "EnvRef": 'env("NAME")',
    "LoRA": "lora(...)",
}
_INTERNAL = {"span", "spans", "kind", "op", "name", "rule"}

NodeT = TypeVar("NodeT", bound=Node)


class Unlowerable(Exception):
    """Raised by the lowering where a construct cannot become IR, once it is reported: the
    declaration holding it is left out of the recipe."""


@dataclass
class Fields:
    """Settings of one declaration, with where each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    spans: dict[str, Span] = field(default_factory=dict)
    key_spans: dict[str, Span] = field(default_factory=dict)
    exprs: dict[str, ast.Expr] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)
    """Settings whose problem is already reported: validation stays silent about them."""
    missing_explained: bool = False
    """A missing setting is explained by an error already reported (an extra positional
    argument was probably meant as it)."""

    def add(
        self,
        key: str,
        value: Any,
        span: Span,
        expr: ast.Expr | None = None,
        key_span: Span | None = None,
    ) -> None:
        self.values[key] = value
        self.spans[key] = span
        self.key_spans[key] = key_span or span
        if expr is not None:
            self.exprs[key] = expr


def validate(
    cls: type[NodeT], fields: Fields, span: Span, subject: Span, errors: Collector
) -> NodeT | None:
    """``cls`` built from ``fields``, or None after reporting every problem to ``errors``."""
    try:
        return cls.model_validate({**fields.values, "span": span, "spans": dict(fields.spans)})
    except ValidationError as failure:
        by_key: dict[str, list[ErrorDetails]] = {}
        for error in failure.errors(include_url=False):
            loc = error["loc"]
            key = str(loc[0]) if loc else ""
            if key in fields.reported or (fields.missing_explained and error["type"] == "missing"):
                continue
            by_key.setdefault(key, []).append(error)
        for key, found in by_key.items():
            # One message per setting, even when a union tried several branches: the most
            # specific one (a union of `30%` and a step count fails both ways for `0`).
            error = min(found, key=_specificity)
            _report(cls, key, error["loc"][1:], error, fields, subject, errors)
        return None


def _specificity(error: ErrorDetails) -> int:
    kind = error["type"]
    if kind.startswith("kd_"):
        return 0
    if kind in _RANGE or kind in ("too_short", "too_long"):
        return 1
    return 2


def _report(
    cls: type[Node],
    key: str,
    path: tuple[int | str, ...],
    error: ErrorDetails,
    fields: Fields,
    subject: Span,
    errors: Collector,
) -> None:
    kind = error["type"]
    what = _label(cls, fields)
    if kind == "extra_forbidden":
        known = [
            name
            for name in reading_order(cls)
            if name not in _INTERNAL and name not in cls.syntax_fields
        ]
        errors.error(
            "KD0102",
            f"unknown setting `{key}` for {what}",
            fields.key_spans.get(key, subject),
            help=suggestion(key, known) or "settings: " + ", ".join(known),
        )
        return
    if kind == "missing":
        errors.error("KD0105", f"{what} needs `{key}`", subject, help=_field_help(cls, key))
        return
    span = _locate(fields.exprs.get(key), path) or fields.spans.get(key, subject)
    value = error.get("input")
    if kind in _RANGE:
        ctx_key, sign = _RANGE[kind]
        bound = (error.get("ctx") or {}).get(ctx_key)
        errors.error(
            "KD0104",
            f"`{_innermost(key, path)}` must be {sign} {bound}, got {_show(value)}",
            span,
            help=_field_help(cls, key),
        )
        return
    if kind in ("too_short", "too_long"):
        ctx = error.get("ctx") or {}
        limit = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        bound = "at least" if kind == "too_short" else "at most"
        errors.error(
            "KD0104",
            f"`{_innermost(key, path)}` takes {bound} {limit} item{'s' * (limit != 1)}, "
            f"got {ctx.get('actual_length')}",
            span,
            help=_field_help(cls, key),
        )
        return
    if kind == "kd_range":
        errors.error("KD0104", f"`{key}`: {error['msg']}", span, help=_field_help(cls, key))
        return
    if kind == "kd_schedule":
        errors.error("KD0110", error["msg"], span)
        return
    if kind == "literal_error":
        expected = (error.get("ctx") or {}).get("expected", "")
        options = [part.strip(" '") for part in expected.replace(" or ", ", ").split(",")]
        got = value if isinstance(value, str) else getattr(value, "name", None)
        errors.error(
            "KD0103",
            f"`{_innermost(key, path)}` must be one of {expected}, got {describe(value)}",
            span,
            help=suggestion(got, options) if isinstance(got, str) else None,
        )
        return
    expected = _TYPE_NAMES.get(kind)
    if kind in ("model_type", "model_attributes_type"):
        class_name = (error.get("ctx") or {}).get("class_name", "")
        expected = _CLASS_NAMES.get(class_name, expected)
    name = _innermost(key, path)
    message = (
        f"`{name}` expects {expected}, got {describe(value)}"
        if expected
        else f"`{name}`: {error['msg']}"
    )
    if kind.startswith("kd_"):
        message = f"`{name}`: {error['msg']}"
    errors.error("KD0103", message, span, help=_field_help(cls, key))


def _innermost(key: str, path: tuple[int | str, ...]) -> str:
    """The setting an error is about: ``warmup`` in ``lr_schedule = cosine(warmup = 0)``.

    pydantic's error paths also name union branches (``constrained-int``, ``Percent``); only
    field names (lower-case identifiers that are no type name) count."""
    name = key
    for step in path:
        if (
            isinstance(step, str)
            and step.isidentifier()
            and step.islower()
            and step not in ("int", "float", "str", "bool")
        ):
            name = step
    return name


def _show(value: Any) -> str:
    if hasattr(value, "fraction"):
        return f"{value.fraction * 100:g}%"
    return repr(value)


def _label(cls: type[Node], fields: Fields) -> str:
    if issubclass(cls, LossBase) and isinstance(fields.values.get("name"), str):
        return f"loss `{fields.values['name']}`"
    for attr in ("op", "kind", "rule", "name"):
        info = cls.model_fields.get(attr)
        if info is not None and isinstance(info.default, str):
            noun = {"op": "operator", "rule": "rule"}.get(attr, "")
            return f"`{info.default}`" + (f" {noun}" if noun else "")
    return f"`{cls.__name__}`"


def _field_help(cls: type[Node], key: str) -> str | None:
    info = cls.model_fields.get(key)
    return info.description if info is not None and info.description else None


def _locate(expr: ast.Expr | None, path: tuple[int | str, ...]) -> Span | None:
    """The span of the part of ``expr`` that pydantic's error path names."""
    node = expr
    for step in path:
        if isinstance(node, ast.ListExpr) and isinstance(step, int) and step < len(node.items):
            node = node.items[step]
        elif isinstance(node, ast.MapExpr) and isinstance(step, str):
            entry = next((e for e in node.entries if e.key == step), None)
            if entry is None:
                break
            node = entry.value
        elif isinstance(node, ast.Call) and isinstance(step, str):
            keyword = node.kwarg(step)
            if keyword is None:
                break
            node = keyword.value
        else:
            break
    return node.span if node is not None else None
