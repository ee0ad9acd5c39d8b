"""Data stages under several processes: every stage that calls a teacher per row shares its
request batches out (batch b to rank b % world), rank 0 merges and commits; the artifacts are
byte-identical to one process's, and every row is generated exactly once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.fixtures.openai_server import FakeOpenAIServer, ScriptedModel
from tests.runtime.distributed.support import kill, launch, report, start
from tests.runtime.stages.support import (
    BASE_URL_ENV,
    api_label_body,
    api_model,
    node,
    run_recipe,
    write_recipe,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

QUESTIONS = [
    ("What is 12 plus 7?", "19"),
    ("What is 30 minus 4?", "26"),
    ("Name a sea animal.", "a fish"),
    ("Define a fox.", "an animal"),
    ("What is 2 + 3?", "5"),
    ("Write a short poem about the sea.", "The wind and the light."),
    ("What is 9 - 6?", "3"),
    ("Summarise: the quick brown fox.", "A fox."),
    ("What is 1 + 1?", "2"),
    ("Think step by step: 3 + 5?", "8"),
    ("What is 7 times 6?", "42"),
]
ROWS = 40
DATA_NODES = ["qs", "answers", "written", "kept", "scored", "more", "soft"]
TEACHER_NODES = ["answers", "written", "scored", "more", "soft"]


def respond(prompt: str, seed: int | None) -> str:
    return f"Fair.\nScore: {1 + (len(prompt) + (seed or 0)) % 9}"


def body(pair) -> str:
    data = ", ".join(f'{{question: "{q}", answer: "{a}"}}' for q, a in QUESTIONS)
    return f"""
dataset qs = inline([{data}])
model teacher = hf("{pair.teacher}", batch_size = 4)
model student = hf("{pair.student}", batch_size = 3)
{api_model("api", concurrency=1)}
prompt solve = "Q: {{{{ question }}}}\\nA:"
prompt rubric = "Rate: {{{{ output }}}}"
stage answers = label(qs) {{
  teacher = teacher  prompt = solve  samples = 2  temperature = 0.9  max_tokens = 6
}}
stage written = curate(qs) {{
  teacher = student  prompt = solve  per_item = 3  temperature = 1.0  max_tokens = 5
}}
stage kept = filter(answers) {{ dedup output by exact }}
stage scored = judge(kept) {{ judge = api  prompt = rubric  temperature = 0.5 }}
stage more = expand(qs) {{
  teacher = teacher  method = evol_instruct  column = question  rounds = 2
  temperature = 1.0  max_tokens = 8
}}
stage soft = teacher_logits(qs) {{ teacher = teacher  prompt = solve  target = answer  top_k = 4 }}
eval check = evaluate(student, qs) {{
  prompt = solve  max_tokens = 5  temperature = 0.8
  metric exact_match(output, answer)
  metric perplexity(answer)
}}
"""


def outputs(document: dict) -> dict[str, bytes]:
    found = {
        name: (Path(node(document, name)["output"]) / "data.arrow").read_bytes()
        for name in DATA_NODES
    }
    found["check"] = (Path(node(document, "check")["output"]) / "predictions.jsonl").read_bytes()
    return found


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(ScriptedModel(respond)) as running:
        yield running


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_pair, server):
    recipe = write_recipe(tmp_path_factory.mktemp("one") / "run", body(tiny_pair))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(BASE_URL_ENV, server.url)
        document = run_recipe(recipe)
    return document, server.requests


@pytest.mark.parametrize("world", [2, 3])
def test_data_stages_are_byte_identical_under_several_processes(
    tmp_path, tiny_pair, server, single, world
):
    reference, reference_requests = single
    recipe = write_recipe(tmp_path / "run", body(tiny_pair))
    sent_before = server.requests
    done = launch(recipe, world, env={BASE_URL_ENV: server.url})
    assert done.returncode == 0, done.stderr[-3000:]
    document = report(recipe)
    assert {n["name"]: n["status"] for n in document["nodes"]} == {
        n["name"]: "ran" for n in reference["nodes"]
    }
    expected, found = outputs(reference), outputs(document)
    assert len(expected["answers"]) > 1000
    for name in expected:
        assert found[name] == expected[name], name
    for name in [*TEACHER_NODES, "check"]:
        assert node(document, name)["stats"]["processes"] == world
    for name in TEACHER_NODES:  # summed over ranks: every request was made exactly once
        assert node(document, name)["teacher"] == node(reference, name)["teacher"], name
    assert server.requests - sent_before == reference_requests  # the API judge's requests
    assert document["evaluations"] == reference["evaluations"]
    metrics = document["evaluations"][0]["metrics"]
    assert metrics["perplexity"] > 1.0


def logged(folder: Path) -> list[int]:
    """Indices of the complete lines of every rank's part of a progress log."""
    indices = []
    for part in sorted(folder.glob("progress*.jsonl")):
        lines = part.read_bytes().split(b"\n")[:-1]  # the last piece is empty or torn
        indices += [json.loads(line)["index"] for line in lines]
    return indices


def test_a_stage_killed_under_two_processes_resumes_under_one(tmp_path, monkeypatch):
    """Each rank logs its own part; a run of any size reads them all and asks only for the
    rest, and the artifact equals an uninterrupted run's."""
    body = api_label_body(ROWS, concurrency=1)
    killed = write_recipe(tmp_path / "killed", body)
    reference = write_recipe(tmp_path / "reference", body)
    with FakeOpenAIServer(latency=0.05) as api:
        monkeypatch.setenv(BASE_URL_ENV, api.url)
        folder = tmp_path / "killed" / ".kdcache" / "progress"
        process = start(killed, 2, env={BASE_URL_ENV: api.url})
        deadline = time.monotonic() + 90
        while True:
            parts = list(folder.glob("*/progress*.jsonl"))
            if len({p.name for p in parts}) == 2 and len(logged(parts[0].parent)) >= 12:
                kill(process)
                break
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.01)
        (log_folder,) = {p.parent for p in parts}
        done = logged(log_folder)
        assert len(done) < ROWS and len(set(done)) == len(done)
        # chunks of 4 rows alternate between the ranks
        assert {i // 4 % 2 for i in done} == {0, 1}
        sent = api.requests
        resumed = run_recipe(killed)
        asked = api.requests - sent
        uninterrupted = run_recipe(reference)
    stats = node(resumed, "answers")["stats"]
    assert stats["resumed_rows"] == len(done) and "processes" not in stats
    assert stats["teacher"]["requests"] == asked == ROWS - len(done)
    assert (Path(node(resumed, "answers")["output"]) / "data.arrow").read_bytes() == (
        Path(node(uninterrupted, "answers")["output"]) / "data.arrow"
    ).read_bytes()
    assert not log_folder.exists()
