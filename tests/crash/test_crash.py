"""The crash suite: a whole pipeline (an API teacher labels, a white-box teacher scores top-k,
a student trains, the student is exported) is SIGKILLed at seeded moments, resumed each time,
and must end as an uninterrupted run ends: every data artifact byte for byte, the training
metrics within 1e-6, the trained weights and the exported files equal, and no teacher request
repeated beyond those in flight at a kill.

CI runs :data:`TRIALS` trials of :data:`KILLS` kills each (``KDLANG_CRASH_TRIALS``,
``KDLANG_CRASH_KILLS``); a long run is ``KDLANG_CRASH_TRIALS=20 python -m pytest tests/crash``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kdlang.runtime.cache import file_hashes

from tests.fixtures.openai_server import FakeOpenAIServer
from tests.runtime.stages.support import BASE_URL_ENV, api_model, write_recipe

TRIALS = int(os.environ.get("KDLANG_CRASH_TRIALS", "2"))
KILLS = int(os.environ.get("KDLANG_CRASH_KILLS", "3"))
ROWS = 16
CONCURRENCY = 2
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def recipe_body(pair) -> str:
    questions = ", ".join(f'{{question: "What is {i} plus {i + 2}?"}}' for i in range(ROWS))
    return (
        f"dataset qs = inline([{questions}])\n"
        + api_model("api", concurrency=CONCURRENCY)
        + f'\nmodel teacher = hf("{pair.teacher}")\nmodel student = hf("{pair.student}")\n'
        + 'prompt ask = "Q: {{ question }}\\nA:"\n'
        + "stage answers = label(qs) { teacher = api  prompt = ask  temperature = 0.7 }\n"
        + "stage soft = teacher_logits(answers) {\n"
        + "  teacher = teacher  prompt = ask  target = output  top_k = 4\n}\n"
        + "train kd {\n"
        + "  student = student  data = soft  prompt = ask  target = output\n"
        + "  max_steps = 24  batch = 4  lr = 1e-3  checkpoint_every = 4\n"
        + "  loss forward_kl weight 1.0\n  loss sft weight 0.2\n}\n"
        + 'export kd to "exported"\n'
    )


def command(recipe: Path) -> list[str]:
    return [
        sys.executable, "-m", "kdlang", "run", str(recipe),
        "--workdir", str(recipe.parent), "--device", "cpu",
    ]  # fmt: skip


def environment(url: str) -> dict[str, str]:
    return {**os.environ, BASE_URL_ENV: url, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def started(process: subprocess.Popen, lock: Path) -> float:
    """Wait until ``process`` holds the cache lock (its stages begin); the time it did."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return time.monotonic()
        try:
            if json.loads(lock.read_text(encoding="utf-8")).get("pid") == process.pid:
                return time.monotonic()
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    pytest.fail("the run never started its stages")


def run(recipe: Path, url: str, kill_after: float | None = None) -> tuple[int, float]:
    """``kdlang run`` in a subprocess, SIGKILLed ``kill_after`` seconds into its stages (if it
    has not ended by then); its exit status and how long its stages ran."""
    process = subprocess.Popen(
        command(recipe), cwd=ROOT, env=environment(url),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    began = started(process, recipe.parent / ".kdcache" / "lock")
    try:
        if kill_after is not None:
            while time.monotonic() < began + kill_after and process.poll() is None:
                time.sleep(0.005)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
        _, errors = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    if process.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"the run failed ({process.returncode}):\n{errors.decode()[-3000:]}")
    return process.returncode, time.monotonic() - began


def report(folder: Path) -> dict:
    return json.loads((folder / "runs" / "t" / "report.json").read_text(encoding="utf-8"))


def outputs(folder: Path) -> dict[str, Path]:
    return {n["name"]: Path(n["output"]) for n in report(folder)["nodes"] if n["output"]}


def metrics(folder: Path) -> list[dict]:
    text = (outputs(folder)["kd"] / "metrics.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_pair):
    """The uninterrupted run, and how long its stages took."""
    folder = tmp_path_factory.mktemp("reference")
    recipe = write_recipe(folder, recipe_body(tiny_pair))
    with FakeOpenAIServer(latency=0.05) as server:
        status, seconds = run(recipe, server.url)
        assert status == 0 and server.requests == ROWS
    return folder, seconds


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_pipeline_killed_at_seeded_moments_ends_as_an_uninterrupted_run(
    trial, tmp_path, tiny_pair, reference
):
    reference_folder, seconds = reference
    rng = random.Random(f"crash:{trial}")
    recipe = write_recipe(tmp_path / "killed", recipe_body(tiny_pair))
    kills = 0
    with FakeOpenAIServer(latency=0.05) as server:
        for _ in range(KILLS):
            status, _ = run(recipe, server.url, kill_after=rng.uniform(0.05, 0.9) * seconds)
            kills += status == -signal.SIGKILL
            if status == 0:
                break
        else:
            status, _ = run(recipe, server.url)
        assert status == 0
        # Rows logged before a kill are never asked again: at most the requests in flight at
        # each kill were lost and sent twice.
        assert ROWS <= server.requests <= ROWS + kills * CONCURRENCY
        print(f"trial {trial}: {kills} kills, {server.requests} teacher requests for {ROWS} rows")

    mine, theirs = outputs(tmp_path / "killed"), outputs(reference_folder)
    assert mine.keys() == theirs.keys() >= {"qs", "answers", "soft", "kd", "export:kd"}
    for name in ("qs", "answers", "soft"):
        assert (mine[name] / "data.arrow").read_bytes() == (
            theirs[name] / "data.arrow"
        ).read_bytes()
    resumed, whole = metrics(tmp_path / "killed"), metrics(reference_folder)
    assert [r["step"] for r in resumed] == list(range(24))
    for a, b in zip(resumed, whole, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            assert value == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["step"], key)
    weights = sorted(p.relative_to(mine["kd"]) for p in mine["kd"].rglob("*.safetensors"))
    assert weights
    for name in weights:
        assert (mine["kd"] / name).read_bytes() == (theirs["kd"] / name).read_bytes(), name
    exported = file_hashes(tmp_path / "killed" / "exported")
    assert exported == file_hashes(reference_folder / "exported")
