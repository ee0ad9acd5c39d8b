"""``init_from``: the student starts from a checkpoint folder of another run, a model folder, or a
peft adapter folder (each made here); mismatches are errors that say what differs; the folder's
content is part of the train's fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kdlang.runtime.errors import RunError
from kdlang.runtime.train import checkpoint
from kdlang.runtime.train.models import load_student

from kdlang.ir.sources import LoRA
from tests.runtime.train.support import SPAN, models, node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

CPU = torch.device("cpu")


class OneProcess:
    rank, world, is_main = 0, 1, True

    def barrier(self) -> None:
        pass


def settings(path) -> dict:
    return {"path": str(path), "dtype": "auto", "revision": None, "trust_remote_code": False}


def lora(r: int = 4) -> LoRA:
    return LoRA(span=SPAN, r=r, alpha=8.0)


def shifted(model, seed: int) -> dict[str, torch.Tensor]:
    """Move every trainable weight by a seeded random amount; returns the new values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def assert_equal(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name


def write_checkpoint(folder: Path, weights: dict[str, torch.Tensor]) -> Path:
    trainable_weights = {f"student.{n}": t for n, t in weights.items()}
    return checkpoint.save(folder, 4, {}, {"trainable": trainable_weights}, OneProcess())


def test_a_model_folder_gives_the_student_its_weights(tmp_path, tiny_pair):
    model, _ = load_student(settings(tiny_pair.student), device=CPU, seed=0)
    want = shifted(model, 1)
    model.save_pretrained(tmp_path / "exported")
    started, _ = load_student(
        settings(tiny_pair.student), device=CPU, seed=0, init=tmp_path / "exported"
    )
    assert_equal(trainable(started), want)


def test_a_model_of_another_architecture_is_refused(tmp_path, tiny_pair):
    with pytest.raises(
        RunError, match=r"not the student's architecture: hidden_size 64 \(not 32\)"
    ):
        load_student(settings(tiny_pair.student), device=CPU, seed=0, init=Path(tiny_pair.teacher))


def test_a_checkpoint_of_a_full_run_and_of_a_lora_run(tmp_path, tiny_pair):
    model, _ = load_student(settings(tiny_pair.student), device=CPU, seed=0)
    want = shifted(model, 2)
    folder = write_checkpoint(tmp_path / "full", want)
    assert folder.name == "ckpt-00000004"
    started, _ = load_student(settings(tiny_pair.student), device=CPU, seed=0, init=folder)
    assert_equal(trainable(started), want)

    adapted, _ = load_student(settings(tiny_pair.student), lora(), device=CPU, seed=0)
    want = shifted(adapted, 3)
    assert all(".lora_" in name for name in want)
    folder = write_checkpoint(tmp_path / "lora", want)
    started, _ = load_student(settings(tiny_pair.student), lora(), device=CPU, seed=9, init=folder)
    assert_equal(trainable(started), want)
    with pytest.raises(RunError, match="the checkpoint holds LoRA adapters, the student does not"):
        load_student(settings(tiny_pair.student), device=CPU, seed=0, init=folder)


def test_an_adapter_folder_with_and_without_lora_on_the_student(tmp_path, tiny_pair):
    adapted, _ = load_student(settings(tiny_pair.student), lora(), device=CPU, seed=0)
    want = shifted(adapted, 4)
    adapted.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 4

    started, _ = load_student(
        settings(tiny_pair.student), lora(), device=CPU, seed=5, init=tmp_path / "adapter"
    )
    assert_equal(trainable(started), want)
    # no lora declared: the adapter itself is trained
    bare, _ = load_student(
        settings(tiny_pair.student), device=CPU, seed=5, init=tmp_path / "adapter"
    )
    assert_equal(trainable(bare), want)
    assert hasattr(bare, "merge_and_unload")

    with pytest.raises(RunError, match="has r = 4, the student's lora r = 8"):
        load_student(
            settings(tiny_pair.student), lora(r=8), device=CPU, seed=5, init=tmp_path / "adapter"
        )


def test_a_folder_of_something_else_is_refused(tmp_path, tiny_pair):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(RunError, match="neither a checkpoint"):
        load_student(settings(tiny_pair.student), device=CPU, seed=0, init=tmp_path / "notes")
    with pytest.raises(RunError, match="is not a folder"):
        load_student(settings(tiny_pair.student), device=CPU, seed=0, init=tmp_path / "missing")


BODY = """
dataset rows = inline([{q: "What is 1 plus 2?", a: "3"}, {q: "Say hi.", a: "Hi!"}])
prompt ask = "Q: {{ q }}\\nA:"
train t {
  student = student  data = rows  prompt = ask  target = a  max_steps = 2  batch = 2
  init_from = "start"
  loss sft weight 1.0
}
"""


def test_a_recipe_starts_from_the_folder_and_trains_again_when_it_changes(tmp_path, tiny_pair):
    model, _ = load_student(settings(tiny_pair.student), device=CPU, seed=0)
    shifted(model, 6)
    model.save_pretrained(tmp_path / "start")
    recipe = write_recipe(tmp_path, models(tiny_pair) + BODY)
    first = run_recipe(recipe)
    assert node(first, "t")["status"] == "ran"
    again = run_recipe(recipe)
    assert node(again, "t")["status"] == "cached"
    shifted(model, 7)
    model.save_pretrained(tmp_path / "start")
    changed = run_recipe(recipe)
    assert node(changed, "t")["status"] == "ran"
    assert node(changed, "t")["fingerprint"] != node(first, "t")["fingerprint"]
    # the first step's loss is the loss of the folder's weights, not of the student's own
    from kdlang.runtime.train.metrics import read_metrics

    from tests.runtime.train.support import artifact

    losses = [read_metrics(artifact(r, "t") / "metrics.jsonl")[0]["loss"] for r in (first, changed)]
    assert losses[0] != pytest.approx(losses[1])
