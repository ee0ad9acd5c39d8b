"""``kdlang plan FILE``: what will run, what is cached, why, and what it will cost."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from kdlang.cli.common import (
    check_format,
    checked_program,
    color_option,
    default_recipe,
    print_diagnostics,
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
    from kdlang.plan import build_plan, plan_to_dot, plan_to_json

    check_format(fmt, ("table", "json", "dot"))
    set_color(color)
    file = file or default_recipe()
    program, warnings = checked_program(file, overrides, fmt)
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
    from kdlang.plan import Store, build_plan
    from kdlang.plan.render import lock_document
    from kdlang.plan.store import write_json_atomic

    program, _ = checked_program(file, overrides)
    result = build_plan(program, cache)
    write_json_atomic(Path(file + ".lock"), lock_document(result, Store(cache)))
    sys.stderr.write(f"wrote {file}.lock ({len(result.nodes)} nodes)\n")
