"""Loading the Lark grammar (``grammar/kd.lark``, shipped as package data of ``kdlang.grammar``)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from lark import Lark


def grammar_text() -> str:
    return resources.files("kdlang.grammar").joinpath("kd.lark").read_text(encoding="utf-8")


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
        # The LALR tables are stored in the temp folder, keyed by the grammar's hash: building
        # them takes longer than everything else `kdlang check` does.
        cache=not strict,
    )
