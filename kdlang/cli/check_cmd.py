"""``kdlang check FILE...``: every mistake that can be found before any model is loaded.

:func:`run_check` does the work. ``kdlang check`` usually runs it without typer:
:func:`parse_args` reads the plain forms of the command's arguments and :func:`kdlang.cli.main`
calls :func:`run_check` itself, since importing typer takes longer than checking a recipe.
:func:`command` is the same command for the typer app (help, usage errors, everything else).
"""

from __future__ import annotations

from kdlang.cli.common import EXIT_ERRORS, EXIT_OK, check_format, print_diagnostics, read_source

FORMATS = ("text", "json")
STDIN = "<stdin>"


def run_check(files: list[str], fmt: str, overrides: list[str]) -> int:
    """Check ``files``, print what was found, and return the exit code (0 clean, 1 errors)."""
    from kdlang.syntax.diagnostics import Severity

    check_format(fmt, FORMATS)
    # A file that cannot be read is a usage error (exit 2), not a finding. ``-`` is standard
    # input, named ``<stdin>`` in diagnostics; its imports are relative to the current folder.
    texts = {STDIN if path == "-" else path: read_source(path) for path in files}
    from kdlang.check import check_files

    diagnostics, sources = check_files(list(texts), overrides, texts)
    print_diagnostics(diagnostics, sources, fmt)
    return EXIT_ERRORS if any(d.severity is Severity.ERROR for d in diagnostics) else EXIT_OK


def parse_args(args: list[str]) -> tuple[list[str], str, list[str]] | None:
    """``(files, format, overrides)`` from the arguments after ``check``, when they only take
    forms that typer reads the same way: files (``-`` is stdin), ``--format F``,
    ``--format=F``, ``--set P=V`` and ``--set=P=V``, in any order.

    None for anything else (``--help``, ``--``, an unknown option, no file, ``--format`` given
    twice, an option value that starts with ``-`` or is missing): typer parses those and reports
    what is wrong with them."""
    files: list[str] = []
    overrides: list[str] = []
    fmt: str | None = None
    rest = iter(args)
    for arg in rest:
        if arg.startswith(("--format=", "--set=")):
            name, value = arg.split("=", 1)
        elif arg in ("--format", "--set"):
            name, value = arg, next(rest, None)
            if value is None or value.startswith("-"):
                return None
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            files.append(arg)
            continue
        if name == "--set":
            overrides.append(value)
        elif fmt is None:
            fmt = value
        else:
            return None
    if not files:
        return None
    return files, "text" if fmt is None else fmt, overrides


def command():
    """The typer command; typer is imported here, when the typer app is built."""
    import typer

    def check(
        files: list[str] = typer.Argument(..., help="Recipe files to check."),
        fmt: str = typer.Option("text", "--format", help="text or json."),
        overrides: list[str] = typer.Option(
            [], "--set", help="Override a setting: PATH=VALUE (e.g. distill.lr=1e-4)."
        ),
    ) -> None:
        """Check recipes: syntax, settings, names, columns, templates, compatibility."""
        code = run_check(files, fmt, overrides)
        if code != EXIT_OK:
            raise typer.Exit(code)

    return check
