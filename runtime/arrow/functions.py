"""The built-in functions that :mod:`kdlang.runtime.arrow.expr` computes as Arrow kernels.

Each takes the call and the batch and gives an array, or raises to have the call evaluated row
by row. ``matches`` runs on RE2 only for patterns that mean the same to RE2 and to Python's
``re`` on the batch at hand (:func:`re2_pattern`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from kdlang.ir import expr as ir

from .expr import PY_SPACE, Batch, Const, _kind, _lower, _nulls, _RowWise

__all__ = ["FUNCTIONS", "re2_pattern"]


# -- functions ----------------------------------------------------------------------------


def _args(node: ir.Apply, batch: Batch) -> list[pa.Array | Const]:
    return [_lower(arg, batch) for arg in node.args]


def _text_arg(part: pa.Array | Const, batch: Batch) -> pa.Array:
    kind = _kind(part)
    if kind == "null":
        return pa.nulls(batch.length, pa.string())
    if kind != "str" or isinstance(part, Const):
        raise _RowWise
    return part


def _const_text(part: pa.Array | Const) -> str:
    if not isinstance(part, Const) or not isinstance(part.value, str):
        raise _RowWise
    return part.value


def _ascii(array: pa.Array) -> bool:
    return bool(pc.all(pc.string_is_ascii(array)).as_py() is not False)


def _len(node: ir.Apply, batch: Batch) -> pa.Array:
    (part,) = _args(node, batch)
    kind = _kind(part)
    if kind == "str" and not isinstance(part, Const):
        return pc.utf8_length(part).cast(pa.int64())
    if kind == "list":
        return pc.list_value_length(part).cast(pa.int64())
    if kind == "null":
        return _nulls(batch)
    raise _RowWise


def _case(kernel: Callable) -> Callable:
    def lowered_case(node: ir.Apply, batch: Batch) -> pa.Array:
        (part,) = _args(node, batch)
        text = _text_arg(part, batch)
        if not _ascii(text):
            raise _RowWise
        return kernel(text)

    return lowered_case


def _strip(node: ir.Apply, batch: Batch) -> pa.Array:
    (part,) = _args(node, batch)
    return pc.utf8_trim(_text_arg(part, batch), PY_SPACE)


def _substring(kernel: Callable) -> Callable:
    def lowered_substring(node: ir.Apply, batch: Batch) -> pa.Array:
        text, part = _args(node, batch)
        return kernel(_text_arg(text, batch), _const_text(part))

    return lowered_substring


def _is_null(node: ir.Apply, batch: Batch) -> pa.Array:
    (part,) = _args(node, batch)
    if isinstance(part, Const):
        return pa.array([part.value is None] * batch.length, pa.bool_())
    return pc.is_null(part)


_ODD_SPACE = "[\\x0b\\x1c-\\x1f]"
"""White space to Python's ``\\s`` that RE2's ``\\s`` leaves out (within ASCII)."""
_UNICODE_CLASSES = re.compile(r"\\[dDwWsSbB]|\(\?[a-zA-Z]*i")
_NEVER = re.compile(r"\[:|\[\[|\{,|\(\?[a-zA-Z]*[xaLu]|\\[ZuUNgGpP0-9]")


def re2_pattern(pattern: str, texts: pa.Array) -> str | None:
    """The RE2 pattern (multiline, as :func:`kdlang.expr.functions` compiles Python's) that
    finds a match in exactly the texts of ``texts`` where Python's ``re`` does; None when
    none is known to (see the module)."""
    try:
        re.compile(pattern)
    except re.error:
        return None
    if not pattern.isascii() or _NEVER.search(pattern) or "{" in _unbraced(pattern):
        return None
    if _UNICODE_CLASSES.search(pattern) and not _ascii(texts):
        return None
    if (
        re.search(r"\\[sS]", pattern)
        and pc.any(pc.match_substring_regex(texts, _ODD_SPACE)).as_py()
    ):
        return None
    translated = "(?m)" + pattern
    try:  # what RE2 does not accept (look-arounds, back-references, ...) runs on Python's re
        pc.match_substring_regex(pa.array([""], pa.string()), translated)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return translated


def _unbraced(pattern: str) -> str:
    """``pattern`` without its counted repetitions ``{n}``, ``{n,}``, ``{n,m}`` (what is left of
    a brace is a literal one, which RE2 and Python may read otherwise)."""
    return re.sub(r"\{\d+(,\d*)?\}", "", pattern)


def _matches(node: ir.Apply, batch: Batch) -> pa.Array:
    text, pattern = _args(node, batch)
    texts = _text_arg(text, batch)
    translated = re2_pattern(_const_text(pattern), texts)
    if translated is None:
        raise _RowWise
    return pc.match_substring_regex(texts, translated)


FUNCTIONS: dict[str, Callable[[ir.Apply, Batch], pa.Array]] = {
    "len": _len,
    "lower": _case(pc.utf8_lower),
    "upper": _case(pc.utf8_upper),
    "strip": _strip,
    "contains": _substring(pc.match_substring),
    "startswith": _substring(pc.starts_with),
    "endswith": _substring(pc.ends_with),
    "matches": _matches,
    "is_null": _is_null,
}
