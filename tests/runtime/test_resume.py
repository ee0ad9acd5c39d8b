"""Crash and resume: ``kdlang run`` in a subprocess is SIGKILLed while a ``label`` stage is
generating; the next run resumes from the progress log, does not generate finished rows again,
and commits an artifact byte-identical to an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.openai_server import FakeOpenAIServer
from tests.runtime.stages.support import (
    BASE_URL_ENV,
    api_label_body,
    node,
    plan,
    run_recipe,
    write_recipe,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
ROWS = 40


def kdlang_run(recipe: Path, base_url: str = "") -> subprocess.Popen:
    env = {**os.environ, BASE_URL_ENV: base_url, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "kdlang", "run", str(recipe), "--workdir", str(recipe.parent)]
    return subprocess.Popen(
        [*command, "--device", "cpu"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def logged(path: Path) -> list[int]:
    """Indices of the complete lines of a progress log."""
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")[:-1]  # the last piece is empty or torn
    records = [json.loads(line) for line in lines]
    return [
        i for r in records for i in ([r["index"]] if "index" in r else [i for i, _ in r["items"]])
    ]


def kill_after(process: subprocess.Popen, log: Path, rows: int) -> list[int]:
    """SIGKILL ``process`` as soon as ``log`` holds ``rows`` finished rows; the rows logged."""
    deadline = time.monotonic() + 60
    while len(logged(log)) < rows:
        if process.poll() is not None:
            pytest.fail(f"the run ended before row {rows}: {process.stderr.read().decode()}")
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    return logged(log)


def finish(process: subprocess.Popen) -> None:
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors.decode()


def data_bytes(document: dict, name: str) -> bytes:
    return (Path(node(document, name)["output"]) / "data.arrow").read_bytes()


def test_killed_api_label_run_resumes_without_repeating_work(tmp_path, monkeypatch):
    body = api_label_body(ROWS, concurrency=2)
    crashed, reference = (
        write_recipe(tmp_path / "crashed", body),
        write_recipe(tmp_path / "ref", body),
    )
    with FakeOpenAIServer(latency=0.05) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        fingerprint = plan(crashed)["answers"]["fingerprint"]
        log = tmp_path / "crashed" / ".kdcache" / "progress" / fingerprint / "progress.jsonl"
        done: list[int] = []
        for point in (5, 16, 28):
            sent = len(server.bodies)
            now = kill_after(kdlang_run(crashed, server.url), log, point)
            asked = [b["messages"][-1]["content"] for b in server.bodies[sent:]]
            # rows finished before this run were not asked for again
            assert not {f"Answer: question {i:02d}" for i in done} & set(asked)
            assert now[: len(done)] == done and len(now) >= point
            done = now
            assert plan(crashed)["answers"]["status"] == "will run"  # nothing partial committed
        sent = len(server.bodies)
        finish(kdlang_run(crashed, server.url))
        asked = [b["messages"][-1]["content"] for b in server.bodies[sent:]]
        assert sorted(asked) == [f"Answer: question {i:02d}" for i in range(ROWS) if i not in done]
        total = server.requests
        uninterrupted = run_recipe(reference)
    resumed = json.loads((tmp_path / "crashed" / "runs" / "t" / "report.json").read_text())
    stats = node(resumed, "answers")["stats"]
    assert stats["resumed_rows"] == len(done)
    assert stats["teacher"]["requests"] == ROWS - len(done)
    # at most the requests in flight at each kill (concurrency 2) were lost and sent again
    assert ROWS <= total <= ROWS + 3 * 2
    assert data_bytes(resumed, "answers") == data_bytes(uninterrupted, "answers")
    assert node(resumed, "answers")["fingerprint"] == node(uninterrupted, "answers")["fingerprint"]
    assert not log.parent.exists()  # progress is dropped once the artifact is committed


def test_killed_white_box_label_run_resumes_with_the_same_batches(tmp_path, tiny_pair):
    body = (
        "dataset qs = inline(["
        + ", ".join(f'{{question: "What is {i} plus {i}?"}}' for i in range(16))
        + "])\n"
        + f'model teacher = hf("{tiny_pair.teacher}", batch_size = 2)\n'
        + 'prompt ask = "Q: {{ question }}\\nA:"\n'
        + "stage answers = label(qs) {\n"
        + "  teacher = teacher  prompt = ask  temperature = 0.8  max_tokens = 48\n}\n"
    )
    crashed, reference = (
        write_recipe(tmp_path / "crashed", body),
        write_recipe(tmp_path / "ref", body),
    )
    fingerprint = plan(crashed)["answers"]["fingerprint"]
    log = tmp_path / "crashed" / ".kdcache" / "progress" / fingerprint / "progress.jsonl"
    done = kill_after(kdlang_run(crashed), log, 4)
    finish(kdlang_run(crashed))
    uninterrupted = run_recipe(reference)
    resumed = json.loads((tmp_path / "crashed" / "runs" / "t" / "report.json").read_text())
    stats = node(resumed, "answers")["stats"]
    assert stats["resumed_rows"] == len(done) >= 4
    # a decode batch (2 rows) is logged whole or not at all: only the batches not logged were
    # decoded again, and no logged row was asked for again
    assert len(done) % 2 == 0
    remaining = 16 - len(done)
    assert stats["teacher"]["requests"] == remaining
    assert stats["teacher"]["calls"] == remaining // 2
    assert node(uninterrupted, "answers")["stats"]["teacher"]["calls"] == 8
    assert data_bytes(resumed, "answers") == data_bytes(uninterrupted, "answers")
