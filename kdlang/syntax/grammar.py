"""Loading the Lark grammar (``grammar/kd.lark``, shipped as package data of ``kdlang.grammar``).

The parser is lark's LALR parser with its contextual lexer: each parser state scans only for the
terminals it accepts, so a keyword can still be a name where the grammar wants one
(``model model = hf(model)``).

Building the LALR tables from the grammar takes longer than everything else ``kdlang check``
does, so the parser is kept between runs (lark's ``Lark.save`` and ``Lark.load``) in kdlang's
own folder of the user's cache, ``$XDG_CACHE_HOME/kdlang`` (by default ``~/.cache/kdlang``). The
file's name is a digest of what the tables depend on (the grammar, the options, lark's and
Python's versions), so a changed grammar or an upgraded lark gets a file of its own; it is
written under a name of the writing process and renamed into place, so a reader never finds half
a file. The file is a pickle, read back only from that folder of the user's own. A file that
cannot be read back is replaced; where the folder cannot be written the tables are built on
every run.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from importlib import resources
from pathlib import Path

import lark
from lark import Lark, Token

_comment_sink: ContextVar[list[Token] | None] = ContextVar("kdlang_comment_sink", default=None)

OPTIONS = {
    "parser": "lalr",
    "lexer": "contextual",
    "propagate_positions": True,
    "maybe_placeholders": True,
}
"""How the grammar is read: the options that shape the tables (the cache file is keyed by them)."""


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
    """The LALR parser, once per process: read back from the cache, or built and then saved.

    ``strict=True`` (used by the tests) turns shift/reduce conflicts and colliding terminals into
    errors, so the grammar stays unambiguous as it grows; it is always built from the grammar.
    """
    text = grammar_text()
    if strict:
        return build(text, strict=True)
    cached = cache_file(text)
    if cached is None:
        return build(text)
    try:
        with cached.open("rb") as stream:
            return Lark.load(stream)
    except Exception:  # not written yet, or damaged (a full disk when it was saved ...)
        pass
    built = build(text)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as stream:
            built.save(stream)
        os.replace(partial, cached)
    except OSError:  # the next run builds the tables again
        partial.unlink(missing_ok=True)
    return built


def build(text: str, **options: object) -> Lark:
    """A parser of grammar ``text``, its tables built. The comment callback is saved with it (by
    name: a module-level function) and so comes back with :meth:`Lark.load`."""
    return Lark(text, **OPTIONS, lexer_callbacks={"COMMENT": _lexed_comment}, **options)


def cache_file(text: str) -> Path | None:
    """Where the parser of grammar ``text`` is kept, its folder created; None where there is no
    user cache folder or it cannot be written."""
    key = "\n".join([text, repr(sorted(OPTIONS.items())), lark.__version__, sys.version])
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        folder = Path(base) / "kdlang"
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):  # RuntimeError: no home folder to be found
        return None
    return folder / f"parser-{digest}.lark"
