"""The embedded quickstart runs end to end on the shipped demo assets (on tiny settings here;
the full run is the README's main command)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdlang.cli import app

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.kd"

TINY = [
    "questions.limit=24",
    "heldout.limit=16",
    "kd.max_steps=6",
    "sft.max_steps=6",
    "kd.batch=8",
    "sft.batch=8",
]


@pytest.mark.slow
def test_quickstart_runs_end_to_end_on_the_demo_assets(tmp_path):
    args = ["run", str(RECIPE), "--workdir", str(tmp_path), "--device", "cpu"]
    for override in TINY:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "runs" / "quickstart" / "report.json").read_text())
    statuses = {node["name"]: node["status"] for node in report["nodes"]}
    assert set(statuses.values()) == {"ran"}, statuses
    nodes = {node["name"]: node for node in report["nodes"]}
    assert nodes["questions"]["rows_out"] == 24
    assert nodes["answers"]["rows_out"] == 24  # one teacher sample per question
    assert 0 < nodes["correct"]["rows_out"] <= 24  # the teacher is good, not perfect
    evaluations = {e["name"]: e["metrics"]["exact_match"] for e in report["evaluations"]}
    assert set(evaluations) == {"teacher_accuracy", "student_before", "sft_accuracy", "kd_accuracy"}
    assert evaluations["teacher_accuracy"] >= 0.9  # greedy: the teacher knows the task
    assert evaluations["student_before"] <= 0.1  # a random student does not
    assert all(0.0 <= value <= 1.0 for value in evaluations.values())
    assert (tmp_path / "runs" / "quickstart" / "report.md").read_text().count("exact_match") == 1
    exported = tmp_path / "runs" / "quickstart" / "student"
    assert (exported / "config.json").is_file() and (exported / "README.md").is_file()
