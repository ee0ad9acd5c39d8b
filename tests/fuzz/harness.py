"""Running one fuzz case the way ``kdlang check`` and ``kdlang fmt`` would, in this process.

The outcome is good when the checker answers with diagnostics that each name a file, a line and a
column inside the source (or with none), and their rendering works; when the recipe has no
error, ``fmt`` must format it and formatting again must change nothing. Anything else is a
finding: an exception escaping (a traceback for the user), a case using more than
:data:`TIME_LIMIT` seconds of CPU time (a hang; CPU time, so that a loaded machine does not
make a slow case of a fast one), or the process's peak memory growing by more than
:data:`MEMORY_LIMIT_MB`.
"""

from __future__ import annotations

import resource
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

TIME_LIMIT = 2.0
MEMORY_LIMIT_MB = 512


class CaseTimeout(BaseException):
    """Raised in the case by the CPU-time interval timer (a BaseException: no ``except Exception``
    inside kdlang swallows it)."""


@dataclass
class Outcome:
    name: str
    kind: str  # "clean", "diagnostics" or "finding"
    detail: str = ""
    seconds: float = 0.0


def _peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def _on_alarm(signum, frame):
    raise CaseTimeout()


def run_case(name: str, data: bytes, folder: Path) -> Outcome:
    from kdlang.check import check_files
    from kdlang.syntax.diagnostics import render

    path = folder / "case.kd"
    path.write_bytes(data)
    before = _peak_mb()
    previous = signal.signal(signal.SIGPROF, _on_alarm)
    signal.setitimer(signal.ITIMER_PROF, TIME_LIMIT)
    began = time.process_time()
    try:
        diagnostics, sources = check_files([str(path)])
        render(diagnostics, sources)
        problem = _misplaced(diagnostics, sources)
        if problem is None and not any(d.severity.name == "ERROR" for d in diagnostics):
            problem = _fmt_problem(sources.get(str(path)))
    except CaseTimeout:
        problem = f"used more than {TIME_LIMIT} s of CPU time"
    except BaseException as error:  # every escape is the finding
        if isinstance(error, KeyboardInterrupt):
            raise
        problem = "exception:\n" + "".join(traceback.format_exception(error))[-3000:]
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    seconds = time.process_time() - began
    grown = _peak_mb() - before
    if problem is None and grown > MEMORY_LIMIT_MB:
        problem = f"peak memory grew by {grown:.0f} MB"
    if problem is not None:
        return Outcome(name, "finding", problem, seconds)
    return Outcome(name, "diagnostics" if diagnostics else "clean", "", seconds)


def _misplaced(diagnostics, sources) -> str | None:
    for d in diagnostics:
        span = d.span
        if not d.code or not d.code.startswith("KD"):
            return f"a diagnostic without a code: {d}"
        if not span.file or span.line < 1 or span.column < 1:
            return f"a diagnostic without a position: {d.code} {span}"
        text = sources.get(span.file)
        if text is not None and span.line > text.count("\n") + 1:
            return f"{d.code} points past the end of {span.file}: line {span.line}"
    return None


def _fmt_problem(source: str | None) -> str | None:
    from kdlang.syntax.fmt import format_source

    if source is None:
        return None
    once = format_source(source)
    twice = format_source(once)
    return None if once == twice else "fmt is not idempotent"
