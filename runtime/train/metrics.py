"""What training records: one JSON line per optimizer step, TensorBoard scalars, loss curves.

``metrics.jsonl`` lives in the stage's progress folder while training runs. A resumed run first
cuts it back to the steps before its checkpoint (the steps after it are run again), so in the
end the file holds every step exactly once; the artifact gets a copy. Each record has ``step``,
``loss`` (the weighted total), one entry per ``loss`` line (its unweighted step mean, by
``LossLine.key``), every scheduled value as the step settled it (``weight/<key>``,
``temperature/<key>``, ..., ``on_policy``: ``StepLosses.metrics``), ``lr``,
``grad_norm``, ``tokens``, ``on_policy_batch`` and the data position; a step evaluated on dev
rows (``eval_every``) also has ``eval/loss`` and ``eval/<key>`` (:mod:`.evaluation`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"
TIMINGS = "timings.jsonl"
"""Per step, what the machine and the clock decide (:data:`TIMING_KEYS`): kept out of
``metrics.jsonl``, so two identical runs write identical metrics and the artifact's content hash
(which does not cover this file) is the same."""
TIMING_KEYS = ("seconds", "gpu_memory_gib")
PICTURE = "loss_curves.png"
EVAL = "eval/"
"""The prefix of an evaluation's values in its step's record (:mod:`.evaluation`)."""


class MetricsLog:
    """Append-only JSON lines, synced; ``start`` drops the records of steps ``>= start``.

    ``records`` are whole (timings in); the file at ``path`` gets each record less its
    :data:`TIMING_KEYS`, and :data:`TIMINGS` beside it gets ``step`` and those."""

    def __init__(self, path: Path, *, start: int, write: bool = True):
        self.path = path
        self.timings = path.with_name(TIMINGS)
        self.write = write
        self.records = [r for r in read_metrics(path) if r["step"] < start]
        self._handles: list = []
        if write:
            for target, records in ((path, self.records), (self.timings, self.records)):
                tmp = target.with_suffix(".tmp")
                with tmp.open("w", encoding="utf-8") as out:
                    out.writelines(self._lines(target, records))
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
            self._handles = [
                path.open("a", encoding="utf-8"),
                self.timings.open("a", encoding="utf-8"),
            ]

    def _lines(self, target: Path, records: list[dict[str, Any]]) -> list[str]:
        if target == self.timings:
            parts = [{k: r[k] for k in ("step", *TIMING_KEYS) if k in r} for r in records]
        else:
            parts = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]
        return [json.dumps(part, sort_keys=True) + "\n" for part in parts]

    def extend(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` and sync them to disk (one sync per file for the lot)."""
        self.records.extend(records)
        for handle, target in zip(self._handles, (self.path, self.timings), strict=False):
            handle.writelines(self._lines(target, records))
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
        self._handles = []


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics file, with the timings of :data:`TIMINGS` beside it merged in;
    a last line cut short by a crash is ignored (in either file)."""
    timings = {r["step"]: r for r in _read_lines(path.with_name(TIMINGS))}
    return [{**timings.get(r["step"], {}), **r} for r in _read_lines(path)]


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.endswith("\n") and line.strip():
            records.append(json.loads(line))
    return records


class Board:
    """TensorBoard scalars of every numeric field, per step. ``start``: events a killed run
    wrote at steps ``>= start`` are purged, so the curves show each step once."""

    def __init__(self, folder: Path, *, start: int, write: bool = True):
        self.writer = None
        if write:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(folder), purge_step=start if start else None)

    def add(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """An exponential moving average with TensorBoard's debiasing: point i is
    ``Σ_j w^(i-j) (1-w) v_j / (1 - w^(i+1))``, so the first points are not pulled to 0."""
    out, running = [], 0.0
    for i, value in enumerate(values):
        running = weight * running + (1 - weight) * value
        out.append(running / (1 - weight ** (i + 1)))
    return out


def schedule_lines(records: list[dict[str, Any]]) -> tuple[list[str], dict[str, float]]:
    """The scheduled values worth a curve (they change over the run) and the constant ones
    (key -> value, said in the legend instead of drawn on top of each other). A value that is
    never recorded is left out."""
    keys = sorted(
        {
            k
            for r in records
            for k in r
            if ("/" in k and not k.startswith(EVAL)) or k in ("on_policy", "replay_threshold")
        }
    )
    moving, constant = [], {}
    for key in keys:
        seen = {r[key] for r in records if r.get(key) is not None}
        if len(seen) > 1:
            moving.append(key)
        elif seen:
            constant[key] = seen.pop()
    return moving, constant


def plot_curves(records: list[dict[str, Any]], keys: list[str], path: Path) -> None:
    """A PNG with two panels over the steps: each loss line (``keys``) and the weighted total
    (log scale when all positive), smoothed (:func:`smoothed`) over a faint raw trace; and the
    scheduled values that change, with the learning-rate factor, the constant ones named in the
    legend (:func:`schedule_lines`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    figure, (losses, schedules) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for key in [*keys, "loss"]:
        points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        width = 2.0 if key == "loss" else 1.2
        (line,) = losses.plot(xs, ys, linewidth=width * 0.6, alpha=0.25)
        losses.plot(
            xs,
            smoothed(list(ys)) if len(ys) > 10 else ys,
            color=line.get_color(),
            label="total (weighted)" if key == "loss" else key,
            linewidth=width,
        )
        dev = [(r["step"], r[EVAL + key]) for r in records if r.get(EVAL + key) is not None]
        if dev:  # evaluations on the dev rows: points in the curve's colour
            xs, ys = zip(*dev, strict=True)
            label = "total (weighted)" if key == "loss" else key
            losses.plot(xs, ys, "o--", color=line.get_color(), label=f"{label}, dev", markersize=4)
    values = [r.get(k) for r in records for k in ("loss", EVAL + "loss") if k in r]
    if values and all(v is not None and v > 0 for v in values):
        losses.set_yscale("log")
    losses.set_ylabel("loss")
    losses.legend(fontsize=8)
    losses.grid(alpha=0.3)
    peak = max((r.get("lr", 0.0) for r in records), default=0.0) or 1.0
    moving, constant = schedule_lines(records)
    for key in moving:
        schedules.plot(steps, [r.get(key) for r in records], label=key)
    schedules.plot(steps, [r.get("lr", 0.0) / peak for r in records], "--", label="lr / peak")
    for key, value in constant.items():  # an empty line: a legend entry, nothing drawn
        schedules.plot([], [], " ", label=f"{key}: constant {value:g}")
    schedules.set_xlabel("optimizer step")
    schedules.set_ylabel("scheduled value")
    schedules.legend(fontsize=8)
    schedules.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
