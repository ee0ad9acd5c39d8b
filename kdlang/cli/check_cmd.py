"""``kdlang check FILE...``: every mistake that can be found before any model is loaded."""

from __future__ import annotations

import typer

from kdlang.cli.common import EXIT_ERRORS, check_format, print_diagnostics, read_source
from kdlang.syntax.diagnostics import Severity


def check(
    files: list[str] = typer.Argument(..., help="Recipe files to check."),
    fmt: str = typer.Option("text", "--format", help="text or json."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a setting: PATH=VALUE (e.g. distill.lr=1e-4)."
    ),
) -> None:
    """Check recipes: syntax, settings, names, columns, templates, compatibility."""
    check_format(fmt, ("text", "json"))
    for path in files:
        read_source(path)  # a file that cannot be read is a usage error (exit 2), not a finding
    from kdlang.check import check_files

    diagnostics, sources = check_files(files, overrides)
    print_diagnostics(diagnostics, sources, fmt)
    if any(d.severity is Severity.ERROR for d in diagnostics):
        raise typer.Exit(EXIT_ERRORS)
