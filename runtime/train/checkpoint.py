"""Training checkpoints in a stage's progress folder, committed atomically.

A checkpoint is a folder ``ckpt-<step>`` holding ``state.pt`` (the step to run next, the data
position, the number of processes that wrote it), ``weights.pt`` (the trainable weights and the
optimizer state, both full and keyed by parameter name) and one ``rng-<rank>.pt`` per process
(Python, NumPy, torch CPU and CUDA generator states). It is written under
``ckpt-<step>.tmp``, synced, and renamed into place by rank 0 once every rank has written its
part; only then are older ones removed (all but the newest ``save_total_limit``, by default
one). A crash at any moment leaves the previous checkpoint
intact, and a half-written ``.tmp`` folder is never read.

**Any number of processes, either strategy.** The weights and optimizer state are full (under
``fsdp`` gathered to rank 0 first) and named, so a checkpoint written by N processes loads under
M, with ``ddp`` or ``fsdp``. The data order is a function of the step (every step reads the same
rows, shared out over however many processes there are). The generators are restored per rank
when the checkpoint was written by as many processes as now; when the count changed, each rank
re-seeds its generators from (seed, step, rank) (:func:`seed_rng`). Only what draws from those
generators — dropout — can then differ from an uninterrupted run; without dropout the trajectory
is the same (on-policy draws and samples are seeded by the step, not by the generators).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

PREFIX = "ckpt-"


@dataclass
class Checkpoint:
    folder: Path
    step: int
    state: dict[str, Any]
    rng: dict[str, Any] | None
    """This rank's generator states, when the checkpoint was written by as many processes as
    now (else ``None``: re-seed with :func:`seed_rng`)."""

    def weights(self) -> dict[str, Any]:
        """``{"trainable": {name: tensor}, "optimizer": {...}}`` (loaded on demand: under
        ``fsdp`` only rank 0 reads it)."""
        return torch.load(self.folder / "weights.pt", map_location="cpu", weights_only=False)


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


def seed_rng(seed: int, step: int, rank: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from (seed, step, rank): the generators of a
    rank resuming at ``step`` under another number of processes than the checkpoint's."""
    text = f"kdlang-rng:{seed}:{step}:{rank}".encode()
    value = int.from_bytes(hashlib.sha256(text).digest()[:4], "big")
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def save(
    folder: Path,
    step: int,
    state: dict[str, Any],
    weights: dict[str, Any] | None,
    dist,
    keep: int = 1,
) -> Path:
    """Commit checkpoint ``step`` (the next step to run). ``state`` and ``weights`` matter on
    rank 0 only; every rank writes its random-generator states. Collective: all ranks call it.
    Of the committed checkpoints, the newest ``keep`` stay (``save_total_limit``)."""
    final = folder / f"{PREFIX}{step:08d}"
    tmp = folder / f"{PREFIX}{step:08d}.tmp"
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    _write(tmp / f"rng-{dist.rank}.pt", rng_state())
    if dist.is_main:
        _write(tmp / "weights.pt", weights)
        _write(tmp / "state.pt", {"step": step, "world": dist.world, **state})
    dist.barrier()
    if dist.is_main:
        _fsync_dir(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        _fsync_dir(folder)
        for old in committed(folder)[:-keep]:
            if _step(old) < step:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_latest(folder: Path, rank: int, world: int = 1) -> Checkpoint | None:
    """The newest committed checkpoint, or ``None``."""
    found = committed(folder)
    if not found:
        return None
    latest = found[-1]
    state = torch.load(latest / "state.pt", map_location="cpu", weights_only=False)
    rng_file = latest / f"rng-{rank}.pt"
    rng = None
    if state.get("world") == world and rng_file.exists():
        rng = torch.load(rng_file, map_location="cpu", weights_only=False)
    return Checkpoint(folder=latest, step=int(state["step"]), state=state, rng=rng)


def keep_in(folder: Path, out: Path) -> list[str]:
    """Copy the committed checkpoints of the progress folder ``folder`` (the newest
    ``save_total_limit``) to ``out/checkpoints/``, where they outlive the run: the trained
    model's artifact. Returns their names."""
    found = committed(folder)
    for checkpoint in found:
        shutil.copytree(checkpoint, out / "checkpoints" / checkpoint.name)
    return [p.name for p in found]


def committed(folder: Path) -> list[Path]:
    """The committed checkpoints in ``folder``, oldest first: folders named ``ckpt-<8 digits>``
    holding a ``state.pt``. Nothing else there is ever removed."""
    found = [
        p
        for p in folder.glob(f"{PREFIX}*")
        if _NAME.fullmatch(p.name) and p.is_dir() and (p / "state.pt").is_file()
    ]
    return sorted(found, key=_step)


_NAME = re.compile(re.escape(PREFIX) + r"[0-9]{8}")


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
