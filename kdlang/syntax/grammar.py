"""Loading the Lark grammar (``grammar/kd.lark``, shipped as package data of ``kdlang.grammar``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from importlib import resources

from lark import Lark, Token

from kdlang.syntax.lexer import SharedScanContextualLexer

_comment_sink: ContextVar[list[Token] | None] = ContextVar("kdlang_comment_sink", default=None)


def grammar_text() -> str:
    return resources.files("kdlang.grammar").joinpath("kd.lark").read_text(encoding="utf-8")


def _lexed_comment(token: Token) -> Token:
    sink = _comment_sink.get()
    if sink is not None:
        sink.append(token)
    return token


@contextmanager
def comments_lexed() -> Iterator[list[Token]]:
    """The ``COMMENT`` tokens (ignored by the grammar) that the parser's lexer meets while the
    block runs, in source order: the comments of a file without lexing it a second time."""
    sink: list[Token] = []
    reset = _comment_sink.set(sink)
    try:
        yield sink
    finally:
        _comment_sink.reset(reset)


@lru_cache(maxsize=2)
def parser(strict: bool = False) -> Lark:
    """The LALR parser, built once per process.

    ``strict=True`` (used by the tests) turns shift/reduce conflicts and colliding terminals into
    errors, so the grammar stays unambiguous as it grows.
    """
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
        strict=strict,
        lexer_callbacks={"COMMENT": _lexed_comment},
        # Lark's contextual lexer, each parser state scanning through one shared scanner.
        _plugins={"ContextualLexer": SharedScanContextualLexer},
        # The LALR tables are stored in the temp folder, keyed by the grammar's hash: building
        # them takes longer than everything else `kdlang check` does.
        cache=not strict,
    )
