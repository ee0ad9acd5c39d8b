"""``kdlang run`` for tools and for people: ``--format json`` (the report as the only thing on
stdout), ``-q``/``-v``, filter rules named by their text in the report, and a hub id that
cannot be had failing in seconds with a message that says what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kdlang.runtime.stages.filter import MAX_RULE_TEXT, describe
from typer.testing import CliRunner

from kdlang.cli import app
from kdlang.syntax.span import Span

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

# Five rows; `keep len(q) > 3` drops "a"; the regex keeps rows starting with a or holding a b,
# dropping "x|y z"; exact dedup drops the second "abcdef". Two rows stay.
FILTERED = r"""recipe "habits" { seed = 3 }
dataset qs = inline([{q: "a"}, {q: "abcd"}, {q: "abcdef"}, {q: "abcdef"}, {q: "x|y z"}])
stage kept = filter(qs) {
  keep len(q) > 3
  keep   matches(q,   r"^a|b")   # the regex holds a `|`
  dedup q by exact
}
"""
EXPECTED_DROPS = {"keep len(q) > 3": 1, 'keep matches(q, r"^a|b")': 1, "dedup q by exact": 1}


def _recipe(folder: Path, text: str = FILTERED) -> Path:
    path = folder / "recipe.kd"
    path.write_text(text, encoding="utf-8")
    return path


def _run(recipe: Path, *extra: str):
    return runner.invoke(
        app, ["run", str(recipe), "--workdir", str(recipe.parent), "--device", "cpu", *extra]
    )


def _report(recipe: Path) -> dict:
    return json.loads((recipe.parent / "runs" / "habits" / "report.json").read_text("utf-8"))


def test_run_format_json_prints_the_report_alone_on_stdout(tmp_path):
    recipe = _recipe(tmp_path)
    result = _run(recipe, "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert document == _report(recipe)
    assert document["ok"] is True and document["recipe"] == "habits"
    kept = next(n for n in document["nodes"] if n["name"] == "kept")
    assert (kept["rows_in"], kept["rows_out"]) == (5, 2)
    assert "report: " in result.stderr and "kept (filter" in result.stderr


def test_run_format_json_of_a_faulty_recipe_prints_its_diagnostics(tmp_path):
    recipe = _recipe(tmp_path, FILTERED.replace("keep len(q) > 3", "keep len(nothing) > 3"))
    result = _run(recipe, "--format", "json")
    assert result.exit_code == 1
    found = json.loads(result.stdout)
    assert found and all(d["file"] == str(recipe) for d in found)
    assert {d["severity"] for d in found} == {"error"}


def test_run_rejects_an_unknown_format(tmp_path):
    result = _run(_recipe(tmp_path), "--format", "yaml")
    assert result.exit_code == 2
    assert "--format must be one of text, json" in result.stderr


def test_the_report_names_filter_rules_by_their_text(tmp_path):
    recipe = _recipe(tmp_path)
    assert _run(recipe).exit_code == 0
    kept = next(n for n in _report(recipe)["nodes"] if n["name"] == "kept")
    assert kept["dropped"] == EXPECTED_DROPS
    markdown = (tmp_path / "runs" / "habits" / "report.md").read_text(encoding="utf-8")
    row = next(line for line in markdown.splitlines() if line.startswith("| kept |"))
    # the `|` of the regex is escaped, so the table keeps its eight columns
    assert 'keep len(q) > 3: 1, keep matches(q, r"^a\\|b"): 1, dedup q by exact: 1' in row
    assert row.replace("\\|", "").count("|") == 9


def test_a_long_or_multi_line_rule_is_named_by_its_text_on_one_line():
    from kdlang.ir import selection as sel

    source = "stage s = filter(d) {\n  keep len(q) > 1\n    and len(q) < 9\n}\n"
    rule = sel.KeepRule.model_construct(span=Span("r.kd", 2, 3, 3, 19), condition=None)
    assert describe(rule, {"r.kd": source}) == "keep len(q) > 1 and len(q) < 9"
    long = "keep " + " or ".join(f"len(q) == {n}" for n in range(20))
    rule = sel.KeepRule.model_construct(span=Span("r.kd", 1, 1, 1, len(long) + 1), condition=None)
    text = describe(rule, {"r.kd": long})
    assert len(text) == MAX_RULE_TEXT and text == long[: MAX_RULE_TEXT - 1] + "…"
    assert describe(rule, {}) == "keep (line 1)"  # no source: its line


def test_run_quiet_and_verbose(tmp_path):
    recipe = _recipe(tmp_path)
    quiet = _run(recipe, "-q")
    assert quiet.exit_code == 0
    assert "kept" not in quiet.stderr and "qs" not in quiet.stderr
    assert quiet.stderr.strip().startswith("report: ")
    verbose = _run(recipe, "-v")
    assert verbose.exit_code == 0
    for node in _report(recipe)["nodes"]:
        assert f"fingerprint {node['fingerprint']}" in verbose.stderr
        assert f"output {node['output']}" in verbose.stderr


# -- a hub id that cannot be had -------------------------------------------------------------

HUB_RECIPE = textwrap.dedent(
    """\
    recipe "offline" { seed = 1 }
    model teacher = hf("kdlang-test/not-cached-anywhere")
    dataset qs = inline([{question: "one"}])
    prompt ask = "Q: {{ question }}"
    stage answers = label(qs) { teacher = teacher  prompt = ask  max_tokens = 4 }
    """
)


def _environment(hf_home: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    return {**env, "HF_HOME": str(hf_home), **settings}


def _run_offline(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    recipe = tmp_path / "recipe.kd"
    recipe.write_text(HUB_RECIPE, encoding="utf-8")
    command = [sys.executable, "-m", "kdlang", "run", str(recipe), "--workdir", str(tmp_path)]
    start = time.monotonic()
    result = subprocess.run(
        [*command, "--device", "cpu"], capture_output=True, text=True, env=env, timeout=60
    )
    return result, time.monotonic() - start


def test_an_uncached_hub_id_with_hf_hub_offline_fails_in_seconds(tmp_path):
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    result, seconds = _run_offline(tmp_path, _environment(hf_home, HF_HUB_OFFLINE="1"))
    assert result.returncode == 1
    assert seconds < 20
    message = " ".join(result.stderr.split())
    assert "cannot load model `teacher`" in message
    assert "'kdlang-test/not-cached-anywhere' is not in the local Hugging Face cache" in message
    assert str(hf_home / "hub") in message
    assert "HF_HUB_OFFLINE is set" in message and 'hf("path/to/model")' in message
    assert "Traceback" not in result.stderr


def test_an_uncached_hub_id_with_the_hub_out_of_reach_fails_in_seconds(tmp_path):
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    env = _environment(hf_home, HF_ENDPOINT="http://127.0.0.1:9")
    result, seconds = _run_offline(tmp_path, env)
    assert result.returncode == 1
    assert seconds < 20
    message = " ".join(result.stderr.split())
    assert "'kdlang-test/not-cached-anywhere' is not in the local Hugging Face cache" in message
    assert "the hub (http://127.0.0.1:9) cannot be reached" in message
    assert "HF_HUB_OFFLINE=1" in message and 'hf("path/to/model")' in message
    assert "Traceback" not in result.stderr


def _hub_unavailable(hf_home: Path, hub_id: str, **settings: str) -> str:
    code = f"from kdlang.runtime.hub import hub_unavailable\nprint(hub_unavailable({hub_id!r}))\n"
    env = _environment(hf_home, **settings)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_cached_hub_id_is_available_offline_and_out_of_reach(tmp_path):
    """A model in the cache's layout (``models--ORG--NAME``, ``refs/main`` naming a snapshot
    that holds ``config.json``) needs no network."""
    hf_home = tmp_path / "hf"
    repo = hf_home / "hub" / "models--kdlang-test--cached"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}", encoding="utf-8")
    for settings in ({"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}):
        assert _hub_unavailable(hf_home, "kdlang-test/cached", **settings) == "None"
        missing = _hub_unavailable(hf_home, "kdlang-test/other", **settings)
        assert "'kdlang-test/other' is not in the local Hugging Face cache" in missing


def test_only_loads_that_need_the_hub_are_checked():
    """A train's student is loaded from the hub; an ``evaluate`` of that train loads the
    trained student from its artifact, so an uncached base model stops the first only."""
    from types import SimpleNamespace

    from huggingface_hub import constants
    from kdlang.runtime.context import StageContext
    from kdlang.runtime.errors import RunError

    if not constants.HF_HUB_OFFLINE:
        pytest.skip("needs HF_HUB_OFFLINE (set by the test configuration) to ask no network")
    student = SimpleNamespace(revision=None)
    recipe = SimpleNamespace(trains={"kd": object()}, models={"student": student})

    def context(op: str, stage) -> SimpleNamespace:
        return SimpleNamespace(
            node=SimpleNamespace(op=op, node=stage),
            program=SimpleNamespace(recipe=recipe),
            hub_id=lambda model: "kdlang-test/never-cached",
        )

    evaluate = context("evaluate", SimpleNamespace(model=SimpleNamespace(name="kd")))
    StageContext._require_hub(evaluate, student)  # type: ignore[arg-type]
    train = context("train", SimpleNamespace())
    with pytest.raises(
        RunError, match="cannot load model `student`: the hub id 'kdlang-test/never-cached'"
    ):
        StageContext._require_hub(train, student)  # type: ignore[arg-type]
    declared = context("evaluate", SimpleNamespace(model=SimpleNamespace(name="student")))
    with pytest.raises(RunError, match="HF_HUB_OFFLINE is set"):
        StageContext._require_hub(declared, student)  # type: ignore[arg-type]
