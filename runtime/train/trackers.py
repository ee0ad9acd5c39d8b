"""Where a train's step records go besides ``metrics.jsonl``: the trackers of ``report_to``.

Each tracker receives every record as the loop writes it (every ``log_every`` steps), at its
step: every numeric field (the weighted loss, each loss term, every scheduled value, ``lr``,
``grad_norm``, ``tokens``, the data position, ``eval/...`` metrics when a record has them), and
``tokens_per_second`` derived from ``tokens`` and the step's ``seconds``. Booleans and texts
are left out, as TensorBoard leaves them out.

- ``tensorboard``: event files in the stage's progress folder (:class:`.train.metrics.Board`),
  copied with the trained model.
- ``wandb``: a W&B run in ``<workdir>/runs/<recipe>/trackers/<train>/`` (W&B's own ``wandb/``
  folder in it), **offline** unless ``WANDB_MODE`` is set (``wandb sync`` uploads it later).
- ``mlflow``: an MLflow run in the experiment ``tracker_project``, in the file store
  ``<workdir>/runs/<recipe>/trackers/<train>/mlruns`` unless ``MLFLOW_TRACKING_URI`` names
  another store (a server, a database).

Each tracker's configuration is the train's settings as the recipe gives them (``env()``
secrets by their variable's name, never their value). A resumed run opens a new tracker run
that starts at the resumed step. Only the main process reports. A tracker whose package is not
installed stops the train before its first step with the ``pip`` line that installs it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RunError

EXTRA = "kdlang[trackers]"
"""The pip extra that installs every tracker's package."""
PACKAGES = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow-skinny")}
"""Tracker → (module imported, package on the index)."""


@dataclass
class Tracking:
    """What the trackers of one train need: ``report_to``, the project (W&B project, MLflow
    experiment), the run's name, the folder they write in, and the configuration logged."""

    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    project: str = "kdlang"
    name: str = "train"
    folder: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)


def missing_packages(report_to: list[str]) -> list[str]:
    """The trackers of ``report_to`` whose package cannot be imported here."""
    return [
        name
        for name in report_to
        if name in PACKAGES and importlib.util.find_spec(PACKAGES[name][0]) is None
    ]


def require(report_to: list[str]) -> None:
    """:class:`RunError` naming the pip line when a tracker's package is missing."""
    missing = missing_packages(report_to)
    if missing:
        packages = " ".join(PACKAGES[name][1] for name in missing)
        raise RunError(
            f"report_to lists {', '.join(f'`{m}`' for m in missing)}, which is not installed: "
            f'pip install "{EXTRA}" (or pip install {packages})'
        )


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a record a tracker logs (``step`` aside), with tokens/s."""
    out = {
        key: float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
    }
    seconds, tokens = record.get("seconds"), record.get("tokens")
    if isinstance(seconds, int | float) and seconds > 0 and isinstance(tokens, int | float):
        out["tokens_per_second"] = float(tokens) / float(seconds)
    return out


class Trackers:
    """Every tracker of a train as one: ``add(record)`` and ``close()``."""

    def __init__(self, members: list):
        self.members = members

    def add(self, record: dict[str, Any]) -> None:
        for member in self.members:
            member.add(record)

    def close(self) -> None:
        for member in self.members:
            member.close()


def open_trackers(tracking: Tracking | None, folder: Path, *, start: int, write: bool) -> Trackers:
    """The trackers of a train starting (or resuming) at step ``start``; ``folder`` is the
    stage's progress folder (TensorBoard's events). Nothing is opened when ``write`` is false
    (a process other than the main one)."""
    from .metrics import Board

    tracking = tracking or Tracking()
    if not write:
        return Trackers([])
    require(tracking.report_to)
    members: list = []
    kinds = {"wandb": WandbTracker, "mlflow": MlflowTracker}
    for name in tracking.report_to:
        try:
            if name == "tensorboard":
                members.append(Board(folder / "tensorboard", start=start, write=True))
            else:
                members.append(kinds[name](tracking, start))
        except Exception as error:  # a tracker's own settings (WANDB_MODE, a tracking URI...)
            Trackers(members).close()
            raise RunError(f"cannot start the {name} tracker: {error}") from None
    return Trackers(members)


def _where(tracking: Tracking) -> Path:
    assert tracking.folder is not None  # set for every train the executor runs
    tracking.folder.mkdir(parents=True, exist_ok=True)
    return tracking.folder


class WandbTracker:
    """A W&B run, offline unless ``WANDB_MODE`` is set; nothing printed on the terminal."""

    def __init__(self, tracking: Tracking, start: int):
        import wandb

        settings = wandb.Settings(
            console="off", silent=True, save_code=False, disable_git=True, x_disable_stats=True
        )
        self.run = wandb.init(
            project=tracking.project,
            name=tracking.name if not start else f"{tracking.name} (from step {start})",
            dir=str(_where(tracking)),
            config=tracking.config,
            mode=None if os.environ.get("WANDB_MODE") else "offline",
            settings=settings,
            reinit="create_new",
        )

    def add(self, record: dict[str, Any]) -> None:
        self.run.log(scalars(record), step=int(record["step"]))

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    """An MLflow run, in a file store under the run folder unless ``MLFLOW_TRACKING_URI`` is
    set. Talks to the store through ``MlflowClient`` (no global active run)."""

    def __init__(self, tracking: Tracking, start: int):
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow keeps its file store for local use behind this switch
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (_where(tracking) / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(tracking.project)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(tracking.project)
        )
        name = tracking.name if not start else f"{tracking.name} (from step {start})"
        self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
        from mlflow.entities import Param

        params = [Param(key, _param(value)) for key, value in sorted(tracking.config.items())]
        for first in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[first : first + 100])

    def add(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step = int(record["step"])
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in scalars(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:6000]  # MLflow's longest parameter value


def tracking_for(train, ctx) -> Tracking:
    """The :class:`Tracking` of the train node ``train`` run as ``ctx.node``: its trackers'
    folder is ``<workdir>/runs/<recipe>/trackers/<train>``. Checks first that every tracker's
    package is installed."""
    from kdlang.plan.store import safe_name

    require(train.report_to)
    title = ctx.program.recipe.title
    return Tracking(
        report_to=list(train.report_to),
        project=train.tracker_project or safe_name(title),  # W&B refuses `/`, `:`, `#`...
        name=ctx.node.name,
        folder=ctx.output_path("runs") / safe_name(title) / "trackers" / safe_name(ctx.node.name),
        config=settings_config(train),
    )


def settings_config(train) -> dict[str, Any]:
    """The train's settings as the recipe gives them, JSON-ready, for a tracker's
    configuration: references by name, ``env()`` by the variable's name."""
    dumped = train.model_dump(mode="json", exclude={"span", "spans"})
    given = set(train.model_fields_set) | {"losses"}
    out: dict[str, Any] = {}
    for key, value in dumped.items():
        if key not in given:
            continue
        if isinstance(value, dict) and set(value) == {"name"}:
            value = value["name"]
        out[key] = value
    out["losses"] = [
        {k: v for k, v in line.items() if k not in ("span", "spans")} for line in dumped["losses"]
    ]
    return out
