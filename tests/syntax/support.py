"""Helpers shared by the syntax tests: diagnosing a file the way `kdlang check` does."""

from __future__ import annotations

import re
from pathlib import Path

from kdlang.lower import lower
from kdlang.syntax.diagnostics import Collector, Diagnostic, DiagnosticError, Severity
from kdlang.syntax.parser import parse

HERE = Path(__file__).parent
BAD = HERE / "bad"
GOOD = HERE / "good"

EXPECT = re.compile(r"# expect: (KD\d{4}) (\d+):(\d+)$")


def has_checker() -> bool:
    try:
        from kdlang.check import check_files  # noqa: F401
    except ImportError:
        return False
    return True


def diagnose(path: Path, checker: bool = True) -> tuple[list[Diagnostic], dict[str, str]]:
    """Every diagnostic of ``path`` and the sources they point into.

    The full checker when it is there (and ``checker``); otherwise parsing and lowering, which
    find every KD00xx and KD01xx mistake on their own."""
    if checker and has_checker():
        from kdlang.check import check_files

        return check_files([str(path)], [])
    source = path.read_text(encoding="utf-8")
    sources = {str(path): source}
    try:
        module = parse(source, str(path))
    except DiagnosticError as failure:
        return failure.diagnostics, sources
    errors = Collector()
    lower(module, errors)
    return errors.diagnostics, sources


def first_error(diagnostics: list[Diagnostic]) -> Diagnostic | None:
    """The primary error: the first by position."""
    errors = [d for d in diagnostics if d.severity is Severity.ERROR]
    errors.sort(key=lambda d: (d.span.file, d.span.line, d.span.column))
    return errors[0] if errors else None


def expectation(path: Path) -> tuple[str, int, int]:
    """(code, line, column) from the file's first line, ``# expect: KD0102 12:5``."""
    header = path.read_text(encoding="utf-8").splitlines()[0]
    match = EXPECT.match(header)
    assert match, f"{path.name}: first line must be `# expect: KDxxxx LINE:COL`"
    return match.group(1), int(match.group(2)), int(match.group(3))
