"""``report_to``: W&B (offline) and MLflow (a local file store) receive every step's record, as
``metrics.jsonl`` holds it; a tracker whose package is missing stops the run with the pip line."""

from __future__ import annotations

import glob
import json
import struct
from pathlib import Path

import pytest
from kdlang.runtime.train.metrics import read_metrics

from tests.runtime.train.support import (
    artifact,
    metrics,
    models,
    node,
    run_recipe,
    write_recipe,
)

pytestmark = pytest.mark.timeout(300)

BODY = """
dataset rows = inline([{q: "What is 1 plus 2?", a: "3"}, {q: "Say hi.", a: "Hi!"}, {q: "2+2?", a: "4"}])
prompt ask = "Q: {{ q }}\\nA:"
train t {
  student = student  data = rows  prompt = ask  target = a  max_steps = 6  batch = 2
  log_every = 2  lr = 1e-3  lr_schedule = linear(warmup = 2)
  eval_data = rows  eval_every = 3
  report_to = REPORT
  tracker_project = "kd-tests"
  loss sft weight linear(1.0 -> 0.5)
}
"""

NUMERIC_SKIPPED = {"step", "on_policy_batch"}  # the step is the x axis; booleans are left out


@pytest.fixture
def tracker_env(tmp_path, monkeypatch):
    for name in ("WANDB_MODE", "MLFLOW_TRACKING_URI", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")


def body(report_to: str) -> str:
    return BODY.replace("REPORT", report_to)


def expected(records: list[dict]) -> dict[int, dict[str, float]]:
    """What a tracker must have at each step: every numeric field of metrics.jsonl."""
    return {
        r["step"]: {
            k: float(v)
            for k, v in r.items()
            if k not in NUMERIC_SKIPPED and isinstance(v, int | float) and not isinstance(v, bool)
        }
        for r in records
    }


def wandb_history(run_file: Path) -> dict[int, dict[str, float]]:
    """The ``history`` records of a W&B offline run file: a LevelDB-style log (32 KiB blocks,
    7-byte record headers: crc32, length, type) of protobuf ``Record`` messages after a 7-byte
    file header."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, raw = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the rest of a block too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            raw.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            raw.append(pending + chunk)
    history: dict[int, dict[str, float]] = {}
    for message in raw:
        record = pb.Record()
        record.ParseFromString(message)
        if record.WhichOneof("record_type") != "history":
            continue
        items = {
            (item.key or "/".join(item.nested_key)): json.loads(item.value_json)
            for item in record.history.item
        }
        step = int(items["_step"])
        history[step] = {k: v for k, v in items.items() if not k.startswith("_")}
    return history


@pytest.mark.slow  # W&B's service takes seconds to start
def test_wandb_and_mlflow_receive_every_record_of_metrics_jsonl(tmp_path, tiny_pair, tracker_env):
    recipe = write_recipe(tmp_path, models(tiny_pair) + body("[tensorboard, wandb, mlflow]"))
    report = run_recipe(recipe)
    # metrics.jsonl with the step times of timings.jsonl beside it
    records = read_metrics(artifact(report, "t") / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(6))
    want = expected(records)
    # the scheduled values and the learning rate are among them
    assert {"loss", "sft", "weight/sft", "lr", "grad_norm", "tokens"} <= set(want[0])
    assert (artifact(report, "t") / "tensorboard").is_dir()

    folder = tmp_path / "runs" / "t" / "trackers" / "t"
    (run_file,) = glob.glob(str(folder / "wandb" / "offline-run-*" / "run-*.wandb"))
    logged = wandb_history(Path(run_file))
    assert sorted(logged) == list(range(6))
    for step, values in want.items():
        got = logged[step]
        assert got.pop("tokens_per_second") > 0
        assert got == pytest.approx(values, rel=1e-12), step

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(folder / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("kd-tests")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "t" and run.info.status == "FINISHED"
    for key in want[0]:
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == [(s, pytest.approx(want[s][key], rel=1e-12)) for s in range(6)], key
    # evaluation during training: the dev loss where the record has it (after steps 3 and 6)
    evaluated = [(r["step"], r["eval/loss"]) for r in records if "eval/loss" in r]
    assert [step for step, _ in evaluated] == [2, 5]
    history = client.get_metric_history(run.info.run_id, "eval/loss")
    assert sorted((m.step, m.value) for m in history) == evaluated
    assert all("eval/loss" in logged[step] for step, _ in evaluated)
    seconds = {r["step"]: r["seconds"] for r in records}
    throughput = client.get_metric_history(run.info.run_id, "tokens_per_second")
    for point in throughput:
        assert point.value == pytest.approx(records[point.step]["tokens"] / seconds[point.step])
    params = run.data.params
    assert (
        params["max_steps"] == "6" and params["report_to"] == '["tensorboard", "wandb", "mlflow"]'
    )
    assert json.loads(params["losses"])[0]["name"] == "sft"


def test_no_tracker_writes_no_tensorboard_events(tmp_path, tiny_pair, tracker_env):
    recipe = write_recipe(tmp_path, models(tiny_pair) + body("[]").replace("tracker_project", "#"))
    report = run_recipe(recipe)
    assert [r["step"] for r in metrics(report, "t")] == list(range(6))
    assert not (artifact(report, "t") / "tensorboard").exists()
    assert not (tmp_path / "runs" / "t" / "trackers").exists()


def test_a_missing_tracker_package_names_the_pip_extra(tmp_path, tiny_pair, monkeypatch):
    import importlib.util

    from kdlang.runtime.train import trackers

    real = importlib.util.find_spec
    monkeypatch.setattr(
        trackers.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "wandb" else real(name, *a),
    )
    recipe = write_recipe(tmp_path, models(tiny_pair) + body("[wandb]"))
    report = run_recipe(recipe, expect=1)
    failed = node(report, "t")
    assert failed["status"] == "failed"
    assert failed["error"] == (
        'report_to lists `wandb`, which is not installed: pip install "kdlang[trackers]" '
        "(or pip install wandb)"
    )
    assert not (tmp_path / "runs" / "t" / "trackers").exists()
    # the terminal shows the message as it is (text, not markup: the brackets stay)
    from tests.runtime.stages.support import cli

    shown = cli("run", str(recipe), "--workdir", str(tmp_path), "--device", "cpu")
    assert shown.exit_code == 1
    assert 'pip install "kdlang[trackers]" (or pip install wandb)' in " ".join(shown.output.split())


def check_codes(recipe: Path) -> list[tuple[str, str, int]]:
    """``(code, severity, line)`` of what ``kdlang check`` says about a recipe."""
    from typer.testing import CliRunner

    from kdlang.cli import app

    result = CliRunner().invoke(app, ["check", "--format", "json", str(recipe)])
    found: list[tuple[str, str, int]] = []

    def walk(value) -> None:
        if isinstance(value, dict):
            if "code" in value and "severity" in value:
                found.append((value["code"], value["severity"], value["line"]))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(result.stdout))
    return found


def test_check_says_when_a_tracker_is_not_installed_or_a_project_unused(
    tmp_path, tiny_pair, monkeypatch
):
    import importlib.util

    recipe = write_recipe(tmp_path / "a", models(tiny_pair) + body("[tensorboard]"))
    (project_line,) = [
        n for n, line in enumerate(recipe.read_text().splitlines(), 1) if "tracker_project" in line
    ]
    assert check_codes(recipe) == [("KD0360", "error", project_line)]

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    recipe = write_recipe(tmp_path / "b", models(tiny_pair) + body("[wandb, mlflow]"))
    (report_line,) = [
        n for n, line in enumerate(recipe.read_text().splitlines(), 1) if "report_to" in line
    ]
    assert check_codes(recipe) == [("KD0361", "warning", report_line)]
