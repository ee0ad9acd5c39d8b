"""`chat_template_args` reach `teacher_logits` and `evaluate`: the cached top-k and the
perplexity an evaluation reports are the teacher's (and the trained student's) on the prompt
its template renders with those arguments, computed by hand in float64 from the rendered text."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.runtime.stages.support import node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

TEMPLATE = """{% for m in messages %}<|im_start|>{{ m['role'] }}
{{ m['content'] }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% if not enable_thinking %}<think></think>
{% endif %}{% endif %}"""
"""ChatML whose generation prompt closes an empty reasoning block unless `enable_thinking`."""
ROWS = [
    {"q": "What is 12 plus 7?", "a": "12 + 7 = 19. #### 19"},
    {"q": "Write a short poem about the sea.", "a": "The wind and the light of the morning."},
]
K = 4


def body(pair) -> str:
    rows = ", ".join(f'{{q: "{r["q"]}", a: "{r["a"]}"}}' for r in ROWS)
    models = "".join(
        f'model {name} = hf("{path}", chat_template = """{TEMPLATE}""",\n'
        f"  chat_template_args = {{enable_thinking: {flag}}})\n"
        for name, path, flag in (
            ("t_on", pair.teacher, "true"),
            ("t_off", pair.teacher, "false"),
            ("s_off", pair.student, "false"),
        )
    )
    return (
        models
        + f"dataset rows = inline([{rows}])\n"
        + 'prompt ask = "{{ q }}"\n'
        + "stage on = teacher_logits(rows) { teacher = t_on  prompt = ask  target = a  top_k = 4 }\n"
        + "stage off = teacher_logits(rows) { teacher = t_off  prompt = ask  target = a  top_k = 4 }\n"
        + "train tuned { student = s_off  data = rows  prompt = ask  target = a  max_steps = 2\n"
        + "  batch = 2  lr = 1e-2\n  loss sft weight 1.0 }\n"
        + "eval e_on = evaluate(t_on, rows) { prompt = ask  max_tokens = 3  metric perplexity(a) }\n"
        + "eval e_off = evaluate(t_off, rows) { prompt = ask  max_tokens = 3  metric perplexity(a) }\n"
        + "eval e_tuned = evaluate(tuned, rows) { prompt = ask  max_tokens = 3\n"
        + "  metric perplexity(a) }\n"
    )


def prompt_text(question: str, thinking: bool) -> str:
    text = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    return text if thinking else text + "<think></think>\n"


def scores(model, tokenizer, prompt: str, target: str):
    """float64 log-softmax of ``model`` at the positions before each token of ``target``
    (tokenized on its own), after ``prompt``; and those tokens."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t = tokenizer(target, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + t])).logits[0].double()
    return torch.log_softmax(logits[len(p) - 1 : len(p) + len(t) - 1], -1), torch.tensor(t)


def perplexity(model, tokenizer, thinking: bool) -> float:
    nll, count = 0.0, 0
    for row in ROWS:
        logp, tokens = scores(model, tokenizer, prompt_text(row["q"], thinking), row["a"])
        nll -= float(logp.gather(-1, tokens[:, None]).sum())
        count += len(tokens)
    return math.exp(nll / count)


def cached(report, name: str) -> pa.Table:
    with pa.memory_map(str(Path(node(report, name)["output"]) / "data.arrow")) as source:
        return pa.ipc.open_stream(source).read_all()


def test_template_args_reach_teacher_logits_and_evaluate(tmp_path, tiny_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    teacher = AutoModelForCausalLM.from_pretrained(tiny_pair.teacher).double().eval()
    report = run_recipe(write_recipe(tmp_path, body(tiny_pair)))
    for name, thinking in (("on", True), ("off", False)):
        data = cached(report, name)
        for row, values in enumerate(ROWS):
            prompt = prompt_text(values["q"], thinking)
            logp, tokens = scores(teacher, tokenizer, prompt, values["a"] + tokenizer.eos_token)
            want_lps, want_ids = logp.topk(K, -1)
            assert data.column("topk_target_ids")[row].as_py() == tokens.tolist()
            np.testing.assert_array_equal(
                np.array(data.column("topk_ids")[row].as_py()), want_ids.numpy()
            )
            got = np.array(data.column("topk_logprobs")[row].as_py(), np.float64)
            np.testing.assert_allclose(got, want_lps.numpy(), atol=4e-3)
    assert cached(report, "on").column("topk_logprobs") != cached(report, "off").column(
        "topk_logprobs"
    )
    evaluations = {e["name"]: e["metrics"]["perplexity"] for e in report["evaluations"]}
    on, off = perplexity(teacher, tokenizer, True), perplexity(teacher, tokenizer, False)
    assert abs(on - off) > 1e-3 * on  # the argument changes what is scored
    assert evaluations["e_on"] == pytest.approx(on, rel=1e-5)
    assert evaluations["e_off"] == pytest.approx(off, rel=1e-5)
    tuned = AutoModelForCausalLM.from_pretrained(Path(node(report, "tuned")["output"]) / "model")
    tuned = tuned.double().eval()
    assert evaluations["e_tuned"] == pytest.approx(perplexity(tuned, tokenizer, False), rel=1e-4)
