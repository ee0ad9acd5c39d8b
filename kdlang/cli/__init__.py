"""The ``kdlang`` command line: one small module per subcommand, gathered in the typer app of
:mod:`kdlang.cli.commands` (also reachable as ``kdlang.cli.app``).

:func:`main` is the console script. It imports the app itself, so that a failure while doing so
is reported like any other bug in kdlang, and turns what escapes the app into exit codes: an
interrupt is 130, a closed output pipe 1, and anything unexpected 3, with a traceback to report.
"""

from __future__ import annotations

import errno
import sys
from typing import TYPE_CHECKING, Any, TextIO, cast

if TYPE_CHECKING:
    from typer import Typer

REPORT_URL = "https://github.com/kdlang/kdlang/issues"
EXIT_ERRORS, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 3, 130


def __getattr__(name: str) -> Typer:
    if name == "app":
        from kdlang.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point of the console script. User mistakes are diagnostics; anything else that
    escapes is a bug in kdlang and says so, instead of a bare traceback.

    Typer already ends a command interrupted by Ctrl-C with 130 and one whose output pipe was
    closed with 1; the same cases outside a command (while starting, or reporting a usage error
    to a closed pipe) end here the same way."""
    try:
        from kdlang.cli.commands import app

        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    except _run_error() as error:  # the run cannot go on for a reason the user can act on
        sys.stderr.write(f"error: {error}\n")
        sys.exit(EXIT_ERRORS)
    except BrokenPipeError:  # the reader went away: nothing more can be said to it
        sys.stdout = cast(TextIO, _ClosedPipe(sys.stdout))
        sys.stderr = cast(TextIO, _ClosedPipe(sys.stderr))
        sys.exit(1)
    except Exception as error:  # an internal error: the one place a traceback is offered
        import traceback

        sys.stderr.write(
            f"internal error: kdlang failed unexpectedly ({type(error).__name__}: {error}).\n"
            f"This is a bug in kdlang, not in your recipe; please report it at {REPORT_URL} with "
            "the traceback below.\n\n"
        )
        traceback.print_exc()
        sys.exit(EXIT_INTERNAL)


def _run_error() -> type[Exception]:
    """The runtime's error for what the user can act on (its module imports nothing heavy)."""
    from kdlang.runtime.errors import RunError

    return RunError


class _ClosedPipe:
    """A stream whose reader went away: flushing it at exit must not raise again. It stands in
    for the stream it wraps (hence the casts above), passing everything else through."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as error:
            if error.errno != errno.EPIPE:
                raise
