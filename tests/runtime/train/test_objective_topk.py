"""A cached top-k teacher's ``topk_mass`` and the divergences' ``reduction`` in the step's
loss: the objective's value against the float64 reference on the student's own logits, on the
materialized and the fused-linear paths."""

from __future__ import annotations

import pytest
import torch
from kdlang.runtime.train.examples import Example, collate, encode
from kdlang.runtime.train.models import head
from kdlang.runtime.train.objective import Models, Objective

from tests.runtime.losses.peer_references import ref_topk_per_position
from tests.runtime.train.support import loss

pytestmark = pytest.mark.timeout(120)

ROWS = [
    ("Q: What is 12 plus 7?\nA:", " 12 + 7 = 19. #### 19"),
    ("Write a short poem about the sea.", " The wind and the light of the morning."),
]
K = 5


@pytest.fixture(scope="module")
def setup(tiny_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    student = AutoModelForCausalLM.from_pretrained(tiny_pair.student).float()
    teacher = AutoModelForCausalLM.from_pretrained(tiny_pair.teacher).float().eval()
    cached = []
    for i, (prompt, target) in enumerate(ROWS):
        example = Example(*encode(tokenizer, prompt, target, chat=True), row=i)
        ids = torch.tensor([example.prompt + example.target])
        with torch.no_grad():
            logits = teacher(input_ids=ids).logits[0, len(example.prompt) - 1 : -1].float()
        # the k most likely ids and their log-probs over the whole vocabulary: mass < 1
        values, indices = torch.log_softmax(logits, -1).topk(K, dim=-1)
        cached.append(
            Example(example.prompt, example.target, indices.int().numpy(), values.numpy(), i)
        )
    batch = collate(cached, tokenizer.pad_token_id, kd_everywhere=False)
    return student, batch


def counts(batch) -> dict[str, int]:
    return {"tokens": batch.tokens, "kd_tokens": int((batch.kd_labels != -100).sum()), "pairs": 0}


@pytest.mark.parametrize("mass", ["renormalize", "keep", "uniform"])
@pytest.mark.parametrize("reduction", ["token_mean", "sum", "topk_entries"])
def test_topk_mass_and_reduction_in_the_step_loss(setup, mass, reduction):
    student, batch = setup
    line = loss("forward_kl", 1.0, temperature=2.0, topk_mass=mass, reduction=reduction)
    with torch.no_grad():
        logits = student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    counted = batch.kd_labels != -100
    per = ref_topk_per_position(
        "forward_kl", {}, logits[:, :-1].double(), batch.topk_ids, batch.topk_logprobs, 2.0, mass
    )
    total, n = per[counted].sum(), int(counted.sum())
    expected = {"token_mean": total / n, "sum": total, "topk_entries": total / (n * K)}[reduction]
    for path in ("materialized", "fused_linear"):
        objective = Objective([line], total_steps=2, teacher="cached", path=path, backend="torch")
        models = Models(student, head(student))
        value, parts = objective.micro_loss(models, objective.at_step(0), counts(batch), batch)
        assert float(value.detach()) == pytest.approx(float(expected), rel=1e-5), path
        assert float(parts["forward_kl"]) == pytest.approx(float(expected), rel=1e-5)


def test_the_mass_handlings_differ_on_this_cache(setup):
    student, batch = setup
    values = []
    for mass in ("renormalize", "keep", "uniform"):
        objective = Objective(
            [loss("forward_kl", 1.0, topk_mass=mass)],
            total_steps=2,
            teacher="cached",
            backend="torch",
        )
        value, _ = objective.micro_loss(
            Models(student, head(student)), objective.at_step(0), counts(batch), batch
        )
        values.append(float(value.detach()))
    assert min(abs(a - b) for a, b in zip(values, values[1:] + values[:1], strict=True)) > 1e-3
