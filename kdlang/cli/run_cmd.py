"""``kdlang run [FILE]``: execute a recipe, reusing every cached stage. Without FILE, the embedded
quickstart recipe runs (offline, on CPU, in minutes)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from kdlang.cli.common import EXIT_ERRORS, check_format, print_diagnostics, read_source


def default_recipe() -> str:
    """The embedded default recipe (``recipes/quickstart.kd``, shipped as ``kdlang.recipes``)."""
    from importlib import resources

    return str(resources.files("kdlang.recipes").joinpath("quickstart.kd"))


def run(
    file: str = typer.Argument(None, help="The recipe; default: the embedded quickstart."),
    overrides: list[str] = typer.Option([], "--set", help="Override a setting: PATH=VALUE."),
    only: list[str] = typer.Option(
        [], "--only", help="Run only this node and what it needs (repeatable)."
    ),
    force: list[str] = typer.Option(
        [], "--force", help="Run this node even if cached (repeatable)."
    ),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    workdir: str = typer.Option(".", "--workdir", help="Where runs/ (reports) and the cache live."),
    cache: str = typer.Option(
        None, "--cache", help="The cache folder (default: WORKDIR/.kdcache)."
    ),
) -> None:
    """Run a recipe: every stage in order, cached stages reused, a report written."""
    from kdlang.check import check_files, load_checked
    from kdlang.plan import build_plan
    from kdlang.syntax.diagnostics import DiagnosticError

    check_format(device, ("cpu", "cuda", "auto"))
    file = file or default_recipe()
    read_source(file)
    try:
        program, warnings = load_checked(file, overrides)
    except DiagnosticError:
        diagnostics, sources = check_files([file], overrides)
        print_diagnostics(diagnostics, sources, "text")
        raise typer.Exit(EXIT_ERRORS) from None
    print_diagnostics(warnings, program.sources, "text")
    root = Path(workdir)
    plan = build_plan(program, cache or str(root / ".kdcache"))
    unknown = [name for name in [*only, *force] if name not in {n.name for n in plan.nodes}]
    if unknown:
        sys.stderr.write(
            f"error: no node named {', '.join(unknown)}; nodes: {', '.join(n.name for n in plan.nodes)}\n"
        )
        raise typer.Exit(2)
    from kdlang.cli.run_view import run_with_progress

    result = run_with_progress(plan, root, only, force, device)
    if not result.ok:
        raise typer.Exit(EXIT_ERRORS)
