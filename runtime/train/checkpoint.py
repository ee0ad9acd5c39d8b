"""Training checkpoints in a stage's progress folder, committed atomically.

A checkpoint is a folder ``ckpt-<step>`` holding ``state.pt`` (the step to run next, trainable
weights, optimizer state, data position) and one ``rng-<rank>.pt`` per process (Python, NumPy,
torch CPU and CUDA generator states). It is written under ``ckpt-<step>.tmp``, synced, and
renamed into place by rank 0 once every rank has written its part; only then are older ones
removed. A crash at any moment leaves the previous checkpoint intact, and a half-written
``.tmp`` folder is never read.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

PREFIX = "ckpt-"


@dataclass
class Checkpoint:
    step: int
    state: dict[str, Any]
    rng: dict[str, Any] | None


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(folder: Path, step: int, state: dict[str, Any], dist) -> Path:
    """Commit checkpoint ``step`` (the next step to run). ``state`` matters on rank 0 only;
    every rank writes its random-generator states. Collective: all ranks call it."""
    final = folder / f"{PREFIX}{step:08d}"
    tmp = folder / f"{PREFIX}{step:08d}.tmp"
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    _write(tmp / f"rng-{dist.rank}.pt", rng_state())
    if dist.is_main:
        _write(tmp / "state.pt", {"step": step, **state})
    dist.barrier()
    if dist.is_main:
        _fsync_dir(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        _fsync_dir(folder)
        for old in folder.glob(f"{PREFIX}*"):
            if old != final and not old.name.endswith(".tmp") and _step(old) < step:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_latest(folder: Path, rank: int) -> Checkpoint | None:
    """The newest committed checkpoint, or ``None``."""
    found = sorted(
        (p for p in folder.glob(f"{PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp")),
        key=_step,
    )
    if not found:
        return None
    latest = found[-1]
    state = torch.load(latest / "state.pt", map_location="cpu", weights_only=False)
    rng_file = latest / f"rng-{rank}.pt"
    rng = (
        torch.load(rng_file, map_location="cpu", weights_only=False) if rng_file.exists() else None
    )
    return Checkpoint(step=int(state["step"]), state=state, rng=rng)


def _step(path: Path) -> int:
    return int(path.name[len(PREFIX) :].split(".")[0])


def _write(path: Path, payload: Any) -> None:
    with path.open("wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
