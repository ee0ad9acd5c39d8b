"""Sequence-level KD (``seq_kd = true``): on the steps whose targets come from the data, the
online teacher writes them (seeded per step and row), and the losses learn from its text."""

from __future__ import annotations

import random

import pytest
from kdlang.runtime.train import replay as rp

from tests.runtime.train.support import metrics, models, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

ROWS = [
    ("What is 12 plus 7?", "12 + 7 = 19. #### 19"),
    ("What is 30 minus 4?", "30 - 4 = 26. #### 26"),
    ("A farmer has 3 cows and buys 5 more. How many cows?", "3 + 5 = 8. #### 8"),
    ("Write a short poem about the sea.", "The wind and the light of the morning."),
]
DATA = (
    "dataset rows = inline(["
    + ", ".join(f'{{q: "{q}", a: "{a}"}}' for q, a in ROWS)
    + '])\nprompt ask = """Q: {{ q }}\nA:"""\n'
)


def recipe(steps: int, extra: str) -> str:
    return (
        DATA
        + f"""
train t {{
  student = student  teacher = teacher  data = rows  prompt = ask  target = a
  max_steps = {steps}  batch = 2  lr = 3e-3  seq_kd = true  max_new_tokens = 5  {extra}
  loss sft weight 1.0
  loss forward_kl weight 1.0
}}
"""
    )


def step_rows(seed: int, step: int, rows: int = 4, batch: int = 2) -> list[int]:
    """DataOrder's rows of a step: epoch e visits a permutation seeded by (seed, e)."""
    per_epoch = rows // batch
    order = list(range(rows))
    random.Random(f"kdlang-train:{seed}:{step // per_epoch}").shuffle(order)
    start = (step % per_epoch) * batch
    return order[start : start + batch]


def test_the_teacher_writes_the_targets_of_the_off_policy_steps(tmp_path, tiny_pair, monkeypatch):
    calls: list[tuple[int, list[int], bool]] = []
    sample = rp.sample_rows

    def record(job, model, wanted, step, teacher):
        calls.append((step, [r for r, _ in wanted], teacher))
        assert model is (job.models.teacher if teacher else job.models.student)
        return sample(job, model, wanted, step, teacher)

    monkeypatch.setattr(rp, "sample_rows", record)
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + recipe(6, "on_policy = 0.5")))
    records = metrics(report, "t")
    on = [random.Random(f"kdlang-on-policy:7:{s}").random() < 0.5 for s in range(6)]
    assert 0 < sum(on) < 6  # both kinds of steps
    # every step samples: the student on on-policy steps, the teacher on the others
    assert calls == [(s, step_rows(7, s), not on[s]) for s in range(6)]
    assert [r["on_policy_batch"] for r in records] == on
    # sft learns from the teacher's text on its steps, and is skipped on the student's
    assert [("sft" in r) for r in records] == [not o for o in on]


def test_a_greedy_teacher_continuation_is_what_the_step_learns(tmp_path, tiny_pair):
    import torch
    from kdlang.runtime.train.examples import encode
    from kdlang.runtime.train.models import chat_enabled
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # a nucleus of mass 1e-6 is the top token alone: the teacher writes its greedy path
    report = run_recipe(
        write_recipe(tmp_path, models(tiny_pair) + recipe(1, "sample_top_p = 0.000001"))
    )
    (record,) = metrics(report, "t")
    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.student)
    chat = chat_enabled(tokenizer, "auto")
    teacher = AutoModelForCausalLM.from_pretrained(tiny_pair.teacher).eval()
    student = AutoModelForCausalLM.from_pretrained(tiny_pair.student).double().eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ce, count = 0.0, 0
    for row in step_rows(7, 0):
        question, answer = ROWS[row]
        prompt, _ = encode(tokenizer, f"Q: {question}\nA:", answer, chat=chat)
        with torch.no_grad():
            out = teacher.generate(
                torch.tensor([prompt]), max_new_tokens=5, do_sample=False, pad_token_id=pad
            )
        target = out[0, len(prompt) :].tolist()
        if tokenizer.eos_token_id in target:  # the sample ends with the EOS it drew
            target = target[: target.index(tokenizer.eos_token_id) + 1]
        assert target != encode(tokenizer, "", answer, chat=False)[1]  # not the data's text
        with torch.no_grad():
            logits = student(input_ids=torch.tensor([prompt + target])).logits[0]
        logps = torch.log_softmax(logits[len(prompt) - 1 : -1], -1)
        ce -= float(logps.gather(1, torch.tensor(target)[:, None]).sum())
        count += len(target)
    assert record["tokens"] == count
    assert record["sft"] == pytest.approx(ce / count, rel=1e-4)


def test_sample_batch_sets_how_many_prompts_are_decoded_at_once(tmp_path, tiny_pair, monkeypatch):
    from kdlang.runtime.teachers import hf_decode

    calls: list[tuple[int, int]] = []
    decode = hf_decode.decode_batch

    def record(model, tokenizer, specs, **kwargs):
        calls.append((len(specs), kwargs["slots"]))
        return decode(model, tokenizer, specs, **kwargs)

    monkeypatch.setattr(hf_decode, "decode_batch", record)
    text = models(tiny_pair) + recipe(2, "sample_batch = 3").replace("batch = 2", "batch = 4")
    run_recipe(write_recipe(tmp_path, text))
    assert calls == [(4, 3), (4, 3)]  # each step's 4 rows, decoded 3 at a time
