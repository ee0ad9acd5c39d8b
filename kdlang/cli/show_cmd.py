"""``kdlang show NAME [FILE]``: the rows a dataset or stage holds in the cache."""

from __future__ import annotations

import json
import sys
from typing import NoReturn

import typer

from kdlang.cli.common import (
    EXIT_ERRORS,
    check_format,
    checked_program,
    color_option,
    console,
    default_recipe,
    set_color,
)

SET_HELP = "Override a setting: PATH=VALUE; repeatable."
CELL = 60
"""Characters of a cell the table shows (the rest is cut, marked with …)."""


def show(
    name: str = typer.Argument(..., metavar="NAME", help="A dataset or stage of the recipe."),
    file: str = typer.Argument(
        None, metavar="FILE", help="The recipe. Default: the embedded quickstart."
    ),
    limit: int = typer.Option(20, "--limit", metavar="N", help="Rows shown; 0: all."),
    fmt: str = typer.Option("table", "--format", metavar="FORMAT", help="table or jsonl."),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        metavar="PATH=VALUE",
        help=SET_HELP,
        show_default=False,
    ),
    cache: str = typer.Option(".kdcache", "--cache", metavar="DIR", help="The cache folder."),
    color: str = color_option(),
) -> None:
    """Show the rows of a dataset or stage from the cache (run the recipe first)."""
    from kdlang.plan import build_plan

    check_format(fmt, ("table", "jsonl"))
    set_color(color)
    if limit < 0:
        _fail(f"--limit must be 0 (all) or more, not {limit}", code=2)
    file = file or default_recipe()
    program, _ = checked_program(file, overrides)
    plan = build_plan(program, cache)
    nodes = {n.name: n for n in plan.nodes}
    node = nodes.get(name)
    data = [n for n, v in nodes.items() if v.kind in ("dataset", "stage")]
    if node is None or node.kind not in ("dataset", "stage"):
        what = "no dataset or stage" if node is None else f"a {node.kind}, which holds no rows;"
        _fail(f"`{name}` is {what} (datasets and stages: {', '.join(data)})", code=2)
    if node.status != "cached":
        _fail(f"`{name}` is not in the cache {cache} (it {node.status}); run the recipe first")
    from kdlang.plan.store import Store
    from kdlang.runtime.data import read_rows

    rows = read_rows(Store(cache).artifact(node.fingerprint))
    shown = rows if limit == 0 else rows[:limit]
    if fmt == "jsonl":
        sys.stdout.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in shown)
        return
    _table(name, rows, shown)


def _table(name: str, rows: list[dict], shown: list[dict]) -> None:
    from rich.table import Table

    columns = list(rows[0]) if rows else []
    table = Table()
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in shown:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    out = console()
    out.print(f"{name}: {len(shown)} of {len(rows)} rows", highlight=False, soft_wrap=True)
    out.print(table)


def _cell(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", "⏎")
    return text if len(text) <= CELL else text[: CELL - 1] + "…"


def _fail(message: str, code: int = EXIT_ERRORS) -> NoReturn:
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)
