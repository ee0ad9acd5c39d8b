"""Diagnostics: errors and warnings as values with positions, and their renderings.

A user's mistake never surfaces as a traceback: every stage of the compiler collects
:class:`Diagnostic` values and raises them together as one :class:`DiagnosticError` at its
boundary. The CLI renders them as text (numbered source lines, a caret span, ``help:``) or as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import NamedTuple

from kdlang.syntax.span import Span, source_lines


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Diagnostic(NamedTuple):
    """One finding about a recipe: a coded message about a span of its source. Immutable;
    ``d._replace(code=...)`` gives a changed copy."""

    code: str
    message: str
    span: Span
    help: str | None = None
    notes: tuple[tuple[str, Span | None], ...] = ()
    severity: Severity = Severity.ERROR

    def as_dict(self) -> dict:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "file": self.span.file,
            "line": self.span.line,
            "column": self.span.column,
            "end_line": self.span.end_line,
            "end_column": self.span.end_column,
            "help": self.help,
            "notes": [
                {
                    "message": text,
                    **({"file": s.file, "line": s.line, "column": s.column} if s else {}),
                }
                for text, s in self.notes
            ],
        }


class DiagnosticError(Exception):
    """Raised at a compiler boundary with every diagnostic collected so far."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sorted(
            diagnostics, key=lambda d: (d.span.file, d.span.line, d.span.column)
        )
        super().__init__("; ".join(f"{d.span}: {d.code} {d.message}" for d in self.diagnostics))


class Collector:
    """Accumulates diagnostics so one run reports every error of a file, not only the first."""

    def __init__(self, diagnostics: Iterable[Diagnostic] = ()):
        self.diagnostics: list[Diagnostic] = list(diagnostics)

    def __repr__(self) -> str:
        return f"Collector({self.diagnostics!r})"

    def error(self, code: str, message: str, span: Span, help: str | None = None, notes=()) -> None:
        self.diagnostics.append(Diagnostic(code, message, span, help, tuple(notes)))

    def warning(
        self, code: str, message: str, span: Span, help: str | None = None, notes=()
    ) -> None:
        self.diagnostics.append(
            Diagnostic(code, message, span, help, tuple(notes), Severity.WARNING)
        )

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics.extend(diagnostics)

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self.diagnostics)

    def raise_if_errors(self) -> None:
        if self.has_errors:
            raise DiagnosticError(self.diagnostics)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate by edit distance, if close enough to be a plausible typo."""
    limit = max(1, min(3, len(word) // 3 + 1))
    best, best_distance = None, None
    for candidate in sorted(set(candidates)):
        if abs(len(candidate) - len(word)) > limit:
            continue  # the distance is at least the difference in length
        distance = edit_distance(word.lower(), candidate.lower())
        if best_distance is None or distance < best_distance:
            best, best_distance = candidate, distance
    if best is None or best_distance is None:
        return None
    return best if best_distance <= limit else None


def suggestion(word: str, candidates: Iterable[str]) -> str | None:
    """A ``did you mean "x"?`` help line, or None."""
    best = did_you_mean(word, candidates)
    return f'did you mean "{best}"?' if best else None


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent transpositions)."""
    rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        rows[i][0] = i
    for j in range(len(b) + 1):
        rows[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
    return rows[-1][-1]


def render(
    diagnostics: Iterable[Diagnostic], sources: Mapping[str, str], color: bool = False
) -> str:
    """Render diagnostics as text: header, location, numbered source lines, carets, help."""
    return "\n".join(_render_one(d, sources.get(d.span.file), color) for d in diagnostics)


def render_json(diagnostics: Iterable[Diagnostic]) -> str:
    return json.dumps([d.as_dict() for d in diagnostics], indent=2)


def _paint(text: str, style: str, color: bool) -> str:
    codes = {"error": "1;31", "warning": "1;33", "bold": "1", "blue": "1;34", "help": "1;36"}
    return f"\x1b[{codes[style]}m{text}\x1b[0m" if color else text


def visible_text(text: str) -> str:
    """``text`` with control characters (a NUL in a path, an escape sequence) written as
    escapes, so that a message cannot garble or drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)


def _render_one(d: Diagnostic, source: str | None, color: bool) -> str:
    sev = d.severity.value
    message = visible_text(d.message)
    out = [f"{_paint(f'{sev}[{d.code}]', sev, color)}: {_paint(message, 'bold', color)}"]
    s = d.span
    lines = source_lines(source) if source is not None else []
    gutter = len(str(s.end_line))
    pad = " " * gutter
    out.append(f"{pad}{_paint('-->', 'blue', color)} {s.file}:{s.line}:{s.column}")
    if 1 <= s.line <= len(lines):
        out.append(f"{pad} {_paint('|', 'blue', color)}")
        last = min(s.end_line, len(lines), s.line + 5)
        for number in range(s.line, last + 1):
            text = lines[number - 1].replace("\t", " ")
            out.append(
                f"{_paint(str(number).rjust(gutter), 'blue', color)} {_paint('|', 'blue', color)} {text}"
            )
            start = s.column if number == s.line else 1 + (len(text) - len(text.lstrip()))
            end = s.end_column if number == s.end_line else len(text) + 1
            width = max(1, end - start)
            marks = " " * (start - 1) + "^" * width
            out.append(f"{pad} {_paint('|', 'blue', color)} {_paint(marks, sev, color)}")
    for text, note_span in d.notes:
        where = f" ({note_span})" if note_span else ""
        out.append(f"{pad} = note: {text}{where}")
    if d.help:
        out.append(f"{pad} = {_paint('help', 'help', color)}: {d.help}")
    return "\n".join(out) + "\n"
