"""``kdlang fmt [FILE|DIR]...``: rewrite recipes in the canonical layout, keeping comments.

A folder stands for the recipes below it (``*.kd``, sorted, hidden folders skipped). ``--check``
and ``--diff`` change nothing: both exit 1 when a file would change, and ``--diff`` prints on
stdout the unified diff of what would. What was done is said on stderr, one line a file
(``reformatted FILE`` or ``would reformat FILE``; ``unchanged FILE`` too with ``-v``), then,
for more than one file, a count; ``-q`` leaves all of it out (the diff stays).
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import typer

from kdlang.cli.common import (
    EXIT_ERRORS,
    print_diagnostics,
    read_source,
    recipe_files,
    set_color,
    usage_error,
    use_color,
)


def fmt(
    files: list[str] = typer.Argument(
        ...,
        metavar="FILE",
        help="Recipe files, or folders searched for .kd files; `-` formats stdin to stdout.",
    ),
    check: bool = typer.Option(
        False, "--check", help="Change nothing; exit 1 if a file would change."
    ),
    diff: bool = typer.Option(
        False,
        "--diff",
        help="Change nothing; print a unified diff of what would change (exit 1 if anything would).",
    ),
    quiet: bool = typer.Option(
        False, "-q", "--quiet", help="Say nothing on stderr but errors (a diff is still printed)."
    ),
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Also name the files that are already formatted."
    ),
    color: str = typer.Option(
        "auto",
        "--color",
        metavar="WHEN",
        help="Colour of diagnostics and of the diff: auto (only on a terminal, and not with "
        "NO_COLOR set), always or never.",
    ),
) -> None:
    """Format recipes in place (or check that they are formatted, or show the diff)."""
    from kdlang.syntax.diagnostics import DiagnosticError
    from kdlang.syntax.fmt import format_source

    set_color(color)
    if quiet and verbose:
        usage_error("--quiet and --verbose cannot be combined")
    if "-" in files and len(files) > 1:
        usage_error("`-` (stdin) cannot be combined with other files")
    dry = check or diff
    files = recipe_files(files)
    failed = False
    changed: list[str] = []
    unchanged: list[str] = []
    say = (lambda line: None) if quiet else (lambda line: sys.stderr.write(line + "\n"))
    for path in files:
        source = read_source(path)
        name = "<stdin>" if path == "-" else path
        try:
            formatted = format_source(source, name)
        except DiagnosticError as error:
            print_diagnostics(error.diagnostics, {name: source}, "text")
            failed = True
            continue
        if path == "-" and not dry:
            sys.stdout.write(formatted)
        if formatted == source:
            unchanged.append(name)
            if verbose and path != "-":
                say(f"unchanged {path}")
            continue
        changed.append(name)
        if diff:
            sys.stdout.write(unified_diff(source, formatted, name, use_color(sys.stdout)))
        if path == "-":
            continue
        if dry:
            say(f"would reformat {path}")
        else:
            Path(path).write_text(formatted, encoding="utf-8")
            say(f"reformatted {path}")
    if len(files) > 1:
        verb = "would be reformatted" if dry else "reformatted"
        say(f"{len(files)} files: {len(changed)} {verb}, {len(unchanged)} unchanged")
    if failed or (dry and changed):
        raise typer.Exit(EXIT_ERRORS)


DIFF_STYLES = {"-": "31", "+": "32", "@": "36"}  # removed red, added green, hunks cyan


def unified_diff(before: str, after: str, name: str, color: bool = False) -> str:
    """The unified diff from ``before`` to ``after`` (3 lines of context), both named
    ``name``; a last line without a newline is marked as diff marks it."""
    lines = []
    for line in difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=name,
        tofile=name,
    ):
        body = line.rstrip("\n")
        if color:
            style = "1" if line.startswith(("---", "+++")) else DIFF_STYLES.get(line[:1])
            body = f"\x1b[{style}m{body}\x1b[0m" if style else body
        text = body + ("\n" if line.endswith("\n") else "\n\\ No newline at end of file\n")
        lines.append(text)
    return "".join(lines)
