"""The one jinja2 environment of kdlang, and the bounds a prompt renders within.

A prompt is a program its author runs on every row, and a hostile or careless one can ask for
unbounded work: ``{{ 'a' * 10**9 }}``, ``{{ 2 ** 10**10 }}``, a recursive macro, two nested
``range(100000)`` loops, a namespace string that doubles on every iteration. jinja2's
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` keeps a template away from Python's
internals and from mutating lists and maps; :class:`BoundedEnvironment` adds the bounds:

- every value a template builds by ``*``, ``**``, ``+``, ``%``, ``~``, a string method or a filter
  holds at most :data:`MAX_CHARS` characters (or items), checked *before* it is built, and no
  integer grows past :data:`MAX_INT_BITS` bits;
- a render has :data:`RENDER_SECONDS` of wall-clock time, checked on every call, every loop
  iteration and every output chunk, and at most :data:`MAX_CHARS` characters of output;
- nesting too deep for Python's stack is an error, not a crash.

A bound exceeded raises :class:`TemplateLimit`; :func:`compile_prompt` and
:class:`~jinja2.Template` objects it returns are what the runtime renders with (see
``runtime.context.PromptTemplate``). The checker only ever *parses* with this environment
(:func:`parse`): it never compiles or evaluates a template.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from functools import lru_cache, update_wrapper
from typing import Any

from jinja2 import StrictUndefined, Template, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

MAX_CHARS = 4_000_000
"""Characters (or items) of any value a template builds, and of one rendered prompt: about a
million tokens, past every context window."""
MAX_INT_BITS = 16_384
"""Bits of any integer a template computes (about 4,900 decimal digits)."""
RENDER_SECONDS = 5.0
"""Wall-clock time one render may take; real prompts take microseconds."""

_LOOP = "_kd_loop"
_CONCAT = "_kd_concat"
_deadline: ContextVar[float] = ContextVar("kdlang_render_deadline", default=math.inf)
_WIDE_PERCENT = re.compile(r"%[-+ #0]*(?:\d{7,}|\d*\.\d{7,})")
_WIDE_BRACE = re.compile(r"\{[^{}]*:[^{}]*\d{7,}[^{}]*\}")


class TemplateLimit(Exception):
    """A render went past one of the bounds of :class:`BoundedEnvironment`."""


def _check_time() -> None:
    if time.monotonic() > _deadline.get():
        raise TemplateLimit(f"rendering took longer than {RENDER_SECONDS:g} s")


def _check_size(size: int, what: str) -> None:
    if size > MAX_CHARS:
        raise TemplateLimit(
            f"{what} would hold {size:,} characters or items (at most {MAX_CHARS:,})"
        )


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimit(f"an integer grew past {MAX_INT_BITS:,} bits")
    return value


def _check_format(text: str, style: str) -> None:
    pattern = _WIDE_PERCENT if style == "%" else _WIDE_BRACE
    if pattern.search(text):
        raise TemplateLimit(f"a format width or precision over {MAX_CHARS:,}")


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


def _check_int_args(args: Iterable[Any], what: str) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_CHARS:
            raise TemplateLimit(f"{what} asked for {arg:,} (at most {MAX_CHARS:,})")


def _loop(iterable: Any) -> Iterator[Any]:
    """Every ``{% for %}`` of a prompt iterates through this: one deadline check per item."""
    for item in iterable:
        _check_time()
        yield item


def _concat(*parts: Any) -> str:
    """The ``~`` operator, bounded before the string is built."""
    texts = [str(part) for part in parts]
    _check_size(sum(map(len, texts)), "a `~` concatenation")
    return "".join(texts)


class _Guard(NodeTransformer):
    """Routes every loop and every ``~`` of a parsed template through :func:`_loop` and
    :func:`_concat` (called like any function, so the sandbox's call check applies too)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _call(_LOOP, [node.iter], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _call(_CONCAT, list(node.nodes), node.lineno)


def _call(name: str, args: list[Any], lineno: int) -> nodes.Call:
    return nodes.Call(nodes.Name(name, "load"), args, [], None, None, lineno=lineno)


def _str_method_check(method: Any, args: tuple, kwargs: dict) -> None:
    """Bounds of the string methods that can build large strings from small inputs."""
    method = getattr(method, "__wrapped__", method)  # the sandbox wraps `str.format`
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(method, "__name__", "")
    _check_int_args([*args, *kwargs.values()], f"`str.{name}`")
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str):
        old, new = args[0], args[1]
        count = owner.count(old) if old else len(owner) + 1
        _check_size(len(owner) + count * max(0, len(str(new)) - len(old)), "`str.replace`")
    elif name == "join" and args and isinstance(args[0], str | list | tuple):
        items = args[0]
        _check_size(sum(len(str(i)) for i in items) + len(owner) * len(items), "`str.join`")
    elif name == "expandtabs":
        size = int(args[0]) if args else 8
        _check_size(len(owner) + owner.count("\t") * size, "`str.expandtabs`")
    elif name in ("format", "format_map"):
        _check_format(owner, "{")


def _bounded_filter(name: str, function: Any) -> Any:
    # `pass_context` & co. (jinja2 marks them with this attribute) come first, then the value
    skip = 1 if getattr(function, "jinja_pass_arg", None) is None else 2

    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_time()
        _check_int_args([*args[skip:], *kwargs.values()], f"filter `{name}`")
        value = args[skip - 1] if len(args) >= skip else None
        if name == "join" and value is not None and not isinstance(value, str | list | tuple):
            value = list(value)
            args = (*args[: skip - 1], value, *args[skip:])
        if name == "join" and isinstance(value, list | tuple):
            _check_size(sum(len(str(i)) for i in value), "filter `join`")
        elif name == "indent" and isinstance(value, str):
            width = kwargs.get("width", args[skip] if len(args) > skip else 4)
            width = len(width) if isinstance(width, str) else int(width)
            _check_size(len(value) + (value.count("\n") + 1) * width, "filter `indent`")
        elif name == "replace" and len(args) >= skip + 2:
            text, old, new = str(value), str(args[skip]), str(args[skip + 1])
            count = text.count(old) if old else len(text) + 1
            _check_size(len(text) + count * max(0, len(new) - len(old)), "filter `replace`")
        elif name == "format" and isinstance(value, str):
            _check_format(value, "%")
        result = function(*args, **kwargs)
        size = _sized(result)
        if size is not None:
            _check_size(size, f"filter `{name}`")
        return result

    return update_wrapper(bounded, function)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Sandboxed and immutable, undefined variables are errors, text kept as written (no
    whitespace trimming, final newline kept), no ``lipsum``; and every value, loop, call and
    render bounded as the module says."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
        self.globals.pop("lipsum", None)
        self.globals[_LOOP] = _loop
        self.globals[_CONCAT] = _concat
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_time()
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                size = _sized(sequence)
                if size is not None and isinstance(times, int):
                    _check_size(size * max(times, 0), "a `*` repetition")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and right * left.bit_length() > MAX_INT_BITS:
                raise TemplateLimit(f"an integer grew past {MAX_INT_BITS:,} bits")
        elif operator == "+":
            if _sized(left) is not None and _sized(right) is not None:
                _check_size(len(left) + len(right), "a `+` concatenation")
        elif operator == "%" and isinstance(left, str):
            _check_format(left, "%")
            arguments = right if isinstance(right, tuple) else (right,)
            _check_int_args(arguments, "a `%` format")
        return _check_int(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_time()
        joins = isinstance(getattr(__obj, "__self__", None), str) and __obj.__name__ == "join"
        if joins and args and not isinstance(args[0], str):
            args = (list(args[0]), *args[1:])  # a generator, counted before it is joined
        _str_method_check(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        size = _sized(result)
        if size is not None:
            _check_size(size, "a call's result")
        return _check_int(result)


@lru_cache(maxsize=1)
def environment() -> BoundedEnvironment:
    """The environment every prompt is parsed and rendered with."""
    return BoundedEnvironment()


GLOBALS = frozenset({"range", "dict", "cycler", "joiner", "namespace"})
"""The names a template may use without a column of that name (jinja2's globals, less
``lipsum``)."""


def parse(text: str) -> nodes.Template:
    """The template's syntax tree; :class:`jinja2.TemplateSyntaxError` on a syntax error and
    :class:`RecursionError` when it nests deeper than the parser's stack. Nothing is
    evaluated."""
    return environment().parse(text)


def compile_prompt(text: str) -> Template:
    """A prompt ready to render, every loop and ``~`` routed through the bounds."""
    tree = _Guard().visit(parse(text))
    return environment().from_string(tree)


def render(template: Template, variables: dict[str, Any]) -> str:
    """``template`` rendered on ``variables`` within :data:`RENDER_SECONDS` and
    :data:`MAX_CHARS`; :class:`TemplateLimit` when a bound is passed."""
    token = _deadline.set(time.monotonic() + RENDER_SECONDS)
    try:
        chunks, size = [], 0
        for chunk in template.generate(**variables):
            size += len(chunk)
            _check_size(size, "the rendered prompt")
            _check_time()
            chunks.append(chunk)
        return "".join(chunks)
    finally:
        _deadline.reset(token)
