"""A train whose target is a conversation, through ``kdlang run``: ``train_on`` decides which
tokens count (the target tokens of the run's stats against counts made by hand from the
ChatML pieces), and the student learns."""

from __future__ import annotations

import json

import pytest

from tests.runtime.train.support import metrics, models, node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

CHATS = [
    [
        {"role": "user", "content": "What is 12 plus 7?"},
        {"role": "assistant", "content": "12 + 7 = 19. #### 19"},
        {"role": "user", "content": "And 30 minus 4?"},
        {"role": "assistant", "content": "30 - 4 = 26. #### 26"},
    ],
    [
        {"from": "system", "value": "You are a helpful assistant."},
        {"from": "human", "value": "Write a short poem about the sea."},
        {"from": "gpt", "value": "The wind and the light of the morning."},
    ],
]


def hand_count(tokenizer, turns: list[dict], last_only: bool) -> int:
    """Tokens of the assistant turns with their `<|im_end|>\\n` (ChatML), tokenized alone."""
    contents = [
        t.get("content", t.get("value"))
        for t in turns
        if t.get("role", t.get("from")) in ("assistant", "gpt")
    ]
    if last_only:
        contents = contents[-1:]
    return sum(
        len(tokenizer(c + "<|im_end|>\n", add_special_tokens=False)["input_ids"]) for c in contents
    )


def test_train_on_decides_the_learned_tokens(tmp_path, tiny_pair):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    data = json.dumps([{"chat": chat} for chat in CHATS])
    body = f"dataset chats = inline({data}) {{ messages = chat }}\n"
    for mode in ("assistant", "last_assistant"):
        body += (
            f"train t_{mode} {{\n  student = student  teacher = teacher  data = chats  target = chat\n"
            f"  train_on = {mode}  max_steps = 20  batch = 2  lr = 3e-3\n"
            "  loss sft weight 1.0\n  loss forward_kl weight 1.0\n}\n"
        )
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + body))
    for mode in ("assistant", "last_assistant"):
        stats = node(report, f"t_{mode}")["stats"]
        expected = sum(hand_count(tokenizer, chat, mode == "last_assistant") for chat in CHATS)
        assert stats["target_tokens"] == expected, mode
        records = metrics(report, f"t_{mode}")
        assert all(r["tokens"] == expected for r in records)  # both rows in every step
        assert records[-1]["sft"] < 0.5 * records[0]["sft"]
