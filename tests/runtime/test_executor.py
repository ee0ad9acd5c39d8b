"""``kdlang run``: the executor over the plan, its options, caching across runs, the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.fixtures.openai_server import FakeOpenAIServer, Fault, ScriptedModel
from tests.runtime.stages.support import (
    BASE_URL_ENV,
    api_model,
    cli,
    node,
    plan,
    report,
    rows,
    run_recipe,
    statuses,
    write_recipe,
)

pytestmark = pytest.mark.timeout(90)

PIPELINE = (
    'dataset qs = inline([{question: "one"}, {question: "two"}])\n'
    + api_model("api")
    + "\n"
    + api_model("referee", max_retries=0)
    + '''
prompt solve = """Q: {{ question }}
A:"""
prompt rubric = "Rate: {{ answer }}"
stage answers = label(qs) {
  teacher = api  prompt = solve  samples = 3  temperature = 0.7  max_tokens = 16  output = answer
}
stage clean = filter(answers) { keep len(answer) > 0 }
stage scored = judge(clean) { judge = referee  prompt = rubric }
stage prefs = pairs(scored) { group = question  response = answer }
'''
)
NAMES = ["qs", "answers", "clean", "scored", "prefs"]


def respond(prompt: str, seed: int | None) -> str:
    """Answers are ``answer <seed>``; an answer's score is 1 + its seed's last digit."""
    if prompt.startswith("Rate: "):
        return f"Score: {1 + int(prompt.split()[-1]) % 10}"
    return f"answer {seed}"


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer(ScriptedModel(respond)) as running:
        monkeypatch.setenv(BASE_URL_ENV, running.url)
        yield running


def test_a_run_reports_every_node_with_rows_time_usage_and_output(tmp_path, server):
    recipe = write_recipe(tmp_path, PIPELINE)
    document = run_recipe(recipe)
    assert document["ok"] is True and document["seed"] == 7
    assert statuses(document) == dict.fromkeys(NAMES, "ran")
    counts = {n["name"]: (n["rows_in"], n["rows_out"]) for n in document["nodes"]}
    scores = [r["score"] for r in rows(document, "scored")]
    assert counts["qs"] == (2, 2) and counts["answers"] == (2, 6) and counts["clean"] == (6, 6)
    assert counts["scored"] == (6, 6) and all(1 <= s <= 10 for s in scores)
    assert counts["prefs"] == (6, len(rows(document, "prefs")))
    label = node(document, "answers")["teacher"]
    assert label["requests"] == 2 and label["calls"] == 2 and label["retries"] == 0
    assert label["completion_tokens"] == 6 * 2  # "answer <seed>": two words per sample
    assert label["prompt_tokens"] > 0
    assert node(document, "scored")["teacher"]["requests"] == 6 == server.requests - 2
    for entry in document["nodes"]:
        assert entry["seconds"] >= 0 and entry["error"] is None
        manifest = json.loads((Path(entry["output"]) / "manifest.json").read_text())
        assert manifest["fingerprint"] == entry["fingerprint"] == Path(entry["output"]).name
        assert manifest["name"] == entry["name"] and manifest["rows"] == entry["rows_out"]
    markdown = (tmp_path / "runs" / "t" / "report.md").read_text()
    assert "| answers | label | ran | 2 | 6 |" in markdown
    assert re.search(
        r"\| scored \| judge \| ran \| 6 \| 6 \| [\d.]+ \| requests 6, calls 6", markdown
    )
    assert f"- `prefs`: {node(document, 'prefs')['output']}" in markdown


def test_an_unchanged_recipe_runs_nothing_and_a_prompt_change_reruns_what_it_affects(
    tmp_path, server
):
    recipe = write_recipe(tmp_path, PIPELINE)
    first = run_recipe(recipe)
    sent = server.requests
    assert {n["status"] for n in plan(recipe).values()} == {"cached"}
    second = run_recipe(recipe)
    assert statuses(second) == dict.fromkeys(NAMES, "cached")
    assert server.requests == sent
    assert [node(second, n)["output"] for n in NAMES] == [node(first, n)["output"] for n in NAMES]
    assert node(second, "answers")["teacher"] == node(first, "answers")["teacher"]

    recipe.write_text(recipe.read_text().replace('"Rate: {{', '"Rate: {{ question }} {{'))
    planned = plan(recipe)
    assert {name: planned[name]["status"] for name in NAMES} == {
        "qs": "cached",
        "answers": "cached",
        "clean": "cached",
        "scored": "will run",
        "prefs": "will run",
    }
    assert "`rubric`" in planned["scored"]["reason"] and "prompt" in planned["scored"]["reason"]
    assert planned["prefs"]["reason"] == "upstream `scored` changed"
    third = run_recipe(recipe)
    assert statuses(third) == {
        "qs": "cached",
        "answers": "cached",
        "clean": "cached",
        "scored": "ran",
        "prefs": "ran",
    }
    assert server.requests == sent + 6  # only the judge asked again


def test_only_runs_a_node_and_what_it_needs(tmp_path, server):
    recipe = write_recipe(tmp_path, PIPELINE)
    document = run_recipe(recipe, "--only", "clean")
    assert statuses(document) == {"qs": "ran", "answers": "ran", "clean": "ran"}
    assert server.requests == 2
    unknown = cli("run", str(recipe), "--workdir", str(tmp_path), "--only", "nope")
    assert unknown.exit_code == 2 and "no node named nope" in unknown.output


def test_force_reruns_a_cached_node_only(tmp_path, server):
    recipe = write_recipe(tmp_path, PIPELINE)
    first = run_recipe(recipe)
    sent = server.requests
    forced = run_recipe(recipe, "--force", "answers")
    assert statuses(forced) == {**dict.fromkeys(NAMES, "cached"), "answers": "ran"}
    assert server.requests == sent + 2
    assert rows(forced, "answers") == rows(first, "answers")
    assert node(forced, "answers")["stats"].get("resumed_rows", 0) == 0


def test_set_overrides_a_setting_for_one_run(tmp_path, server):
    recipe = write_recipe(tmp_path, PIPELINE)
    document = run_recipe(recipe, "--set", "answers.samples=2", "--only", "answers")
    assert node(document, "answers")["rows_out"] == 4
    assert {r["sample"] for r in rows(document, "answers")} == {0, 1}
    plain = plan(recipe)["answers"]
    assert (
        plain["status"] == "will run"
        and plain["fingerprint"] != node(document, "answers")["fingerprint"]
    )


def test_workdir_holds_the_cache_and_the_reports(tmp_path, server):
    recipe = write_recipe(tmp_path / "recipes", PIPELINE)
    work = tmp_path / "work"
    result = cli("run", str(recipe), "--workdir", str(work), "--only", "answers")
    assert result.exit_code == 0, result.output
    assert (work / "runs" / "t" / "report.json").is_file()
    assert (work / "runs" / "t" / "report.md").is_file()
    assert len(list((work / ".kdcache" / "artifacts").iterdir())) == 2
    assert not (tmp_path / "recipes" / "runs").exists()
    assert not (tmp_path / "recipes" / ".kdcache").exists()


def test_device_is_checked(tmp_path, tiny_pair):
    recipe = write_recipe(
        tmp_path,
        f'dataset qs = inline([{{question: "q"}}])\nmodel m = hf("{tiny_pair.student}")\n'
        'prompt p = "{{ question }}"\nstage a = label(qs) { teacher = m  prompt = p  max_tokens = 2 }\n',
    )
    bad = cli("run", str(recipe), "--workdir", str(tmp_path), "--device", "gpu")
    assert bad.exit_code == 2 and "cpu, cuda, auto" in bad.output
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    document = run_recipe(recipe, "--device", "cuda", expect=1)
    assert "no CUDA device is available" in node(document, "a")["error"]
    assert node(run_recipe(recipe, "--device", "cpu"), "a")["status"] == "ran"


def test_a_failed_stage_skips_what_depends_on_it_and_keeps_what_finished(tmp_path, server):
    recipe = write_recipe(tmp_path, PIPELINE)
    server.fail("Rate: ", Fault.server_error(503))
    failed = run_recipe(recipe, expect=1)
    assert failed["ok"] is False
    assert statuses(failed) == {
        "qs": "ran",
        "answers": "ran",
        "clean": "ran",
        "scored": "failed",
        "prefs": "skipped",
    }
    assert "HTTP 503" in node(failed, "scored")["error"]
    assert node(failed, "prefs")["error"] == "an input failed"
    fixed = run_recipe(recipe)
    assert statuses(fixed) == {
        "qs": "cached",
        "answers": "cached",
        "clean": "cached",
        "scored": "ran",
        "prefs": "ran",
    }


def test_an_internal_error_still_writes_the_report(tmp_path, server, monkeypatch):
    from kdlang.runtime.stages import STAGES

    def broken(node, ctx, out):
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(STAGES, "pairs", broken)
    recipe = write_recipe(tmp_path, PIPELINE)
    result = cli("run", str(recipe), "--workdir", str(tmp_path))
    assert isinstance(result.exception, ZeroDivisionError)
    document = report(recipe)
    assert statuses(document)["prefs"] == "failed"
    assert node(document, "prefs")["error"] == "internal error: ZeroDivisionError: a bug"
    assert statuses(document)["scored"] == "ran"


def test_stages_drive_one_progress_bar_each(tmp_path, server):
    from kdlang.runtime.executor import run_plan

    from kdlang.check import load_checked
    from kdlang.plan import build_plan

    class Recorder:
        def __init__(self):
            self.tasks: dict[int, dict] = {}

        def add_task(self, description, total=None):
            self.tasks[len(self.tasks)] = {"description": description, "total": total, "done": 0}
            return len(self.tasks) - 1

        def advance(self, task, amount=1):
            self.tasks[task]["done"] += amount

        def reset(self, task, total=None, description=None):
            self.tasks[task].update(total=total, description=description, done=0)

    recipe = write_recipe(tmp_path, PIPELINE)
    program, _ = load_checked(str(recipe))
    progress = Recorder()
    run_plan(
        build_plan(program, str(tmp_path / ".kdcache")),
        workdir=tmp_path,
        device="cpu",
        progress=progress,
    )
    assert list(progress.tasks.values()) == [
        {"description": "answers (label)", "total": 2, "done": 2},
        {"description": "scored (judge)", "total": 6, "done": 6},
    ]
