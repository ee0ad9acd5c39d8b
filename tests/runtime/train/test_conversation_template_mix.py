"""A train's `chat_template_mix`: each row is rendered with the template arguments of one entry,
picked from (seed, row) by share; the learned tokens of every row follow its entry (counted by
hand from the pieces the template writes), the shares hold over many rows, and the checker
refuses a mix where it cannot act (KD0249)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kdlang.runtime.train.conversation import template_mix_pick

from kdlang.ir.training import TemplateArgsShare
from tests.check.support import diagnose, make_project
from tests.runtime.train.support import node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

TEMPLATE = """{% for m in messages %}<|im_start|>{{ m['role'] }}
{% if m['role'] == 'assistant' and not thinking %}Answer: {% endif %}{{ m['content'] }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""
"""ChatML that writes `Answer: ` before the assistant's turns unless `thinking`."""


def mix(*shares: float) -> list[TemplateArgsShare]:
    return [TemplateArgsShare(args={"thinking": i == 0}, share=s) for i, s in enumerate(shares)]


def test_picks_follow_the_shares_and_depend_on_seed_and_row_only():
    rows = 4000
    picks = [template_mix_pick(mix(0.3, 0.7), 11, i) for i in range(rows)]
    assert picks == [template_mix_pick(mix(0.3, 0.7), 11, i) for i in range(rows)]
    assert picks == [template_mix_pick(mix(3.0, 7.0), 11, i) for i in range(rows)]  # normalized
    spread = 4 * (rows * 0.3 * 0.7) ** 0.5  # four standard deviations of a binomial count
    assert abs(picks.count(0) - 0.3 * rows) < spread
    other = [template_mix_pick(mix(0.3, 0.7), 12, i) for i in range(rows)]
    assert other != picks
    assert {template_mix_pick(mix(1.0), 11, i) for i in range(50)} == {0}
    three = [template_mix_pick(mix(1.0, 1.0, 2.0), 5, i) for i in range(rows)]
    assert abs(three.count(2) - 0.5 * rows) < 4 * (rows * 0.25) ** 0.5


def test_each_row_learns_the_turns_its_arguments_render(tmp_path, tiny_pair):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    chats = [
        [
            {"role": "user", "content": f"What is {i} plus 7?"},
            {"role": "assistant", "content": f"{i} + 7 = {i + 7}."},
        ]
        for i in range(12)
    ]
    data = json.dumps([{"chat": chat} for chat in chats])
    body = (
        f'model teacher = hf("{tiny_pair.teacher}")\n'
        f'model student = hf("{tiny_pair.student}", chat_template = """{TEMPLATE}""")\n'
        f"dataset chats = inline({data}) {{ messages = chat }}\n"
        "train t {\n  student = student  teacher = teacher  data = chats  target = chat\n"
        "  chat_template_mix = [{args: {thinking: true}, share: 0.5},\n"
        "                       {args: {thinking: false}, share: 0.5}]\n"
        "  max_steps = 1  batch = 12\n  loss sft weight 1.0\n  loss forward_kl weight 1.0\n}\n"
    )
    report = run_recipe(write_recipe(tmp_path, body, seed=3))
    stats = node(report, "t")["stats"]
    picks = [template_mix_pick(mix(0.5, 0.5), 3, i) for i in range(len(chats))]
    assert stats["chat_template_mix"] == [picks.count(0), picks.count(1)]
    assert 0 < picks.count(0) < len(chats)  # both renderings occur among these rows

    def learned(chat, thinking: bool) -> int:
        text = ("" if thinking else "Answer: ") + chat[1]["content"] + "<|im_end|>\n"
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    expected = sum(learned(c, p == 0) for c, p in zip(chats, picks, strict=True))
    assert stats["target_tokens"] == expected
    assert expected > sum(learned(c, True) for c in chats)


def test_a_mix_is_refused_where_it_cannot_act(tmp_path: Path):
    make_project(tmp_path)
    text = (
        'model teacher = hf("models/teacher")\n'
        'model plain = hf("models/student", chat_template = none)\n'
        'model student = hf("models/student")\n'
        'dataset rows = inline([{q: "Hi", a: "Hello"}])\n'
        'prompt p = "{{ q }}"\n'
        "stage soft = teacher_logits(rows) { teacher = teacher  prompt = p  target = a }\n"
        "train a { student = plain  data = rows  prompt = p  target = a\n"
        "  chat_template_mix = [{args: {x: 1}, share: 1}]  loss sft weight 1 }\n"
        "train b { student = student  data = soft  prompt = p  target = a\n"
        "  chat_template_mix = [{args: {x: 1}, share: 1}]  loss forward_kl weight 1 }\n"
    )
    (tmp_path / "recipe.kd").write_text(text, encoding="utf-8")
    found = diagnose(tmp_path, text)
    assert [(d.code, d.span.line) for d in found] == [("KD0249", 8), ("KD0249", 10)]
    assert found[0].message == (
        "`chat_template_mix` picks chat template arguments per row, but the student `plain` "
        "has `chat_template = none`"
    )
    assert found[1].message == (
        "`chat_template_mix` renders rows with arguments the teacher of `soft` did not score "
        "them with"
    )
