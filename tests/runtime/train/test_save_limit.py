"""``save_total_limit``: the newest N checkpoints are kept (in the train's artifact once it is
done); nothing kdlang did not write is ever removed."""

from __future__ import annotations

import pytest
import torch
from kdlang.runtime.train import checkpoint

from tests.runtime.train.support import artifact, models, node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)


class OneProcess:
    rank, world, is_main = 0, 1, True

    def barrier(self) -> None:
        pass


def save(folder, step: int, keep: int):
    weights = {"trainable": {"student.w": torch.full((2,), float(step))}}
    return checkpoint.save(folder, step, {"data": {}}, weights, OneProcess(), keep=keep)


def test_the_newest_checkpoints_stay_and_foreign_files_are_never_removed(tmp_path):
    # what looks like a checkpoint but is not kdlang's: a folder of another name, a file, and a
    # folder with a checkpoint's name but no state.pt
    (tmp_path / "ckpt-mine").mkdir()
    (tmp_path / "ckpt-mine" / "notes.txt").write_text("mine")
    (tmp_path / "ckpt-00000001.txt").write_text("mine too")
    (tmp_path / "ckpt-00000002").mkdir()
    (tmp_path / "ckpt-00000002" / "data.bin").write_bytes(b"\0")
    for step in (3, 6, 9, 12):
        save(tmp_path, step, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "ckpt-00000001.txt",
        "ckpt-00000002",
        "ckpt-00000009",
        "ckpt-00000012",
        "ckpt-mine",
    ]
    latest = checkpoint.load_latest(tmp_path, 0)
    assert latest is not None and latest.step == 12
    assert torch.equal(latest.weights()["trainable"]["student.w"], torch.full((2,), 12.0))
    save(tmp_path, 15, keep=1)  # the default: the newest only
    assert [p.name for p in checkpoint.committed(tmp_path)] == ["ckpt-00000015"]
    assert (tmp_path / "ckpt-mine" / "notes.txt").read_text() == "mine"


BODY = """
dataset rows = inline([{q: "What is 1 plus 2?", a: "3"}, {q: "Say hi.", a: "Hi!"}])
prompt ask = "Q: {{ q }}\\nA:"
train t {
  student = student  data = rows  prompt = ask  target = a  max_steps = 7  batch = 2
  checkpoint_every = 2  save_total_limit = 2
  loss sft weight 1.0
}
"""


def test_a_run_keeps_its_newest_checkpoints_in_its_artifact(tmp_path, tiny_pair):
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + BODY))
    folder = artifact(report, "t") / "checkpoints"
    # checkpoints after steps 2, 4, 6 (the final weights, after 7, are the model, not one)
    assert sorted(p.name for p in folder.iterdir()) == ["ckpt-00000004", "ckpt-00000006"]
    assert node(report, "t")["stats"]["checkpoints"] == ["ckpt-00000004", "ckpt-00000006"]
    saved = [
        torch.load(folder / name / "state.pt", weights_only=False)["step"]
        for name in ("ckpt-00000004", "ckpt-00000006")
    ]
    assert saved == [4, 6]
    four, six = (
        torch.load(folder / name / "weights.pt", weights_only=False)["trainable"]
        for name in ("ckpt-00000004", "ckpt-00000006")
    )
    assert sorted(four) == sorted(six)
    assert any(not torch.equal(four[k], six[k]) for k in four)  # two steps apart
