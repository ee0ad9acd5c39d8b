"""Two processes under torchrun (Gloo on CPU), started by ``kdlang run --launcher torchrun``,
follow the single-process trajectory: each reads half of every step's rows, terms are divided by
the global counts and gradients are summed."""

from __future__ import annotations

import json

import pytest

from tests.runtime.distributed.support import launch
from tests.runtime.train.support import (
    artifact,
    metrics,
    models,
    node,
    run_recipe,
    write_recipe,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BODY = """
dataset qs = inline([
  {q: "What is 2 + 3?", a: "5"},
  {q: "What is 7 times 6?", a: "42"},
  {q: "What is 1 + 1?", a: "2"},
  {q: "What is 9 - 6?", a: "3, because 9 - 6 = 3"},
  {q: "Write a short poem about the sea.", a: "The wind and the light."},
])
prompt ask = "Q: {{ q }}\\nA:"
train distill {
  student = student  teacher = teacher  data = qs  prompt = ask  target = a
  max_steps = 6  batch = 4  grad_accum = 2  lr = 1e-3  checkpoint_every = 3
  loss sft weight 0.5
  loss forward_kl weight 1.0 temperature 2.0
}
"""


def test_two_processes_match_one(tmp_path, tiny_pair):
    """``kdlang run --launcher torchrun --nproc 2`` trains as one process does."""
    single = run_recipe(write_recipe(tmp_path / "single", models(tiny_pair) + BODY))
    recipe = write_recipe(tmp_path / "multi", models(tiny_pair) + BODY)
    done = launch(recipe, 2)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((recipe.parent / "runs" / "t" / "report.json").read_text())
    assert node(report, "distill")["status"] == "ran"
    assert node(report, "distill")["stats"]["processes"] == 2
    expected = metrics(single, "distill")
    found = metrics(report, "distill")
    assert [r["step"] for r in found] == list(range(6))
    for a, b in zip(found, expected, strict=True):
        assert a["tokens"] == b["tokens"]
        for key in ("loss", "sft", "forward_kl", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["step"], key)
    # the trained weights are the same too (rank 0 wrote them)
    assert (artifact(report, "distill") / "model" / "model.safetensors").is_file()
