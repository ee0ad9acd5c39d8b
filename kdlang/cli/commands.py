"""The typer app of ``kdlang``: every subcommand with its options and help.

Built on first use (``kdlang.cli.app``, or :func:`kdlang.cli.main`); the subcommand modules
import what their work needs when it runs.
"""

from __future__ import annotations

import typer

from kdlang.cli import cache_cmd, check_cmd, explain_cmd, fmt_cmd, plan_cmd, run_cmd

app = typer.Typer(
    name="kdlang",
    help="kdlang: declarative knowledge-distillation recipes for LLMs. check, fmt, plan, run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("check")(check_cmd.check)
app.command("fmt")(fmt_cmd.fmt)
app.command("explain")(explain_cmd.explain)
app.command("plan")(plan_cmd.plan)
app.command("lock")(plan_cmd.lock)
app.command("run")(run_cmd.run)
app.add_typer(cache_cmd.app, name="cache")
