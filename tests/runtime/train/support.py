"""Helpers of the training tests: IR nodes without a recipe, recipes run through the CLI, and
what a run leaves (artifacts, metrics)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from kdlang.cli import app
from kdlang.ir import losses as ls
from kdlang.ir import training as tr
from kdlang.ir.values import Ref, Schedule
from kdlang.syntax.span import Span

SPAN = Span("test.kd", 1, 1, 1, 2)


def loss(name: str, weight: float | Schedule = 1.0, **settings: Any):
    """An IR ``loss`` line, as lowering would make it."""
    return ls.LOSSES[name](name=name, weight=weight, span=SPAN, **settings)


def linear(start: float, end: float, over: int | None = None) -> Schedule:
    return Schedule(kind="linear", start=start, end=end, over=over)


def train_node(losses: list, **settings: Any) -> tr.Train:
    """An IR ``train`` node with the given settings (student/data names are placeholders)."""
    ref = Ref(name="x", span=SPAN)
    return tr.Train(span=SPAN, student=ref, data=ref, losses=losses, **settings)


def write_recipe(folder: Path, body: str, *, title: str = "t", seed: int = 7) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.kd"
    header = f'recipe "{title}" {{\n  seed = {seed}\n}}\n'
    path.write_text(header + textwrap.dedent(body), encoding="utf-8")
    return path


def models(pair) -> str:
    """``model`` declarations of the tiny teacher/student pair (one vocabulary)."""
    return f'model teacher = hf("{pair.teacher}")\nmodel student = hf("{pair.student}")\n'


def run_recipe(recipe: Path, *extra: str, expect: int = 0) -> dict[str, Any]:
    """``kdlang run RECIPE`` in this process (workdir: the recipe's folder, CPU); returns the
    run's report.json."""
    result = CliRunner().invoke(
        app, ["run", str(recipe), "--workdir", str(recipe.parent), "--device", "cpu", *extra]
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == expect, result.output
    (path,) = (recipe.parent / "runs").glob("*/report.json")
    return json.loads(path.read_text(encoding="utf-8"))


def node(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in report["nodes"] if n["name"] == name)


def artifact(report: dict[str, Any], name: str) -> Path:
    return Path(node(report, name)["output"])


def metrics(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    lines = (artifact(report, name) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]
