"""``kdlang plan FILE``: what will run, what is cached, why, and what it will cost."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from kdlang.cli.common import (
    EXIT_ERRORS,
    check_format,
    color_option,
    default_recipe,
    print_diagnostics,
    read_source,
    set_color,
)

SET_HELP = "Override a setting: PATH=VALUE (e.g. distill.lr=1e-4); repeatable."


def plan(
    file: str = typer.Argument(
        None, metavar="FILE", help="The recipe. Default: the embedded quickstart."
    ),
    fmt: str = typer.Option("table", "--format", metavar="FORMAT", help="table, json or dot."),
    overrides: list[str] = typer.Option(
        [], "--set", metavar="PATH=VALUE", help=SET_HELP, show_default=False
    ),
    cache: str = typer.Option(
        ".kdcache", "--cache", metavar="DIR", help="The cache folder to compare against."
    ),
    color: str = color_option(),
) -> None:
    """Show the execution plan: stages in order, cached or not and why, and estimates."""
    from kdlang.check import check_files, load_checked
    from kdlang.plan import build_plan, plan_to_dot, plan_to_json
    from kdlang.syntax.diagnostics import DiagnosticError

    check_format(fmt, ("table", "json", "dot"))
    set_color(color)
    file = file or default_recipe()
    read_source(file)
    try:
        program, warnings = load_checked(file, overrides)
    except DiagnosticError:
        diagnostics, sources = check_files([file], overrides)
        print_diagnostics(diagnostics, sources, "json" if fmt == "json" else "text")
        raise typer.Exit(EXIT_ERRORS) from None
    print_diagnostics(warnings, program.sources, "text")
    result = build_plan(program, cache)
    lock = _read_lock(file)
    if fmt == "json":
        sys.stdout.write(plan_to_json(result, lock) + "\n")
    elif fmt == "dot":
        sys.stdout.write(plan_to_dot(result))
    else:
        from kdlang.cli.plan_table import print_plan

        print_plan(result, lock)


def _read_lock(file: str) -> dict | None:
    path = Path(file + ".lock")
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def lock(
    file: str = typer.Argument(..., metavar="FILE", help="The recipe."),
    overrides: list[str] = typer.Option(
        [], "--set", metavar="PATH=VALUE", help=SET_HELP, show_default=False
    ),
    cache: str = typer.Option(
        ".kdcache", "--cache", metavar="DIR", help="The cache folder holding outputs."
    ),
    color: str = color_option(),
) -> None:
    """Write FILE.lock: resolved fingerprints and, for what already ran, output hashes."""
    set_color(color)
    from kdlang.check import check_files, load_checked
    from kdlang.plan import Store, build_plan
    from kdlang.plan.render import lock_document
    from kdlang.plan.store import write_json_atomic
    from kdlang.syntax.diagnostics import DiagnosticError

    read_source(file)
    try:
        program, _ = load_checked(file, overrides)
    except DiagnosticError:
        diagnostics, sources = check_files([file], overrides)
        print_diagnostics(diagnostics, sources, "text")
        raise typer.Exit(EXIT_ERRORS) from None
    result = build_plan(program, cache)
    write_json_atomic(Path(file + ".lock"), lock_document(result, Store(cache)))
    sys.stderr.write(f"wrote {file}.lock ({len(result.nodes)} nodes)\n")
