"""Packing through the training loop and ``kdlang run``: the layout the run picks, its
trajectory against the padded one, and a checkpoint written padded resumed packed."""

from __future__ import annotations

import pytest
import torch
from kdlang.runtime.train.examples import Example, encode
from kdlang.runtime.train.models import head
from kdlang.runtime.train.objective import Models, Objective
from kdlang.runtime.train.packing import resolve_layout

from tests.runtime.train.support import loss, train_node
from tests.runtime.train.test_packing import ROWS

pytestmark = pytest.mark.timeout(300)


# -- resume across layouts ---------------------------------------------------------------------


def _job(tiny_pair, folder, packing: bool):
    from kdlang.runtime.train.loop import Job
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    student = AutoModelForCausalLM.from_pretrained(tiny_pair.student).float()
    teacher = AutoModelForCausalLM.from_pretrained(tiny_pair.teacher).float().eval()
    examples = [
        Example(*encode(tokenizer, p, t, chat=True), row=i) for i, (p, t) in enumerate(ROWS)
    ]
    losses = [loss("sft", 0.5), loss("forward_kl", temperature=2.0)]
    train = train_node(
        losses, max_steps=4, batch=4, lr=1e-3, checkpoint_every=2, packing=packing,
        tokens_per_micro_batch=48,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    return Job(
        train=train,
        objective=Objective(train.losses, total_steps=4, teacher="online", backend="torch"),
        models=Models(student, head(student), teacher, head(teacher)),
        tokenizer=tokenizer,
        examples=examples,
        folder=folder,
        total_steps=4,
        seed=3,
        device=torch.device("cpu"),
        online=True,
        layout=resolve_layout(train, student, teacher),
    )


def test_a_padded_checkpoint_resumes_packed_on_the_same_trajectory(tmp_path, tiny_pair):
    from kdlang.runtime.train.loop import fit

    packed = fit(_job(tiny_pair, tmp_path / "packed", packing=True))
    padded = fit(_job(tiny_pair, tmp_path / "mixed", packing=False))  # leaves ckpt-2 behind
    resumed_job = _job(tiny_pair, tmp_path / "mixed", packing=True)
    assert resumed_job.layout.packed
    resumed = fit(resumed_job)
    assert resumed_job.resumed_from == 2
    by_step = {r["step"]: r for r in resumed}
    for step in (2, 3):
        for key in ("loss", "sft", "forward_kl", "grad_norm"):
            assert by_step[step][key] == pytest.approx(packed[step][key], rel=1e-5), (step, key)
            assert by_step[step][key] == pytest.approx(padded[step][key], rel=1e-5), (step, key)


# -- through `kdlang run` --------------------------------------------------------------------------

RECIPE = """
dataset qs = inline([
  {q: "What is 2 + 3?", a: "5"},
  {q: "Write a short poem about the sea.", a: "The wind and the light of the morning, and the sea."},
  {q: "What is 7 times 6?", a: "42"},
  {q: "Say hi.", a: "Hi!"},
])
prompt ask = "Q: {{ q }}\\nA:"
train distill {
  student = student  teacher = teacher  data = qs  prompt = ask  target = a
  max_steps = 3  batch = 4  lr = 1e-3  PACKING
  loss sft weight 0.5
  loss forward_kl weight 1.0 temperature 2.0
}
"""


def test_kdlang_run_packs_where_asked_and_matches_padded(tmp_path, tiny_pair):
    from tests.runtime.train.support import metrics, models, node, run_recipe, write_recipe

    runs = {}
    for name, setting in [
        ("auto", ""),
        ("on", "packing = true"),
        ("off", "packing = false"),
        ("budget", "packing = true  tokens_per_micro_batch = 40"),
    ]:
        body = models(tiny_pair) + RECIPE.replace("PACKING", setting)
        runs[name] = run_recipe(write_recipe(tmp_path / name, body))
    stats = {name: node(report, "distill")["stats"]["packing"] for name, report in runs.items()}
    # the tiny models attend with sdpa: a packed micro-batch would need a dense mask
    assert stats["auto"]["packed"] is False and stats["auto"]["budget"] is None
    assert stats["auto"]["reason"].startswith("padded: the student's `sdpa` attention")
    assert stats["on"] == {"packed": True, "budget": 4 * 512, "reason": "packing = true"}
    assert stats["off"] == {"packed": False, "budget": None, "reason": "packing = false"}
    assert stats["budget"]["packed"] and stats["budget"]["budget"] == 40
    padded = metrics(runs["off"], "distill")
    for name in ("auto", "on", "budget"):
        for found, expected in zip(metrics(runs[name], "distill"), padded, strict=True):
            assert found["tokens"] == expected["tokens"]
            for key in ("loss", "sft", "forward_kl", "grad_norm"):
                assert found[key] == pytest.approx(expected[key], rel=1e-5), (name, key)


def test_the_attention_setting_reaches_the_models_and_decides_auto_packing(tiny_pair):
    import torch
    from kdlang.runtime.teachers.hf import HFTeacher
    from kdlang.runtime.train.models import load_student
    from kdlang.runtime.train.packing import resolve_layout

    from tests.runtime.train.support import loss, train_node

    teacher = HFTeacher(tiny_pair.teacher, device="cpu", attention="flex_attention")
    settings = {"path": str(tiny_pair.student), "attention": "flex_attention"}
    student, _ = load_student(settings, device=torch.device("cpu"), seed=0)
    assert teacher.model.config._attn_implementation == "flex_attention"
    assert student.config._attn_implementation == "flex_attention"
    layout = resolve_layout(train_node([loss("sft")]), student, teacher.model)
    assert layout.packed and layout.reason == "packing = auto: the models pack"
    eager, _ = load_student({**settings, "attention": "eager"}, device=torch.device("cpu"), seed=0)
    assert not resolve_layout(train_node([loss("sft")]), eager, None).packed
