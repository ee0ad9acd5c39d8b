"""Built-in functions of the expression language: signature and implementation side by side.

The checker reads the signatures (argument and return types) to type-check ``keep`` and
``metric`` expressions before any row exists; the runtime calls the implementations on rows.
Every function is total on its declared types: a failed ``extract`` or ``int`` gives ``null``
rather than an exception, so one odd row never stops a run.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

# Types: "str", "int", "float", "bool", "list", "map", "null", "any"; "num" = int or float (as a
# return type: int when every numeric argument is an int, else float). The checker gives some
# results a finer type than the one declared here (kdlang.expr.types).
NUMERIC = frozenset({"int", "float"})


class Function(NamedTuple):
    """A built-in: its signature (what the checker reads) and its implementation."""

    name: str
    params: tuple[tuple[str, frozenset[str]], ...]
    returns: str
    impl: Callable[..., Any]
    doc: str
    optional: int = 0  # how many trailing params may be omitted
    pattern_arg: int | None = None  # index of an argument that must be a valid regular expression

    @property
    def arity(self) -> tuple[int, int]:
        return len(self.params) - self.optional, len(self.params)


def _t(*names: str) -> frozenset[str]:
    expanded: set[str] = set()
    for name in names:
        expanded |= NUMERIC if name == "num" else {name}
    return frozenset(expanded)


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.MULTILINE)


def _extract(text: str, pattern: str, group: int = 1) -> str | None:
    match = _regex(pattern).search(text)
    if match is None:
        return None
    try:
        value = match.group(group if match.re.groups >= group else 0)
    except IndexError:
        return None
    return value.strip() if value is not None else None


def _to_int(value: Any) -> int | None:
    try:
        number = float(str(value).strip().replace(",", ""))
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


def _to_float(value: Any) -> float | None:
    try:
        number = float(str(value).strip().replace(",", ""))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _round(x: int | float, digits: int = 0) -> int | float:
    # Python's round(x) of a float is an int; the language keeps a float a float.
    return round(x, digits) if isinstance(x, int) else float(round(x, digits))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _normalize(text: Any) -> str:
    return " ".join(str(text).split()).lower() if text is not None else ""


def _items(text: Any) -> list[str]:
    return sorted(re.split(r"[\s,]+", str(text).strip())) if text not in (None, "") else []


def _chars(text: Any) -> list[str]:
    return sorted("".join(str(text).split()))


def shown(value: Any) -> str:
    """Text of a value inside text (``format``, ``join``): a list or a map as JSON, the rest as
    ``str`` gives it."""
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return _text(value)


def format_fields(template: str) -> list[str]:
    """The fields of a ``format`` template, in order: ``""`` (the next argument), a position
    (``"0"``) or a keyword's name. A field reaching into a value (``{0.x}``, ``{a[0]}``), a
    conversion (``{x!r}``), a nested field or a stray brace is a ``ValueError``."""
    fields = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if conversion is not None:
            raise ValueError(f"`{{{name}!{conversion}}}`: conversions are not supported")
        if not (name == "" or name.isdigit() or name.isidentifier()):
            raise ValueError(f"`{{{name}}}`: a field is empty, a position or a keyword's name")
        if spec and "{" in spec:
            raise ValueError(f"`{{{name}:{spec}}}`: nested fields are not supported")
        fields.append(name)
    return fields


def format_text(template: str, args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """``template`` with its fields replaced by the arguments (null shown as empty text); null
    when a field has no argument or a format spec does not fit its value."""
    try:
        pieces, auto = [], 0
        for literal, name, spec, _ in string.Formatter().parse(template):
            pieces.append(literal)
            if name is None:
                continue
            if name == "":
                name, auto = str(auto), auto + 1
            if name.isdigit():
                index = int(name)
                if index >= len(args):
                    return None
                value = args[index]
            elif name in kwargs:
                value = kwargs[name]
            else:
                return None
            pieces.append(format(value, spec) if spec and value is not None else shown(value))
        return "".join(pieces)
    except (ValueError, TypeError):
        return None


def _split(text: str, separator: str | None = None) -> list[str]:
    if separator == "":
        return list(text)
    return text.split(separator) if separator is not None else text.split()


def _join(items: list, separator: str = "") -> str:
    return separator.join(shown(item) for item in items if item is not None)


def _item(items: list, position: int) -> Any:
    return items[position] if -len(items) <= position < len(items) else None


def _get(container: Any, key: str, default: Any = None) -> Any:
    value = container.get(key) if isinstance(container, dict) else None
    return default if value is None else value


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _if(condition: Any, then: Any, otherwise: Any = None) -> Any:
    return then if condition is not None and bool(condition) else otherwise


def _numeric_equal(a: Any, b: Any, tolerance: float = 1e-6) -> bool:
    x, y = _to_float(a), _to_float(b)
    return x is not None and y is not None and abs(x - y) <= tolerance * max(1.0, abs(y))


_FUNCTIONS = [
    Function(
        "len", (("x", _t("str", "list")),), "int", len, "Length of a string (characters) or a list."
    ),
    Function("lower", (("s", _t("str")),), "str", str.lower, "Lower-cased string."),
    Function("upper", (("s", _t("str")),), "str", str.upper, "Upper-cased string."),
    Function(
        "strip",
        (("s", _t("str")),),
        "str",
        str.strip,
        "String without leading/trailing whitespace.",
    ),
    Function(
        "contains",
        (("s", _t("str")), ("part", _t("str"))),
        "bool",
        lambda s, p: p in s,
        "Whether `part` occurs in `s`.",
    ),
    Function(
        "startswith",
        (("s", _t("str")), ("prefix", _t("str"))),
        "bool",
        str.startswith,
        "Whether `s` starts with `prefix`.",
    ),
    Function(
        "endswith",
        (("s", _t("str")), ("suffix", _t("str"))),
        "bool",
        str.endswith,
        "Whether `s` ends with `suffix`.",
    ),
    Function(
        "matches",
        (("s", _t("str")), ("pattern", _t("str"))),
        "bool",
        lambda s, p: _regex(p).search(s) is not None,
        "Whether the regular expression `pattern` matches anywhere in `s` (multiline: ^ and $ match at line ends).",
        pattern_arg=1,
    ),
    Function(
        "extract",
        (("s", _t("str")), ("pattern", _t("str")), ("group", _t("int"))),
        "str",
        _extract,
        "The first match's group (default 1, or the whole match if the pattern has no group), stripped; null if no match.",
        optional=1,
        pattern_arg=1,
    ),
    Function(
        "count",
        (("s", _t("str")), ("part", _t("str"))),
        "int",
        str.count,
        "Non-overlapping occurrences of `part` in `s`.",
    ),
    Function(
        "words",
        (("s", _t("str")),),
        "int",
        lambda s: len(s.split()),
        "Number of whitespace-separated words.",
    ),
    Function(
        "lines", (("s", _t("str")),), "int", lambda s: len(s.splitlines()), "Number of lines."
    ),
    Function(
        "int",
        (("x", _t("str", "num")),),
        "int",
        _to_int,
        "Integer value of a string or number; null if it is not one.",
    ),
    Function(
        "float",
        (("x", _t("str", "num")),),
        "float",
        _to_float,
        "Number value of a string; null if it is not one.",
    ),
    Function(
        "str",
        (("x", _t("any")),),
        "str",
        _text,
        "Text of any value (null = empty, booleans as `true`/`false`).",
    ),
    Function("abs", (("x", _t("num")),), "num", abs, "Absolute value."),
    Function(
        "round",
        (("x", _t("num")), ("digits", _t("int"))),
        "num",
        _round,
        "Rounded to `digits` decimals (default 0), halves to even; an integer stays one.",
        optional=1,
    ),
    Function("min", (("a", _t("num")), ("b", _t("num"))), "num", min, "Smaller of two numbers."),
    Function("max", (("a", _t("num")), ("b", _t("num"))), "num", max, "Larger of two numbers."),
    Function(
        "exact_match",
        (("a", _t("any")), ("b", _t("any"))),
        "bool",
        lambda a, b: a is not None and b is not None and _normalize(a) == _normalize(b),
        "Equality after trimming, collapsing whitespace and lower-casing; false if either is null.",
    ),
    Function(
        "set_equal",
        (("a", _t("any")), ("b", _t("any"))),
        "bool",
        lambda a, b: a is not None and b is not None and _items(a) == _items(b),
        "Whether two whitespace- or comma-separated item lists hold the same items in any order.",
    ),
    Function(
        "same_chars",
        (("a", _t("any")), ("b", _t("any"))),
        "bool",
        lambda a, b: a is not None and b is not None and _chars(a) == _chars(b),
        "Whether two texts hold the same characters in any order, whitespace ignored "
        '(`same_chars(" 6 2 4", "246")` is true).',
    ),
    Function(
        "numeric_equal",
        (("a", _t("any")), ("b", _t("any")), ("tolerance", _t("num"))),
        "bool",
        _numeric_equal,
        "Whether both parse as numbers equal within a relative tolerance (default 1e-6).",
        optional=1,
    ),
    Function(
        "is_null", (("x", _t("any")),), "bool", lambda x: x is None, "Whether the value is null."
    ),
    Function(
        "format",
        (("template", _t("str")),),
        "str",
        format_text,
        "The template with each `{}`, `{0}` or `{name}` replaced by the next, the numbered or "
        "the named argument; null shows as empty text.",
    ),
    Function(
        "split",
        (("s", _t("str")), ("separator", _t("str"))),
        "list",
        _split,
        "The parts of `s` between occurrences of `separator` (default: runs of whitespace).",
        optional=1,
    ),
    Function(
        "join",
        (("items", _t("list")), ("separator", _t("str"))),
        "str",
        _join,
        "The items as text (nulls left out), `separator` between them (default none).",
        optional=1,
    ),
    Function(
        "first",
        (("items", _t("list")),),
        "any",
        lambda items: _item(items, 0),
        "The first item of a list; null if it is empty.",
    ),
    Function(
        "last",
        (("items", _t("list")),),
        "any",
        lambda items: _item(items, -1),
        "The last item of a list; null if it is empty.",
    ),
    Function(
        "get",
        (("m", _t("map")), ("key", _t("str")), ("default", _t("any"))),
        "any",
        _get,
        "The value of a map at `key`; `default` (or null) if it has none.",
        optional=1,
    ),
    Function(
        "json",
        (("s", _t("str")),),
        "any",
        _json,
        "The value written as JSON in `s` (a map, a list, text, a number ...); null if it is "
        "no JSON.",
    ),
    Function(
        "if",
        (("condition", _t("any")), ("then", _t("any")), ("otherwise", _t("any"))),
        "any",
        _if,
        "`then` where the condition is true, else `otherwise` (default null); only the "
        "chosen one is evaluated.",
        optional=1,
    ),
]

FUNCTIONS: dict[str, Function] = {f.name: f for f in _FUNCTIONS}

SCORED_METRICS = {
    "perplexity": "Perplexity of the model on a target column: exp(mean token NLL). Metric lines only."
}
"""Metrics computed by scoring rather than per-row expressions."""
