"""Prompt-only data for on-policy training: with `on_policy = 1` a train needs no target
column; a conversation is answered from its last user turn (an assistant turn after it is not
read), so a text prompt, a prompt-only conversation and a full one train step for step alike."""

from __future__ import annotations

import json

import pytest
from kdlang.runtime.train.conversation import ConversationError, sampling_prompt

from tests.runtime.train.support import metrics, models, run_recipe, write_recipe
from tests.runtime.train.test_conversation_mask import pieces_to_mask

pytestmark = pytest.mark.timeout(300)

QUESTIONS = ["What is 12 plus 7?", "Write a short poem about the sea."]
ANSWERS = ["12 + 7 = 19. #### 19", "The wind and the light of the morning."]


def test_the_student_answers_the_last_user_turn(tiny_pair):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    turns = [
        {"role": "user", "content": "What is 12 plus 7?"},
        {"role": "assistant", "content": "19."},
        {"role": "user", "content": "And 30 minus 4?"},
        {"role": "assistant", "content": "26."},
    ]
    text = (
        "<|im_start|>user\nWhat is 12 plus 7?<|im_end|>\n<|im_start|>assistant\n19.<|im_end|>\n"
        "<|im_start|>user\nAnd 30 minus 4?<|im_end|>\n<|im_start|>assistant\n"
    )
    expected, _ = pieces_to_mask(tokenizer, [(text, False)])
    assert sampling_prompt(tokenizer, turns, 512) == expected
    assert sampling_prompt(tokenizer, turns[:3], 512) == expected  # prompt-only: the same
    assert sampling_prompt(tokenizer, turns, 16) == expected[-8:]  # half the budget, its end
    with pytest.raises(ConversationError, match="no user turn"):
        sampling_prompt(tokenizer, [{"role": "system", "content": "Be brief."}], 512)


def test_text_and_conversation_prompts_train_alike_without_targets(tmp_path, tiny_pair):
    asks = [{"chat": [{"role": "user", "content": q}]} for q in QUESTIONS]
    full = [
        {"chat": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in zip(QUESTIONS, ANSWERS, strict=True)
    ]
    texts = ", ".join(f'{{q: "{q}"}}' for q in QUESTIONS)
    common = (
        "teacher = teacher  on_policy = 1  max_new_tokens = 6  max_steps = 3  batch = 2\n"
        "  lr = 3e-3\n  loss forward_kl weight 1.0\n"
    )
    body = (
        f"dataset texts = inline([{texts}])\n"
        f"dataset asks = inline({json.dumps(asks)}) {{ messages = chat }}\n"
        f"dataset full = inline({json.dumps(full)}) {{ messages = chat }}\n"
        'prompt ask = "{{ q }}"\n'
        f"train from_text {{ student = student  data = texts  prompt = ask  {common}}}\n"
        f"train from_asks {{ student = student  data = asks  target = chat  {common}}}\n"
        f"train from_full {{ student = student  data = full  target = chat  {common}}}\n"
    )
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + body))
    reference = metrics(report, "from_text")
    assert all(r["on_policy_batch"] for r in reference)
    assert all(0 < r["tokens"] <= 2 * 6 for r in reference)
    for name in ("from_asks", "from_full"):
        records = metrics(report, name)
        assert [r["tokens"] for r in records] == [r["tokens"] for r in reference], name
        for mine, theirs in zip(records, reference, strict=True):
            assert mine["forward_kl"] == pytest.approx(theirs["forward_kl"], rel=1e-6), name
