"""The ``kdlang`` command line: one small module per subcommand.

The typer app (:mod:`kdlang.cli.commands`, also reachable as ``kdlang.cli.app``) is built only
when needed. ``kdlang check`` is run often (editors, pre-commit hooks) and importing typer takes
longer than checking a recipe, so :func:`main` runs a plain ``kdlang check`` without it: when
:func:`kdlang.cli.check_cmd.parse_args` reads the arguments, the command runs directly, with the
exit codes and output typer would give; anything else goes to the typer app.
"""

from __future__ import annotations

import errno
import gc
import os
import sys

REPORT_URL = "https://github.com/kdlang/kdlang/issues"


def __getattr__(name: str):
    if name == "app":
        from kdlang.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point of the console script. User mistakes are diagnostics; anything else that
    escapes is a bug in kdlang and says so, instead of a bare traceback."""
    try:
        code = _check_without_typer(sys.argv[1:])
        if code is not None:
            sys.exit(code)
        from kdlang.cli.commands import app

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


def _check_without_typer(args: list[str]) -> int | None:
    """The exit code of ``kdlang check ...`` run directly, or None to leave it to typer: another
    command, arguments typer should read, Windows (where typer expands wildcards) or a shell
    completion request."""
    if not args or args[0] != "check" or os.name == "nt":
        return None
    if any(
        key.startswith("_") and key.endswith("_COMPLETE") and value
        for key, value in os.environ.items()
    ):
        return None
    from kdlang.cli import check_cmd

    parsed = check_cmd.parse_args(args[1:])
    if parsed is None:
        return None
    # Checking builds many long-lived objects (parser tables, schemas, the IR) and little cyclic
    # garbage: young objects are collected every 50,000 allocations rather than 700 (cycles are
    # still freed, however many files are checked), and what exists at the end is frozen, out of
    # the collections the interpreter runs as it shuts down. Together about 35 ms.
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 10, 10)
    # What typer does around a command: Ctrl-C exits 130 quietly, a closed output pipe exits 1.
    try:
        return check_cmd.run_check(*parsed)
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        if error.errno != errno.EPIPE:
            raise
        sys.stdout = _ClosedPipe(sys.stdout)
        sys.stderr = _ClosedPipe(sys.stderr)
        return 1
    finally:
        gc.freeze()
        gc.set_threshold(*thresholds)


class _ClosedPipe:
    """A stream whose reader went away: flushing it at exit must not raise again."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as error:
            if error.errno != errno.EPIPE:
                raise
