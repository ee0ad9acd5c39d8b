"""What the subcommands share: reading files, printing diagnostics, exit codes.

An exit code is raised as :class:`SystemExit`, which typer lets through unchanged: a helper can
end the command from wherever it is called.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kdlang.syntax.diagnostics import Diagnostic, Severity, render, render_json

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


def read_source(path: str) -> str:
    """The text of ``path`` (``-`` = stdin). A missing file is a usage error (exit 2)."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        usage_error(f"no such file: {path}")
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as error:
        usage_error(f"cannot read {path}: {error}")
    raise AssertionError


def usage_error(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(EXIT_USAGE)


def print_diagnostics(diagnostics: list[Diagnostic], sources: dict[str, str], fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(render_json(diagnostics) + "\n")
        return
    if diagnostics:
        color = sys.stderr.isatty()
        sys.stderr.write(render(diagnostics, sources, color=color))
        errors = sum(d.severity is Severity.ERROR for d in diagnostics)
        warnings = len(diagnostics) - errors
        summary = f"{errors} error{'s' * (errors != 1)}"
        if warnings:
            summary += f", {warnings} warning{'s' * (warnings != 1)}"
        sys.stderr.write(summary + "\n")


def check_format(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        usage_error(f"--format must be one of {', '.join(allowed)}, not {value!r}")
    return value
