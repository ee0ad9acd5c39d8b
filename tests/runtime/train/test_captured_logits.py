"""Offline KD from captured teacher logits: a `teacher_logits` stage's rows exported once
(`export soft to "soft.parquet"`) are a dataset later recipes train from with no teacher at all,
exactly as from the stage itself."""

from __future__ import annotations

import pytest

from kdlang.check import check_files
from tests.runtime.train.support import metrics, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

DATA = """
dataset rows = inline([
  {q: "What is 12 plus 7?", a: "12 + 7 = 19. #### 19"},
  {q: "What is 30 minus 4?", a: "30 - 4 = 26."},
  {q: "Write a short poem about the sea.", a: "The wind and the light of the morning."},
])
prompt ask = \"\"\"Q: {{ q }}
A:\"\"\"
"""
TRAIN = """
train distill {
  student = student  data = soft  prompt = ask  target = a  max_steps = 6  batch = 3
  lr = 3e-3
  loss forward_kl weight 1.0
}
"""


def test_a_student_trains_from_exported_logits_as_from_the_stage(tmp_path, tiny_pair):
    capture = write_recipe(
        tmp_path / "capture",
        f'model teacher = hf("{tiny_pair.teacher}")\nmodel student = hf("{tiny_pair.student}")\n'
        + DATA
        + "stage soft = teacher_logits(rows) { teacher = teacher  prompt = ask  target = a  top_k = 5 }\n"
        + TRAIN
        + 'export soft to "soft.parquet"\n',
    )
    captured = run_recipe(capture)
    reuse = write_recipe(
        tmp_path / "reuse",
        f'model student = hf("{tiny_pair.student}")\n'
        + DATA.split("prompt ask")[0].replace("dataset rows = inline", "dataset unused = inline")
        + f'dataset soft = parquet("{tmp_path / "capture" / "soft.parquet"}")\n'
        + 'prompt ask = """Q: {{ q }}\nA:"""\n'
        + TRAIN,
    )
    diagnostics, _ = check_files([str(reuse)])
    assert [d for d in diagnostics if d.severity.name == "ERROR"] == []
    reused = run_recipe(reuse)
    a, b = metrics(captured, "distill"), metrics(reused, "distill")
    assert [r["step"] for r in b] == list(range(6))
    for x, y in zip(a, b, strict=True):
        assert x["forward_kl"] == pytest.approx(y["forward_kl"], rel=1e-6)
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6)


def test_a_token_loss_on_data_without_captured_logits_still_needs_a_teacher(tmp_path, tiny_pair):
    recipe = write_recipe(
        tmp_path,
        f'model student = hf("{tiny_pair.student}")\n' + DATA.replace("rows", "soft") + TRAIN,
    )
    diagnostics, _ = check_files([str(recipe)])
    assert [d.code for d in diagnostics if d.severity.name == "ERROR"] == ["KD0301"]
