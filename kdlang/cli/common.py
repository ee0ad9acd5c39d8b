"""What the subcommands share: reading files, finding recipes in folders, printing diagnostics
in colour or not, exit codes, and the help layout.

An exit code is raised as :class:`SystemExit`, which typer lets through unchanged: a helper can
end the command from wherever it is called.

Colour: every command that prints diagnostics or tables takes ``--color auto|always|never``
and calls :func:`set_color` first. ``auto`` colours a stream only when it is a terminal and
``NO_COLOR`` is unset or empty; ``always`` and ``never`` win over ``NO_COLOR``, as the
convention of no-color.org asks of an explicit flag.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from kdlang.syntax.diagnostics import Diagnostic, Severity, render, render_json

if TYPE_CHECKING:
    from rich.console import Console

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2
COLORS = ("auto", "always", "never")
RECIPE_SUFFIX = ".kd"
_color = {"choice": "auto"}

COLOR_OPTION_HELP = "Colour: auto (only on a terminal, and not with NO_COLOR set), always or never."


def color_option() -> Any:
    return typer.Option("auto", "--color", metavar="WHEN", help=COLOR_OPTION_HELP)


def set_color(choice: str) -> None:
    """Use ``choice`` (auto, always or never) for what this command prints; a usage error for
    anything else."""
    if choice not in COLORS:
        usage_error(f"--color must be one of {', '.join(COLORS)}, not {choice!r}")
    _color["choice"] = choice


def use_color(stream: TextIO) -> bool:
    """Whether to colour what goes to ``stream`` under the current ``--color`` choice."""
    choice = _color["choice"]
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR", ""):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def console(stderr: bool = False, **settings: Any) -> Console:
    """A rich console on stdout (or stderr) that colours as :func:`use_color` says. Without
    colour it writes no escape sequence of style at all (rich's ``color_system=None``); a
    terminal stays a terminal (progress bars still redraw)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if not use_color(stream):
        return Console(stderr=stderr, color_system=None, **settings)
    made = Console(stderr=stderr, force_terminal=True, **settings)
    if made.color_system is None:  # a terminal rich would not colour (TERM=dumb): asked to
        made = Console(stderr=stderr, force_terminal=True, color_system="standard", **settings)
    return made


def recipe_files(paths: list[str]) -> list[str]:
    """``paths`` with each folder replaced by the recipes (``*.kd``) below it, sorted, hidden
    files and folders (``.kdcache`` among them) skipped; symbolic links to folders are not
    followed. A folder without recipes is a usage error."""
    files: list[str] = []
    for path in paths:
        if path == "-" or not os.path.isdir(path):
            files.append(path)
            continue
        found = []
        for folder, subfolders, names in os.walk(path):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            found += [
                os.path.join(folder, name)
                for name in names
                if name.endswith(RECIPE_SUFFIX) and not name.startswith(".")
            ]
        if not found:
            usage_error(f"no {RECIPE_SUFFIX} files in {path}")
        files += sorted(found, key=lambda f: Path(os.path.relpath(f, path)).parts)
    return files


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


def checked_program(file: str, overrides: list[str], fmt: str = "text"):
    """``(program, warnings)`` of a recipe that checks, or its diagnostics printed (as JSON
    with ``fmt = "json"``) and exit 1: what ``plan``, ``lock`` and ``show`` start with."""
    from kdlang.check import check_files, load_checked
    from kdlang.syntax.diagnostics import DiagnosticError

    read_source(file)
    try:
        return load_checked(file, overrides)
    except DiagnosticError:
        diagnostics, sources = check_files([file], overrides)
        print_diagnostics(diagnostics, sources, "json" if fmt == "json" else "text")
        raise typer.Exit(EXIT_ERRORS) from None


def print_diagnostics(
    diagnostics: list[Diagnostic], sources: dict[str, str], fmt: str, summary: bool = True
) -> None:
    """Diagnostics as JSON on stdout, or rendered on stderr followed (unless ``summary`` is
    false) by the count of errors and warnings."""
    if fmt == "json":
        sys.stdout.write(render_json(diagnostics) + "\n")
        return
    if diagnostics:
        color = use_color(sys.stderr)
        sys.stderr.write(render(diagnostics, sources, color=color))
        if summary:
            sys.stderr.write(summary_line(diagnostics) + "\n")


def summary_line(diagnostics: list[Diagnostic]) -> str:
    """``2 errors, 1 warning``: the count of ``diagnostics`` by severity."""
    errors = sum(d.severity is Severity.ERROR for d in diagnostics)
    warnings = len(diagnostics) - errors
    summary = f"{errors} error{'s' * (errors != 1)}"
    if warnings:
        summary += f", {warnings} warning{'s' * (warnings != 1)}"
    return summary


def default_recipe() -> str:
    """The embedded default recipe (``recipes/quickstart.kd``, shipped as ``kdlang.recipes``)."""
    from importlib import resources

    return str(resources.files("kdlang.recipes").joinpath("quickstart.kd"))


def check_format(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        usage_error(f"--format must be one of {', '.join(allowed)}, not {value!r}")
    return value


# -- help ------------------------------------------------------------------------------------
# typer shows each value's Python type beside its option (``<list[str]>``, ``<bool>``); the
# help of kdlang names values by what they are instead: an option's metavar (FILE, FORMAT,
# PATH=VALUE), nothing for a flag, and an argument by its name alone.


class _Argument(TyperArgument):
    def display_type(self, ctx: Any) -> str:
        return ""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class _Option(TyperOption):
    def display_type(self, ctx: Any) -> str:
        return self.metavar or ""

    def display_type_rich(self, ctx: Any) -> str | None:
        return self.metavar or None


def _plain_types(params: list[Any]) -> list[Any]:
    for param in params:
        if type(param) is TyperArgument:
            param.__class__ = _Argument
        elif type(param) is TyperOption:
            if param.metavar is None and not param.is_flag:
                param.metavar = (param.name or "value").upper()
            param.__class__ = _Option
    return params


class Command(TyperCommand):
    """A subcommand whose help names no Python types."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_types(super().get_params(ctx))


class Group(TyperGroup):
    """A group (``kdlang``, ``kdlang cache``) whose help names no Python types."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_types(super().get_params(ctx))
