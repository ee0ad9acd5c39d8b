"""Helpers of the several-process tests: ``kdlang run`` under a launcher, in a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


def launch(recipe: Path, nproc: int, *extra: str, timeout: int = 240, env=None):
    """``kdlang run RECIPE --launcher torchrun --nproc N`` (workdir: the recipe's folder, CPU,
    one thread per process); returns the finished process (exit status, output)."""
    command = [
        sys.executable, "-m", "kdlang", "run", str(recipe),
        "--workdir", str(recipe.parent), "--device", "cpu",
        "--launcher", "torchrun", "--nproc", str(nproc), *extra,
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout
    )


def report(recipe: Path) -> dict[str, Any]:
    (path,) = (recipe.parent / "runs").glob("*/report.json")
    return json.loads(path.read_text(encoding="utf-8"))


def start(recipe: Path, nproc: int, env=None) -> subprocess.Popen:
    """:func:`launch` without waiting (stop it with :func:`kill`)."""
    command = [
        sys.executable, "-m", "kdlang", "run", str(recipe),
        "--workdir", str(recipe.parent), "--device", "cpu",
        "--launcher", "torchrun", "--nproc", str(nproc),
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def kill(process: subprocess.Popen) -> None:
    """SIGKILL ``process`` and every process it started, directly or not (the launcher starts
    its workers in sessions of their own): a crash of the whole tree at one moment. Every
    process is stopped first, so that none starts another or notices the others dying."""
    stopped: list[int] = []
    while True:
        fresh = [pid for pid in [process.pid, *descendants(process.pid)] if pid not in stopped]
        if not fresh:
            break
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stopped += fresh
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # a group the process leads, if it leads one
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=60)
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in stopped[1:]) and time.monotonic() < deadline:
        time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux: read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
