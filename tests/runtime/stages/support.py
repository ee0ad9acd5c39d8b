"""Helpers of the runtime tests: write a recipe, run it through the CLI, read what it made.

Recipes are written into a test's folder; models are referenced by absolute path (the tiny
fixtures) and an ``openai`` model reads its server from ``env("KD_TEST_BASE_URL")``, so the
fingerprint does not depend on the server's port.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from kdlang.runtime.data import read_rows
from typer.testing import CliRunner

from kdlang.cli import app

BASE_URL_ENV = "KD_TEST_BASE_URL"


def api_model(name: str = "api", *, concurrency: int = 4, **settings: Any) -> str:
    """A ``model`` declaration of an openai teacher served by the local test server."""
    extra = "".join(f", {key} = {value}" for key, value in settings.items())
    return (
        f'model {name} = openai("scripted", base_url = env("{BASE_URL_ENV}"), '
        f"concurrency = {concurrency}{extra})"
    )


def api_label_body(rows: int, *, concurrency: int) -> str:
    """A recipe body: ``rows`` inline questions, answered by the test server's teacher in the
    stage ``answers`` (sampled, so that a repeated request would show in the output)."""
    questions = ", ".join(f'{{question: "question {i:02d}"}}' for i in range(rows))
    return (
        f"dataset qs = inline([{questions}])\n"
        + api_model("api", concurrency=concurrency)
        + '\nprompt ask = "Answer: {{ question }}"\n'
        + "stage answers = label(qs) { teacher = api  prompt = ask  temperature = 0.7 }\n"
    )


def write_recipe(folder: Path, body: str, *, title: str = "t", seed: int = 7) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.kd"
    header = f'recipe "{title}" {{\n  seed = {seed}\n}}\n'
    path.write_text(header + textwrap.dedent(body), encoding="utf-8")
    return path


def cli(*args: str):
    """``kdlang ARGS`` in this process; returns typer's result (exit_code, output, ...)."""
    return CliRunner().invoke(app, list(args))


def run_recipe(recipe: Path, *extra: str, expect: int = 0) -> dict[str, Any]:
    """``kdlang run RECIPE --workdir <its folder> --device cpu``; returns report.json."""
    result = cli("run", str(recipe), "--workdir", str(recipe.parent), "--device", "cpu", *extra)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == expect, result.output
    return report(recipe)


def report(recipe: Path) -> dict[str, Any]:
    folder = recipe.parent / "runs"
    (path,) = folder.glob("*/report.json")
    return json.loads(path.read_text(encoding="utf-8"))


def node(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in document["nodes"] if n["name"] == name)


def rows(document: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return read_rows(Path(node(document, name)["output"]))


def statuses(document: dict[str, Any]) -> dict[str, str]:
    return {n["name"]: n["status"] for n in document["nodes"]}


def plan(recipe: Path) -> dict[str, dict[str, Any]]:
    """``kdlang plan --format json`` against the recipe's cache, by node name."""
    result = cli(
        "plan", str(recipe), "--format", "json", "--cache", str(recipe.parent / ".kdcache")
    )
    assert result.exit_code == 0, result.output
    return {n["name"]: n for n in json.loads(result.stdout)["nodes"]}


def row_seed(recipe_seed: int, op: str, index: int, salt: str = "") -> int:
    """The seed a stage of ``op`` gives its request ``index`` (``StageContext.row_seed``), so a
    scripted server can answer request by request."""
    from types import SimpleNamespace

    from kdlang.runtime.context import StageContext

    holder = SimpleNamespace(seed=recipe_seed, node=SimpleNamespace(op=op))
    return StageContext.row_seed(holder, index, salt)  # type: ignore[arg-type]
