"""Conversation columns in the checker: typed `messages` from files and declarations, the
conversation settings of datasets (KD0240, KD0241, unknown roles), and conversations where text
is required (KD0211) or text where a conversation is (KD0242), trains that cannot learn one
(KD0243, KD0313)."""

from __future__ import annotations

from pathlib import Path

from kdlang.check import load_checked
from tests.check.support import diagnose, found, jsonl, only, write

HEAD = 'model teacher = hf("models/teacher")\nmodel student = hf("models/student")\n'
"""Two models, lines 1 and 2."""

CANONICAL = [
    {
        "id": 1,
        "chat": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
        ],
    }
]
SHAREGPT = [
    {
        "id": 1,
        "conversations": [
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!"},
        ],
    }
]
CUSTOM = [{"id": 1, "dialog": [{"speaker": "asker", "text": "Hi"}]}]


def setup(project: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    write(
        project,
        {
            "data/canonical.jsonl": jsonl(CANONICAL),
            "data/sharegpt.jsonl": jsonl(SHAREGPT),
            "data/custom.jsonl": jsonl(CUSTOM),
            "data/chat.csv": 'id,chat\n1,"[{""role"": ""user"", ""content"": ""Hi""}]"\n',
        },
    )
    pq.write_table(pa.Table.from_pylist(SHAREGPT), project / "data" / "sharegpt.parquet")


def schemas(project: Path, text: str) -> dict:
    setup(project)
    write(project, {"recipe.kd": text})
    program, warnings = load_checked(str(project / "recipe.kd"))
    assert warnings == []
    return program.schemas


def check(project: Path, text: str) -> list:
    setup(project)
    return diagnose(project, text)


# -- the `messages` type -------------------------------------------------------------------------


def test_conversations_are_typed_from_every_layout_and_declaration(project: Path):
    text = (
        'dataset a = jsonl("data/canonical.jsonl")\n'
        'dataset b = jsonl("data/sharegpt.jsonl")\n'
        'dataset c = parquet("data/sharegpt.parquet")\n'
        'dataset d = jsonl("data/custom.jsonl") { messages = dialog  role_key = "speaker"\n'
        '  content_key = "text"  roles = {asker: user} }\n'
        'dataset e = csv("data/chat.csv") { columns = {id: int, chat: messages} }\n'
        'dataset f = inline([{turns: [{role: "user", content: "Hi"}], tags: ["x"]}])\n'
    )
    found_schemas = schemas(project, text)
    assert found_schemas["a"] == {"id": "int", "chat": "messages"}
    assert found_schemas["b"] == {"id": "int", "conversations": "messages"}
    assert found_schemas["c"] == {"id": "int", "conversations": "messages"}
    assert found_schemas["d"] == {"id": "int", "dialog": "messages"}
    assert found_schemas["e"] == {"id": "int", "chat": "messages"}
    assert found_schemas["f"] == {"turns": "messages", "tags": "list"}


def test_a_column_of_turns_in_some_rows_and_other_lists_in_others_is_a_list(project: Path):
    rows = [{"x": [{"role": "user", "content": "Hi"}]}, {"x": [1, 2]}]
    write(project, {"data/mixed.jsonl": jsonl(rows)})
    assert schemas(project, 'dataset m = jsonl("data/mixed.jsonl")\n')["m"] == {"x": "list"}


# -- dataset settings ----------------------------------------------------------------------------


def test_messages_must_name_a_column_of_the_data(project: Path):
    text = 'dataset d = jsonl("data/custom.jsonl") { messages = dialogue }\n'
    d = only(check(project, text), "KD0240")
    assert d.message == (
        "`messages` names column `dialogue` as a conversation, which dataset `d` does not have"
    )
    assert (d.span.line, d.span.column) == (1, text.index("dialogue") + 1)
    assert d.help == 'did you mean "dialog"?'


def test_a_conversation_column_must_hold_turns(project: Path):
    text = 'dataset d = jsonl("data/custom.jsonl") { messages = id }\n'
    d = only(check(project, text), "KD0240")
    assert d.message == (
        "`messages` names column `id` as a conversation, but it holds integers, not turns"
    )
    text = 'dataset d = jsonl("data/custom.jsonl") { columns = {id: messages, dialog: list} }\n'
    d = only(check(project, text), "KD0240")
    assert d.message == (
        "`columns` names column `id` as a conversation, but it holds integers, not turns"
    )
    assert (d.span.line, d.span.column) == (1, text.index("{id") + 1)


def test_turn_keys_need_a_conversation_column(project: Path):
    text = (
        'dataset d = jsonl("data/custom.jsonl") { role_key = "speaker"  roles = {asker: user} }\n'
    )
    diagnostics = check(project, text)
    assert found(diagnostics) == [
        ("KD0241", 1, text.index('"speaker"') + 1),
        ("KD0241", 1, text.index("{asker") + 1),
    ]
    assert diagnostics[0].message == (
        "`role_key` says how conversation turns are read, but dataset `d` names no "
        "conversation column"
    )


def test_an_unknown_role_is_a_value_error_with_a_suggestion(project: Path):
    text = 'dataset d = jsonl("data/custom.jsonl") { messages = dialog  roles = {asker: usr} }\n'
    d = only(check(project, text), "KD0103")
    assert "must be one of 'system', 'user', 'assistant' or 'tool'" in d.message
    assert d.help == 'did you mean "user"?'
    assert (d.span.line, d.span.column) == (1, text.index("usr") + 1)


# -- a conversation where text is required, and the reverse --------------------------------------

CHAT = 'dataset chats = jsonl("data/canonical.jsonl")\n'  # line 3


def test_a_prompt_printing_a_conversation_names_its_type(project: Path):
    text = (
        HEAD
        + CHAT
        + 'prompt p = "{{ chat }}"\nstage s = label(chats) { teacher = teacher  prompt = p }\n'
    )
    d = only(check(project, text), "KD0211")
    assert d.message == "prompt `p` prints `chat`, which holds a conversation, not text"


def test_a_teacher_logits_conversation_target_takes_no_prompt(project: Path):
    text = (
        HEAD
        + CHAT
        + (
            'prompt p = "{{ id }}"\n'
            "stage s = teacher_logits(chats) { teacher = teacher  prompt = p  target = chat }\n"
        )
    )
    d = only(check(project, text), "KD0245")
    assert d.message == (
        "`target` names the conversation `chat`, which brings its own user turns: a `prompt` "
        "would go unused"
    )


def test_filters_compare_the_text_of_conversations(project: Path):
    text = HEAD + CHAT + "stage s = filter(chats) {\n  dedup chat by exact\n}\n"
    assert check(project, text) == []  # the contents of its turns


def test_a_train_learns_a_conversation_target(project: Path):
    text = (
        HEAD
        + CHAT
        + (
            "train t { student = student  teacher = teacher  data = chats  target = chat\n"
            "  train_on = last_assistant\n"
            "  loss sft weight 1\n  loss forward_kl weight 1 }\n"
        )
    )
    assert check(project, text) == []


def test_train_on_needs_a_conversation_target(project: Path):
    text = (
        HEAD
        + CHAT
        + (
            'prompt p = "{{ q }}"\n'
            'dataset texts = inline([{q: "a", a: "b"}])\n'
            "train t { student = student  data = texts  prompt = p  target = a  train_on = all\n"
            "  loss sft weight 1 }\n"
        )
    )
    d = only(check(project, text), "KD0242")
    assert d.message == (
        "`train_on` picks the turns of a conversation, but `target` names `a`, which holds text"
    )
    line = text.splitlines()[5]
    assert (d.span.line, d.span.column) == (6, line.index("all") + 1)


def test_a_conversation_target_takes_no_prompt(project: Path):
    text = (
        HEAD
        + CHAT
        + (
            'prompt p = "{{ id }}"\n'
            "train t { student = student  teacher = teacher  data = chats  target = chat\n"
            "  prompt = p  on_policy = 0.5\n"
            "  loss forward_kl weight 1 }\n"
        )
    )
    diagnostics = check(project, text)  # on-policy sampling answers the last user turn
    assert [(d.code, d.span.line) for d in diagnostics] == [("KD0243", 6)]
    assert diagnostics[0].message.endswith("a `prompt` would go unused")


def test_a_conversation_target_cannot_read_a_text_cache(project: Path):
    text = (
        HEAD
        + CHAT
        + (
            'prompt p = "{{ id }}"\n'
            "stage soft = label(chats) { teacher = teacher  prompt = p }\n"
            "stage cache = teacher_logits(soft) { teacher = teacher  prompt = p  target = output }\n"
            "train t { student = student  data = cache  target = chat\n"
            "  loss forward_kl weight 1 }\n"
        )
    )
    d = only(check(project, text), "KD0243")
    assert d.message.startswith("`cache` holds the teacher's top-k cached over text targets")
    assert (d.span.line, d.span.column) == (7, text.splitlines()[6].index("chat") + 1)


def test_a_conversation_needs_a_student_with_a_chat_template(project: Path):
    text = (
        'model student = hf("models/student", chat_template = none)\n'
        + CHAT
        + ("train t { student = student  data = chats  target = chat\n  loss sft weight 1 }\n")
    )
    d = only(check(project, text), "KD0313")
    assert d.message == (
        "`target` names the conversation `chat`, but the student `student` has "
        "`chat_template = none`"
    )


# -- chat templates on models ---------------------------------------------------------------------

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] }}"
    "{{ '<|im_end|>\\n' }}{% endfor %}"
)


def test_a_template_file_is_read_into_the_ir(project: Path):
    write(project, {"templates/chatml.jinja": CHATML})
    text = 'model student = hf("models/student", chat_template = "templates/chatml.jinja")\n'
    write(project, {"recipe.kd": text})
    program, warnings = load_checked(str(project / "recipe.kd"))
    assert warnings == []
    assert program.recipe.models["student"].chat_template == CHATML


def test_a_missing_template_file(project: Path):
    text = 'model student = hf("models/student", chat_template = "templates/absent.jinja")\n'
    d = only(diagnose(project, text), "KD0314")
    assert d.message == "chat template file not found: templates/absent.jinja"
    assert (d.span.line, d.span.column) == (1, text.index('"templates') + 1)


def test_a_template_that_is_no_jinja(project: Path):
    write(project, {"templates/broken.jinja": "{% for m in messages %}\n{{ m['content'] }}\n"})
    text = 'model a = hf("models/student", chat_template = "templates/broken.jinja")\n'
    text += 'model b = hf("models/student", chat_template = """{{ messages[0] }"""\n)\n'
    diagnostics = diagnose(project, text)
    assert [(d.code, d.span.line) for d in diagnostics] == [("KD0315", 1), ("KD0315", 2)]
    assert diagnostics[0].message.startswith(
        "the chat template of `a` is no valid Jinja (line 2 of templates/broken.jinja): "
    )
    assert "(line 1 of the template)" in diagnostics[1].message


def test_generation_markers_and_loop_controls_parse(project: Path):
    template = (
        "{% for m in messages %}{% if m['role'] == 'tool' %}{% continue %}{% endif %}"
        "{% generation %}{{ m['content'] }}{% endgeneration %}{% endfor %}"
    )
    text = f'model m = hf("models/student", chat_template = """{template}""")\n'
    assert diagnose(project, text) == []


def test_template_args_are_accepted_in_teacher_logits_and_evaluate(project: Path):
    text = (
        'model teacher = hf("models/teacher", chat_template_args = {enable_thinking: false})\n'
        'dataset problems = jsonl("data/train.jsonl")\n'
        'prompt p = "{{ question }}"\n'
        "stage soft = teacher_logits(problems) { teacher = teacher  prompt = p  target = answer }\n"
        "stage answers = label(problems) { teacher = teacher  prompt = p }\n"
        "eval score = evaluate(teacher, problems) { prompt = p  metric exact_match(output, answer) }\n"
    )
    assert diagnose(project, text) == []


# -- label answering a conversation ---------------------------------------------------------------


def test_a_label_answering_a_conversation_writes_one(project: Path):
    text = (
        HEAD
        + CHAT
        + "stage answers = label(chats) { teacher = teacher  messages = chat  turns = each\n"
        + "  answer = last_reply }\n"
    )
    assert schemas(project, text)["answers"] == {
        "id": "int",
        "chat": "messages",
        "output": "messages",
        "last_reply": "str",
    }
    # which a train then learns
    text += "train t { student = student  data = answers  target = output\n  loss sft weight 1 }\n"
    assert check(project, text) == []


def test_a_label_takes_a_prompt_or_messages(project: Path):
    text = HEAD + CHAT + 'prompt p = "{{ id }}"\n'
    both = text + "stage s = label(chats) { teacher = teacher  messages = chat  prompt = p }\n"
    d = only(check(project, both), "KD0244")
    assert d.message == "the stage answers the conversations of `chat`: a `prompt` would go unused"
    neither = text + "stage s = label(chats) { teacher = teacher  turns = last  prompt = p }\n"
    d = only(check(project, neither), "KD0244")
    assert d.message.startswith("`turns` says which turns of a conversation the teacher writes")
    answer = text + "stage s = label(chats) { teacher = teacher  prompt = p  answer = a }\n"
    d = only(check(project, answer), "KD0244")
    assert d.message == (
        "`answer` writes the teacher's last turn of a conversation, but the stage names no "
        "`messages` column"
    )
    bare = HEAD + CHAT + "stage s = label(chats) { teacher = teacher }\n"
    d = only(check(project, bare), "KD0105")
    assert d.message == "`label` needs `prompt` (or `messages`, a conversation column to answer)"


def test_turns_each_takes_one_sample_and_messages_a_conversation(project: Path):
    text = (
        HEAD
        + CHAT
        + (
            "stage s = label(chats) { teacher = teacher  messages = chat  turns = each  samples = 2 }\n"
        )
    )
    assert only(check(project, text), "KD0244").message.startswith("`turns = each` writes")
    text = HEAD + CHAT + "stage s = label(chats) { teacher = teacher  messages = id }\n"
    d = only(check(project, text), "KD0242")
    assert d.message == "`messages` names `id`, which holds integers, not a conversation"
    text = HEAD + CHAT + "stage s = label(chats) { teacher = teacher  messages = chats }\n"
    assert only(check(project, text), "KD0205").help == 'did you mean "chat"?'


def test_a_teacher_answering_conversations_needs_chat(project: Path):
    for model, setting in (
        ('hf("models/teacher", chat_template = none)', "chat_template = none"),
        ('openai("gpt-4o-mini", chat = false)', "chat = false"),
    ):
        text = f"model teacher = {model}\n" + CHAT
        text += "stage s = label(chats) { teacher = teacher  messages = chat }\n"
        d = only(check(project, text), "KD0313")
        assert d.message == (
            f"the stage answers the conversations of `chat`, but the teacher `teacher` has "
            f"`{setting}`"
        )
