"""What `kdlang check` says of `teacher_logits` over conversations and of the trains reading
its cache (KD0245, KD0246), of prompt-only conversations trained on-policy, and of `evaluate`,
`dedup` and `decontaminate` over conversations."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.check.support import diagnose, jsonl, make_project, write

HEAD = 'model teacher = hf("models/teacher")\nmodel student = hf("models/student")\n'
CHAT = 'dataset chats = jsonl("data/chats.jsonl")\n'  # line 3
ROWS = [
    {
        "id": 1,
        "chat": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
        ],
        "reply": "Hello!",
    }
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_project(tmp_path)
    write(tmp_path, {"data/chats.jsonl": jsonl(ROWS)})
    return tmp_path


def codes(project: Path, text: str) -> list[tuple[str, int, str]]:
    return [(d.code, d.span.line, d.message) for d in diagnose(project, text)]


def test_a_conversation_cache_is_accepted(project: Path):
    text = (
        HEAD
        + CHAT
        + "stage soft = teacher_logits(chats) { teacher = teacher  target = chat  top_k = 4 }\n"
        + "train t { student = student  data = soft  target = chat  train_on = last_assistant\n"
        + "  loss forward_kl weight 1 }\n"
    )
    assert codes(project, text) == []


def test_a_text_target_still_needs_its_prompt(project: Path):
    text = (
        HEAD + CHAT + "stage soft = teacher_logits(chats) { teacher = teacher  target = reply }\n"
    )
    assert codes(project, text) == [
        (
            "KD0105",
            4,
            "`teacher_logits` needs `prompt`: `target` names `reply`, text that follows a prompt",
        )
    ]


def test_train_on_in_teacher_logits_needs_a_conversation(project: Path):
    text = (
        HEAD
        + CHAT
        + 'prompt p = "{{ id }}"\n'
        + "stage soft = teacher_logits(chats) { teacher = teacher  prompt = p  target = reply\n"
        + "  train_on = all }\n"
    )
    [(code, line, message)] = codes(project, text)
    assert (code, line) == ("KD0242", 6)
    assert message == (
        "`train_on` picks the turns of a conversation, but `target` names `reply`, which holds text"
    )


def test_a_black_box_teacher_cannot_score_a_conversation(project: Path):
    text = (
        'model api = openai("m", base_url = "http://localhost:1", chat = false)\n'
        + 'model student = hf("models/student")\n'
        + CHAT
        + "stage soft = teacher_logits(chats) { teacher = api  target = chat }\n"
    )
    [(code, line, message)] = codes(project, text)
    assert (code, line) == ("KD0245", 4)
    assert message.startswith("the teacher `api` scores text through the completions endpoint")


def test_a_cache_must_cover_what_the_train_learns(project: Path):
    text = (
        HEAD
        + CHAT
        + "stage soft = teacher_logits(chats) { teacher = teacher  target = chat\n"
        + "  train_on = last_assistant }\n"
        + "train a { student = student  data = soft  target = chat\n"
        + "  loss forward_kl weight 1 }\n"
        + "train b { student = student  data = soft  target = reply\n"
        + "  loss forward_kl weight 1 }\n"
    )
    assert codes(project, text) == [
        (
            "KD0246",
            6,
            "the train learns `train_on = assistant`, but `soft` scored the teacher on "
            "`train_on = last_assistant` tokens only",
        ),
        (
            "KD0246",
            8,
            "`soft` holds the teacher's top-k over the conversations of `chat`; the text "
            "target `reply` cannot be learned from it",
        ),
    ]


def test_an_on_policy_train_needs_no_target_but_something_to_answer(project: Path):
    text = (
        HEAD
        + 'dataset asks = inline([{q: "Hi"}])\n'
        + 'prompt p = "{{ q }}"\n'
        + "train a { student = student  teacher = teacher  data = asks  prompt = p\n"
        + "  on_policy = 1  loss forward_kl weight 1 }\n"
        + "train b { student = student  teacher = teacher  data = asks\n"
        + "  on_policy = 1  loss forward_kl weight 1 }\n"
        + "train c { student = student  teacher = teacher  data = asks  prompt = p\n"
        + "  on_policy = 0.5  loss forward_kl weight 1 }\n"
    )
    found = codes(project, text)
    assert [(code, line) for code, line, _ in found] == [("KD0247", 8), ("KD0205", 9)]
    assert found[0][2] == (
        "every batch of this train samples from the student (`on_policy = 1`), but it names "
        "nothing to prompt the student with"
    )
    assert "output" in found[1][2]  # half the batches learn the target: it must exist


def test_a_conversation_is_sampled_on_policy(project: Path):
    text = (
        HEAD
        + CHAT
        + "train t { student = student  teacher = teacher  data = chats  target = chat\n"
        + "  on_policy = 0.5  loss forward_kl weight 1 }\n"
    )
    assert codes(project, text) == []


def test_evaluate_answers_a_prompt_or_a_conversation(project: Path):
    text = (
        HEAD
        + CHAT
        + 'prompt p = "{{ id }}"\n'
        + "eval a = evaluate(teacher, chats) { messages = chat  metric exact_match(output, reply) }\n"
        + "eval b = evaluate(teacher, chats) { messages = chat  prompt = p\n"
        + "  metric exact_match(output, reply) }\n"
        + "eval c = evaluate(teacher, chats) { metric exact_match(output, reply) }\n"
        + "eval d = evaluate(teacher, chats) { messages = reply  metric exact_match(output, reply) }\n"
    )
    found = codes(project, text)
    assert [(code, line) for code, line, _ in found] == [
        ("KD0248", 6),
        ("KD0105", 8),
        ("KD0242", 9),
    ]
    assert found[0][2] == (
        "the evaluation answers the conversations of `chat`: a `prompt` would go unused"
    )
    assert found[1][2].startswith("`evaluate` needs `prompt` (or `messages`")
    assert found[2][2] == "`messages` names `reply`, which holds text, not a conversation"


def test_evaluate_on_a_conversation_needs_a_chat_template(project: Path):
    text = (
        'model plain = hf("models/teacher", chat_template = none)\n'
        + 'model student = hf("models/student", chat_template = none)\n'
        + CHAT
        + "train t { student = student  data = chats  target = reply  prompt = p\n"
        + "  loss sft weight 1 }\n"
        + 'prompt p = "{{ id }}"\n'
        + "eval a = evaluate(plain, chats) { messages = chat  metric exact_match(output, reply) }\n"
        + "eval b = evaluate(t, chats) { messages = chat  metric exact_match(output, reply) }\n"
    )
    found = codes(project, text)
    assert [(code, line) for code, line, _ in found] == [("KD0313", 7), ("KD0313", 8)]
    assert found[0][2] == (
        "the evaluation answers the conversations of `chat`, but `plain` has `chat_template = none`"
    )
    assert "but `student` has" in found[1][2]


def test_teacher_logits_on_a_conversation_needs_a_teacher_template(project: Path):
    text = (
        'model teacher = hf("models/teacher", chat_template = none)\n'
        + 'model student = hf("models/student")\n'
        + CHAT
        + "stage soft = teacher_logits(chats) { teacher = teacher  target = chat }\n"
    )
    assert codes(project, text) == [
        (
            "KD0313",
            4,
            "`target` names the conversation `chat`, but the teacher `teacher` has "
            "`chat_template = none`",
        )
    ]
