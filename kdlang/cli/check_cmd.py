"""``kdlang check FILE...``: every mistake that can be found before any model is loaded.

The checker is imported once the arguments are read and the files found, so that a usage error
is reported without loading it.

``check`` runs often (editors, pre-commit hooks) and briefly. What it builds (the parser's
tables, the IR models and their validators, the recipe's IR) stays alive until the process
ends, and walking all of it is what the garbage collector's full collection at interpreter exit
costs most (pydantic's validators traverse their whole schemas). So, once the check has printed
what it found, the objects that exist are frozen (``gc.freeze``) out of that collection: they are
released with the process. Nothing the check holds writes anything when it is finalized: the
files it reads are closed, and the parser's cache file is written and closed while the recipe is
parsed. (Run in-process, as typer's test runner does, the freeze applies to that process too:
what exists then is never collected as cyclic garbage.)
"""

from __future__ import annotations

import gc
import os

import typer

from kdlang.cli.common import (
    EXIT_ERRORS,
    check_format,
    print_diagnostics,
    read_source,
    usage_error,
)

FORMATS = ("text", "json")
STDIN = "<stdin>"


def check(
    files: list[str] = typer.Argument(..., help="Recipe files to check."),
    fmt: str = typer.Option("text", "--format", help="text or json."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a setting: PATH=VALUE (e.g. distill.lr=1e-4)."
    ),
) -> None:
    """Check recipes: syntax, settings, names, columns, templates, compatibility."""
    check_format(fmt, FORMATS)
    # A missing file is a usage error (exit 2), not a finding; a file that is no regular file,
    # too large or not UTF-8 is a diagnostic of the checker, which reads it safely. ``-`` is
    # standard input, named ``<stdin>`` in diagnostics; its imports are relative to the current
    # folder.
    for path in files:
        if path != "-" and not os.path.lexists(path):
            usage_error(f"no such file: {path}")
        if path != "-" and os.path.isdir(path):
            usage_error(f"cannot read {path}: it is a folder")
    texts = {STDIN: read_source("-")} if "-" in files else {}
    paths = [STDIN if path == "-" else path for path in files]
    from kdlang.check import check_files
    from kdlang.syntax.diagnostics import Severity

    diagnostics, sources = check_files(paths, overrides, texts)
    print_diagnostics(diagnostics, sources, fmt)
    gc.freeze()  # see the module's text: left out of the collection at exit
    if any(d.severity is Severity.ERROR for d in diagnostics):
        raise typer.Exit(EXIT_ERRORS)
