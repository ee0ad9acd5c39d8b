"""``kdlang explain CODE``: what a diagnostic code means and how to fix it."""

from __future__ import annotations

import sys

import typer

from kdlang.cli.common import EXIT_USAGE


def explain(code: str = typer.Argument(..., help="A diagnostic code, e.g. KD0102.")) -> None:
    """Explain a diagnostic code."""
    from kdlang.ir.vocabulary import words
    from kdlang.syntax.codes import CODES
    from kdlang.syntax.codes import explain as explanation

    text = explanation(code, words())
    if text is None:
        sys.stderr.write(
            f"error: unknown code {code!r}; codes run from {min(CODES)} to {max(CODES)}\n"
        )
        raise typer.Exit(EXIT_USAGE)
    sys.stdout.write(text)
