"""The cache lock: one process at a time writes a cache.

Two ``kdlang run`` on one cache would both generate every row (twice the teacher calls) and race
on the same progress logs; ``kdlang cache gc`` during a run would remove what it is writing. So a
run holds ``<cache>/lock`` exclusively for as long as it runs, and ``gc`` takes it too.

The lock is an ``fcntl.flock`` on that file: the operating system releases it when the holding
process ends, however it ends (a crash or ``kill -9`` leaves no stale lock to clean up). The file
itself stays, holding the last holder's pid, command and start time, which the message to a
second process shows. The processes of one launched group (``--launcher``) run under their
launcher's lock: it sets :data:`HELD_BY_PARENT` for them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK = "lock"
HELD_BY_PARENT = "KDLANG_CACHE_LOCK_HELD"
"""Set by a launcher holding the lock for the processes it starts."""

try:
    import fcntl
except ImportError:  # not POSIX: no lock (a second run is not refused)
    fcntl = None  # type: ignore[assignment]


class CacheBusy(Exception):
    """Another process holds the cache lock; ``holder`` is what it wrote there (may be {})."""

    def __init__(self, root: Path, holder: dict):
        self.root, self.holder = root, holder
        pid, since = holder.get("pid"), holder.get("started")
        who = f"process {pid}" if pid else "another process"
        what = f" ({holder['command']})" if holder.get("command") else ""
        when = f", since {since}" if since else ""
        super().__init__(f"{who}{what} holds the cache {root}{when}")


@contextmanager
def cache_lock(root: str | os.PathLike, *, wait: bool = False, on_wait=None) -> Iterator[None]:
    """Hold the lock of the cache at ``root`` (created if needed) for the block.

    Without ``wait``, :class:`CacheBusy` if another process holds it; with ``wait``, block until
    it is free, calling ``on_wait(holder)`` once first. A process of a launched group whose
    launcher holds it (:data:`HELD_BY_PARENT`) does not take it again."""
    root = Path(root)
    if fcntl is None or os.environ.get(HELD_BY_PARENT) == str(root.resolve()):
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            if not wait:
                raise CacheBusy(root, holder) from None
            if on_wait is not None:
                on_wait(CacheBusy(root, holder))
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        record = {
            "pid": os.getpid(),
            "command": _command(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        handle.write(json.dumps(record))
        handle.flush()
        yield
    finally:
        handle.close()  # closing the file releases the lock


def _command() -> str:
    """``kdlang SUBCOMMAND FILE``: the rest of the command line (``--set`` values among it) is
    not written, as it may hold what should not be shown."""
    recipes = [Path(word).name for word in sys.argv[2:] if word.endswith(".kd")][:1]
    return " ".join(["kdlang", *sys.argv[1:2], *recipes])


def _holder(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
