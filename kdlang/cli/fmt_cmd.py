"""``kdlang fmt FILE...``: rewrite recipes in the canonical layout, keeping comments."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from kdlang.cli.common import EXIT_ERRORS, print_diagnostics, read_source, usage_error


def fmt(
    files: list[str] = typer.Argument(..., help="Recipe files; `-` formats stdin to stdout."),
    check: bool = typer.Option(
        False, "--check", help="Change nothing; exit 1 if a file would change."
    ),
) -> None:
    """Format recipes in place (or check that they are formatted)."""
    from kdlang.syntax.diagnostics import DiagnosticError
    from kdlang.syntax.fmt import format_source

    if "-" in files and len(files) > 1:
        usage_error("`-` (stdin) cannot be combined with other files")
    failed = changed = False
    for path in files:
        source = read_source(path)
        name = "<stdin>" if path == "-" else path
        try:
            formatted = format_source(source, name)
        except DiagnosticError as error:
            print_diagnostics(error.diagnostics, {name: source}, "text")
            failed = True
            continue
        if path == "-":
            if check:
                changed |= formatted != source
            else:
                sys.stdout.write(formatted)
            continue
        if formatted != source:
            changed = True
            if check:
                sys.stderr.write(f"would reformat {path}\n")
            else:
                Path(path).write_text(formatted, encoding="utf-8")
                sys.stderr.write(f"reformatted {path}\n")
    if failed or (check and changed):
        raise typer.Exit(EXIT_ERRORS)
