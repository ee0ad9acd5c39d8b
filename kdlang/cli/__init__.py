"""The ``kdlang`` command line: one small module per subcommand."""

from __future__ import annotations

import sys

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

REPORT_URL = "https://github.com/kdlang/kdlang/issues"


def main() -> None:
    """Entry point of the console script. User mistakes are diagnostics; anything else that
    escapes is a bug in kdlang and says so, instead of a bare traceback."""
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as error:  # an internal error: the one place a traceback is offered
        import traceback

        sys.stderr.write(
            f"internal error: kdlang failed unexpectedly ({type(error).__name__}: {error}).\n"
            f"This is a bug in kdlang, not in your recipe; please report it at {REPORT_URL} with "
            "the traceback below.\n\n"
        )
        traceback.print_exc()
        sys.exit(3)
