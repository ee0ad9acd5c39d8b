"""`evaluate` on conversations: the model answers each conversation up to its last user turn
(the perplexity of a reference after it equals one computed by hand in float64 from the
ChatML text; its answers equal those to the same question asked as a text prompt), and
`dedup` / `decontaminate` compare the text of a conversation's turns."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.runtime.stages.support import node, rows, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

CHATS = [
    {
        "chat": [
            {"role": "user", "content": "What is 12 plus 7?"},
            {"role": "assistant", "content": "12 + 7 = 19."},
            {"role": "user", "content": "And 30 minus 4?"},
            {"role": "assistant", "content": "30 - 4 = 26."},
        ],
        "reference": "30 - 4 = 26. #### 26",
    },
    {
        "chat": [
            {"role": "system", "content": "You are a poet."},
            {"role": "user", "content": "Write a short poem about the sea."},
        ],
        "reference": "The wind and the light of the morning.",
    },
]
QUESTIONS = ["What is 12 plus 7?", "Write a short poem about the sea."]


def chatml(turns) -> str:
    """What the tiny tokenizer's template renders, written out by hand, generation prompt
    included."""
    text = "".join(f"<|im_start|>{t['role']}\n{t['content']}<|im_end|>\n" for t in turns)
    return text + "<|im_start|>assistant\n"


def hand_perplexity(model, tokenizer) -> float:
    nll, count = 0.0, 0
    for row in CHATS:
        turns = row["chat"]
        asked = turns[:-1] if turns[-1]["role"] == "assistant" else turns
        p = tokenizer(chatml(asked), add_special_tokens=False)["input_ids"]
        t = tokenizer(row["reference"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + t])).logits[0].double()
        logp = torch.log_softmax(logits[len(p) - 1 : len(p) + len(t) - 1], -1)
        nll -= float(logp.gather(-1, torch.tensor(t)[:, None]).sum())
        count += len(t)
    return math.exp(nll / count)


def predictions(report, name: str) -> list[dict]:
    folder = Path(node(report, name)["output"])
    lines = (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_evaluate_answers_the_last_user_turn(tmp_path, tiny_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    singles = [{"chat": [{"role": "user", "content": q}]} for q in QUESTIONS]
    texts = ", ".join(f'{{q: "{q}"}}' for q in QUESTIONS)
    body = (
        f'model teacher = hf("{tiny_pair.teacher}")\n'
        f"dataset chats = inline({json.dumps(CHATS)}) {{ messages = chat }}\n"
        f"dataset singles = inline({json.dumps(singles)}) {{ messages = chat }}\n"
        f"dataset texts = inline([{texts}])\n"
        'prompt ask = "{{ q }}"\n'
        "eval multi = evaluate(teacher, chats) { messages = chat  max_tokens = 5\n"
        "  metric perplexity(reference)\n"
        "  metric same = output == last(chat).content }\n"
        "eval single = evaluate(teacher, singles) { messages = chat  max_tokens = 5\n"
        "  metric long = len(output) }\n"
        "eval plain = evaluate(teacher, texts) { prompt = ask  max_tokens = 5\n"
        "  metric long = len(output) }\n"
    )
    report = run_recipe(write_recipe(tmp_path, body))
    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    model = AutoModelForCausalLM.from_pretrained(tiny_pair.teacher).double().eval()
    metrics = {e["name"]: e["metrics"] for e in report["evaluations"]}
    assert metrics["multi"]["perplexity"] == pytest.approx(
        hand_perplexity(model, tokenizer), rel=1e-5
    )
    assert [p["output"] for p in predictions(report, "single")] == [
        p["output"] for p in predictions(report, "plain")
    ]
    assert metrics["single"]["long"] == metrics["plain"]["long"]
    assert all(
        p["chat"] == row["chat"] for p, row in zip(predictions(report, "multi"), CHATS, strict=True)
    )


def test_dedup_and_decontaminate_compare_the_turns_text(tmp_path):
    def chat(*contents, roles=("user", "assistant")):
        return [{"role": r, "content": c} for r, c in zip(roles, contents, strict=True)]

    data = [
        {"id": 0, "chat": chat("Name a colour.", "Blue is a colour.")},
        {"id": 1, "chat": chat("Name a colour.", "Blue  is a colour.", roles=("system", "user"))},
        {"id": 2, "chat": chat("Name a fruit.", "A pear is a sweet fruit.")},
        {"id": 3, "chat": chat("Count the legs of a spider for me.", "Eight.")},
    ]
    # n-grams of the turns' text only: one across two turns, none of the roles' names
    bench = [{"chat": "role user content name a"}, {"chat": "so a spider for me eight"}]
    body = (
        f"dataset chats = inline({json.dumps(data)}) {{ messages = chat }}\n"
        f"dataset bench = inline({json.dumps(bench)})\n"
        "stage unique = filter(chats) {\n  dedup chat by exact\n}\n"
        "stage clean = filter(chats) {\n  decontaminate chat against bench by ngram(n = 5)\n}\n"
        "stage near = filter(chats) {\n  dedup chat by minhash(threshold = 0.9, ngram = 2)\n}\n"
    )
    report = run_recipe(write_recipe(tmp_path, body))
    assert [r["id"] for r in rows(report, "unique")] == [0, 2, 3]  # 1: 0's text, other roles
    assert [r["id"] for r in rows(report, "clean")] == [0, 1, 2]
    assert [r["id"] for r in rows(report, "near")] == [0, 2, 3]
    assert rows(report, "unique")[0]["chat"] == data[0]["chat"]  # kept as a conversation
