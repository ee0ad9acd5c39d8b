"""Source positions. Every syntax-tree and IR node carries a :class:`Span`."""

from __future__ import annotations

from typing import NamedTuple


class Span(NamedTuple):
    """A region of a source file: 1-based lines and columns, ``end_column`` exclusive.

    Immutable, hashable and ordered by position (file, then line, then column). A named tuple
    rather than a frozen dataclass: every ``kdlang`` command loads it, and a frozen, ordered
    dataclass compiles ten methods as it is defined."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def point(cls, file: str, line: int, column: int) -> Span:
        return cls(file, line, column, line, column + 1)

    @classmethod
    def of_token(cls, file: str, token) -> Span:
        """The span of a Lark token (which knows its own end)."""
        return cls(file, token.line, token.column, token.end_line, token.end_column)

    @classmethod
    def of_meta(cls, file: str, meta) -> Span:
        """The span of a Lark rule, from ``propagate_positions`` metadata."""
        if getattr(meta, "empty", True):
            return cls(file, 1, 1, 1, 1)
        return cls(file, meta.line, meta.column, meta.end_line, meta.end_column)

    def to(self, other: Span) -> Span:
        """The smallest span covering ``self`` and ``other``."""
        first = min(self, other)
        last = max(self, other, key=lambda s: (s.end_line, s.end_column))
        return Span(self.file, first.line, first.column, last.end_line, last.end_column)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    @classmethod
    def __get_pydantic_core_schema__(cls, source, handler):
        """How IR fields (pydantic) validate a span: it must already be one. Spans come from the
        parser; a schema for a dataclass of five fields, built again in every IR model that
        has a span, was a large part of the checker's start-up."""
        from pydantic_core import core_schema

        return core_schema.is_instance_schema(cls)


def source_lines(text: str) -> list[str]:
    """The lines of ``text`` as spans number them: split at new lines only.

    ``str.splitlines`` also splits at form feeds, ``\\x85`` and Unicode line separators, which
    may sit in comments and strings; the parser does not count those as new lines."""
    return [line.removesuffix("\r") for line in text.split("\n")]
