"""The typer app of ``kdlang``: every subcommand with its options and help.

Built on first use (``kdlang.cli.app``, or :func:`kdlang.cli.main`); the subcommand modules
import what their work needs when it runs.
"""

from __future__ import annotations

import sys

import typer

from kdlang.cli import cache_cmd, check_cmd, explain_cmd, fmt_cmd, plan_cmd, run_cmd, show_cmd
from kdlang.cli.common import Command, Group

app = typer.Typer(
    name="kdlang",
    help="kdlang: declarative knowledge-distillation recipes for LLMs. check, fmt, plan, run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
)


def _print_version(value: bool) -> None:
    if value:
        from kdlang import __version__

        sys.stdout.write(f"kdlang {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version (kdlang X.Y.Z) and exit.",
    ),
) -> None:
    """kdlang: declarative knowledge-distillation recipes for LLMs. check, fmt, plan, run."""


app.command("check", cls=Command)(check_cmd.check)
app.command("fmt", cls=Command)(fmt_cmd.fmt)
app.command("explain", cls=Command)(explain_cmd.explain)
app.command("plan", cls=Command)(plan_cmd.plan)
app.command("lock", cls=Command)(plan_cmd.lock)
app.command("run", cls=Command)(run_cmd.run)
app.command("show", cls=Command)(show_cmd.show)
app.add_typer(cache_cmd.app, name="cache")
