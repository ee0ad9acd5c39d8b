"""``kdlang check [FILE|DIR]...``: every mistake that can be found before any model is loaded.

Each file is reported in order: its diagnostics (on stderr), or, when it has no error, one line
on stdout: ``ok: FILE (N declarations)`` (``, W warnings`` added when it has warnings), N
counting every model, dataset, prompt, stage, train, eval and export, those of imported files
included. A folder stands for the recipes below it; no file at all means the embedded
quickstart, as ``kdlang run`` does. With more than one file, a last line on stdout counts the
files: ``checked 3 files: 2 ok, 1 with errors``.

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
import sys

import typer

from kdlang.cli.common import (
    EXIT_ERRORS,
    check_format,
    color_option,
    default_recipe,
    print_diagnostics,
    read_source,
    recipe_files,
    set_color,
    summary_line,
    usage_error,
)

FORMATS = ("text", "json")
STDIN = "<stdin>"
SECTIONS = ("models", "datasets", "prompts", "stages", "trains", "evals")


def check(
    files: list[str] = typer.Argument(
        None,
        metavar="FILE",
        help="Recipe files, or folders searched for .kd files; `-` reads stdin. "
        "Default: the embedded quickstart.",
        show_default=False,
    ),
    fmt: str = typer.Option("text", "--format", metavar="FORMAT", help="text or json."),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        metavar="PATH=VALUE",
        help="Override a setting (e.g. distill.lr=1e-4); repeatable.",
        show_default=False,
    ),
    quiet: bool = typer.Option(
        False, "-q", "--quiet", help="Print errors only: no warnings, no ok lines, no count."
    ),
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Under each ok line, list the declarations by section."
    ),
    offline: bool = typer.Option(
        False,
        "--offline",
        help="Also warn of hub model ids not in the local Hugging Face cache (KD0414).",
    ),
    color: str = color_option(),
) -> None:
    """Check recipes: syntax, settings, names, columns, templates, compatibility."""
    check_format(fmt, FORMATS)
    set_color(color)
    if quiet and verbose:
        usage_error("--quiet and --verbose cannot be combined")
    files = files or [default_recipe()]
    # A missing file is a usage error (exit 2), not a finding; a file that is no regular file,
    # too large or not UTF-8 is a diagnostic of the checker, which reads it safely. ``-`` is
    # standard input, named ``<stdin>`` in diagnostics; its imports are relative to the current
    # folder. A folder stands for the recipes below it.
    for path in files:
        if path != "-" and not os.path.lexists(path):
            usage_error(f"no such file: {path}")
    files = recipe_files(files)
    texts = {STDIN: read_source("-")} if "-" in files else {}
    paths = [STDIN if path == "-" else path for path in files]
    from kdlang.check import check_files, check_program
    from kdlang.syntax.diagnostics import Collector, DiagnosticError, Severity

    every: list = []
    sources: dict[str, str] = {}
    failed = 0
    blank = False  # a blank line between the diagnostics of two files
    for path in paths:
        errors = Collector()
        try:
            program = check_program(path, list(overrides), errors, texts.get(path))
            if program is not None and offline:
                from kdlang.check.models import uncached_hub_models

                uncached_hub_models(program, errors)
        except DiagnosticError:  # every step collects instead; should one not, say it as below
            program = None
        if program is None:  # unreadable or unparsable: the checker's own account of it
            found, shown = check_files([path], overrides, texts)
        else:
            found = sorted(
                errors.diagnostics,
                key=lambda d: (d.span.file != path, d.span.file, d.span.line, d.span.column),
            )
            shown = program.sources
        sources.update(shown)
        has_errors = any(d.severity is Severity.ERROR for d in found)
        failed += has_errors
        shown_here = [d for d in found if d.severity is Severity.ERROR] if quiet else found
        every += shown_here
        if fmt == "json":
            continue
        if shown_here:
            sys.stderr.write("\n" if blank else "")
            print_diagnostics(shown_here, shown, fmt, summary=False)
            sys.stderr.flush()
            blank = True
        if not has_errors and program is not None and not quiet:
            _ok_line(path, program, len(found), verbose)
    if fmt == "json":
        print_diagnostics(every, sources, fmt)
    else:
        if every and not quiet:
            sys.stderr.write(summary_line(every) + "\n")
        if len(paths) > 1 and not quiet:
            sys.stdout.write(
                f"checked {len(paths)} files: {len(paths) - failed} ok, {failed} with errors\n"
            )
    sys.stdout.flush()
    gc.freeze()  # see the module's text: left out of the collection at exit
    if failed:
        raise typer.Exit(EXIT_ERRORS)


def _ok_line(path: str, program, warnings: int, verbose: bool) -> None:
    recipe = program.recipe
    names = {section: list(getattr(recipe, section)) for section in SECTIONS}
    names["exports"] = [export.train.name for export in recipe.exports]
    count = sum(len(found) for found in names.values())
    extra = f", {warnings} warning{'s' * (warnings != 1)}" if warnings else ""
    lines = [f"ok: {path} ({count} declaration{'s' * (count != 1)}{extra})"]
    if verbose:
        lines += [f"  {section}: {', '.join(found)}" for section, found in names.items() if found]
        imported = [file for file in program.sources if file != path and not file.startswith("<")]
        if imported:
            lines.append(f"  imports: {', '.join(imported)}")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()  # in order with the diagnostics on stderr, when both are one stream
