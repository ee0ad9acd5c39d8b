"""A killed training run resumes from its last checkpoint and continues the same trajectory:
its metrics equal an uninterrupted run's, and every step is recorded once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from kdlang.runtime.train.metrics import MetricsLog

from tests.runtime.train.support import metrics, node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

VARYING = {"seconds"}


@pytest.fixture(scope="module")
def gpt2_pair(tiny_root, tiny_tokenizer_dir):
    """A GPT-2 student with dropout (so the random-generator state matters) and a wider GPT-2
    teacher, one vocabulary."""
    from transformers import AutoTokenizer

    from tests.fixtures.tiny_models import build_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    student = build_model(tiny_root / "resume_student", tokenizer, arch="gpt2", hidden=32, seed=4)
    teacher = build_model(tiny_root / "resume_teacher", tokenizer, arch="gpt2", hidden=48, seed=5)
    return student, teacher


def recipe_text(student, teacher, steps: int, every: int) -> str:
    rows = ", ".join(f'{{q: "What is {i} plus {i + 3}?", a: "{2 * i + 3}"}}' for i in range(12))
    return f"""
    model teacher = hf("{teacher}")
    model student = hf("{student}")
    dataset rows = inline([{rows}])
    prompt ask = "Q: {{{{ q }}}}\\nA:"
    train distill {{
      student = student  teacher = teacher  data = rows  prompt = ask  target = a
      max_steps = {steps}  batch = 4  lr = 3e-3  lr_schedule = cosine(warmup = 2)
      checkpoint_every = {every}
      on_policy = 0.3  max_new_tokens = 4
      loss sft weight linear(1.0 -> 0.2)
      loss jsd(beta = 0.3) weight 1.0 temperature linear(1.0 -> 2.0)
    }}
    """


def comparable(records):
    return [{k: v for k, v in r.items() if k not in VARYING} for r in records]


def assert_same(resumed, reference):
    assert [r["step"] for r in resumed] == [r["step"] for r in reference]
    for a, b in zip(comparable(resumed), comparable(reference), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)


class Crash(Exception):
    pass


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, gpt2_pair, monkeypatch):
    text = recipe_text(*gpt2_pair, steps=12, every=4)
    whole = run_recipe(write_recipe(tmp_path / "whole", text))
    recipe = write_recipe(tmp_path / "cut", text)
    extend = MetricsLog.extend

    def crash_once_step_9_is_written(self, records):
        extend(self, records)
        if any(r["step"] == 9 for r in records):
            raise Crash

    monkeypatch.setattr(MetricsLog, "extend", crash_once_step_9_is_written)
    with pytest.raises(Crash):
        run_recipe(recipe)
    monkeypatch.setattr(MetricsLog, "extend", extend)
    resumed = run_recipe(recipe)
    assert node(resumed, "distill")["stats"]["resumed_from_step"] == 8
    records = metrics(resumed, "distill")
    assert records[8]["on_policy_batch"]  # the resumed part samples from the student too
    assert_same(records, metrics(whole, "distill"))


@pytest.mark.slow
def test_sigkilled_kdlang_run_resumes_the_same_trajectory(tmp_path, gpt2_pair):
    steps, every = 120, 10
    text = recipe_text(*gpt2_pair, steps=steps, every=every)
    whole = run_recipe(write_recipe(tmp_path / "whole", text))
    recipe = write_recipe(tmp_path / "killed", text)
    command = [
        sys.executable,
        "-m",
        "kdlang",
        "run",
        str(recipe),
        "--workdir",
        str(recipe.parent),
        "--device",
        "cpu",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = recipe.parent / ".kdcache" / "progress"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            lines = sum(len(p.read_bytes().splitlines()) for p in progress.glob("*/metrics.jsonl"))
            if lines >= 35:
                os.kill(process.pid, signal.SIGKILL)
                break
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.01)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    (folder,) = [p.parent for p in progress.glob("*/metrics.jsonl")]
    killed_at = len((folder / "metrics.jsonl").read_bytes().splitlines())
    assert killed_at < steps
    assert list(folder.glob("ckpt-*")), "no checkpoint was committed before the kill"
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = json.loads((recipe.parent / "runs" / "t" / "report.json").read_text())
    resumed_from = node(report, "distill")["stats"]["resumed_from_step"]
    assert 30 <= resumed_from <= killed_at and resumed_from % every == 0
    assert_same(metrics(report, "distill"), metrics(whole, "distill"))
