"""Compatibility between teachers, students, data and losses (KD0301 to KD0307), found before
any model is loaded: vocabularies are compared from the local tokenizer files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.check.support import HEADER, diagnose, found, only, write

PROMPT = 'prompt solve = "Q: {{ question }}"\n'  # line 5


def train(*lines: str, name: str = "distill") -> str:
    """A train block opening on line 6 (after HEADER and PROMPT); ``lines`` from line 7."""
    return f"train {name} {{\n" + "".join(f"  {line}\n" for line in lines) + "}\n"


def check(project: Path, *extra: str, overrides=()) -> list:
    return diagnose(project, HEADER + PROMPT + "".join(extra), list(overrides))


TRAIN_DATA = "student = student  data = problems  prompt = solve  target = answer"


@pytest.fixture(autouse=True)
def _server_url(monkeypatch):
    """The API models of these recipes read env("OPENAI_BASE_URL") or env("URL"): set, so that the only
    findings are the compatibility ones (an unset variable is a warning, KD0406)."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("URL", "http://127.0.0.1:9/v1")


def test_a_white_box_teacher_with_the_same_vocabulary_is_fine(project: Path):
    assert (
        check(project, train(TRAIN_DATA, "teacher = teacher", "loss forward_kl weight 1.0")) == []
    )


@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl", "jsd", "tvd", "skew_kl", "skew_rkl"])
def test_token_level_loss_with_a_black_box_teacher(project: Path, loss: str):
    extra = 'model api = openai("gpt-4o-mini", base_url = env("OPENAI_BASE_URL"))\n'
    # the openai model takes line 6, so the train opens on line 7
    d = only(
        check(project, extra, train(TRAIN_DATA, "teacher = api", f"loss {loss} weight 1.0")),
        "KD0301",
    )
    assert (d.span.line, d.span.column) == (10, 3)
    assert d.message.startswith(f"`{loss}` needs the teacher's logits, but `api` is a black-box")


def test_token_level_loss_without_any_teacher(project: Path):
    d = only(
        check(project, train(TRAIN_DATA, "loss sft weight 0.5", "loss tvd weight 1.0")), "KD0301"
    )
    assert (d.span.line, d.span.column) == (9, 3)
    assert d.message == "`tvd` needs a teacher distribution, and this train has none"


def test_sequence_level_kd_from_a_black_box_teacher_is_fine(project: Path):
    extra = (
        'model api = openai("gpt-4o-mini")\n'
        "stage answers = label(problems) { teacher = api  prompt = solve  output = rationale }\n"
    )
    block = train(
        "student = student  data = answers  prompt = solve  target = rationale",
        "loss sft weight 1.0",
    )
    assert check(project, extra, block) == []


def test_cached_top_k_logits_stand_in_for_the_teacher(project: Path):
    extra = "stage soft = teacher_logits(problems) { teacher = teacher  prompt = solve  target = answer }\n"
    block = train(
        "student = student  data = soft  prompt = solve  target = answer",
        "loss forward_kl weight 1.0",
    )
    assert check(project, extra, block) == []


def test_cached_top_k_logits_are_found_through_filters(project: Path):
    extra = (
        "stage soft = teacher_logits(problems) { teacher = teacher  prompt = solve  target = answer }\n"
        "stage short = filter(soft) { keep len(answer) < 10 }\n"
    )
    block = train(
        "student = student  data = short  prompt = solve  target = answer",
        "loss forward_kl weight 1.0",
    )
    assert check(project, extra, block) == []


@pytest.mark.parametrize(("chat", "expected"), [("true", ["KD0301"]), ("false", [])])
def test_top_k_of_given_targets_from_an_api_needs_the_completions_endpoint(
    project: Path, chat: str, expected: list
):
    extra = (
        f'model api = openai("served", base_url = env("URL"), chat = {chat})\n'
        "stage soft = teacher_logits(problems) { teacher = api  prompt = solve  target = answer }\n"
    )
    found_codes = [d.code for d in check(project, extra)]
    assert found_codes == expected
    if expected:
        d = only(check(project, extra), "KD0301")
        assert (d.span.line, d.span.column) == (7, 51)
        assert "chat = false" in d.help


def test_vocabulary_mismatch_from_local_tokenizer_files(project: Path):
    extra = 'model other = hf("models/other")\n'
    block = train(
        TRAIN_DATA.replace("student = student", "student = student  teacher = other"),
        "loss forward_kl weight 1.0",
    )
    d = only(check(project, extra, block), "KD0302")
    assert (d.span.line, d.span.column) == (8, 13)
    [(note, teacher)] = d.notes
    assert (note, teacher.line, teacher.column) == ("teacher declared here", 6, 1)


def test_vocabulary_mismatch_through_a_cached_teacher(project: Path):
    extra = (
        'model other = hf("models/other")\n'
        "stage soft = teacher_logits(problems) { teacher = other  prompt = solve  target = answer }\n"
    )
    block = train(
        "student = student  data = soft  prompt = solve  target = answer",
        "loss forward_kl weight 1.0",
    )
    assert found(check(project, extra, block)) == [("KD0302", 9, 13)]


def test_vocabulary_of_hub_models_is_left_to_the_runtime(project: Path):
    extra = 'model hub = hf("some-org/some-model", revision = "abc123")\n'
    block = train(
        TRAIN_DATA.replace("student = student", "student = student  teacher = hub"),
        "loss forward_kl weight 1.0",
    )
    assert check(project, extra, block) == []


def test_sft_needs_no_shared_vocabulary(project: Path):
    extra = 'model other = hf("models/other")\n'
    block = train(
        TRAIN_DATA.replace("student = student", "student = student  teacher = other"),
        "loss sft weight 1.0",
    )
    assert check(project, extra, block) == []


def test_on_policy_without_an_online_teacher(project: Path):
    extra = "stage soft = teacher_logits(problems) { teacher = teacher  prompt = solve  target = answer }\n"
    block = train(
        "student = student  data = soft  prompt = solve  target = answer",
        "on_policy = 0.5",
        "loss forward_kl weight 1.0",
    )
    d = only(check(project, extra, block), "KD0303")
    assert (d.span.line, d.span.column) == (9, 15)


def test_on_policy_with_an_online_teacher_is_fine(project: Path):
    block = train(
        TRAIN_DATA,
        "teacher = teacher  on_policy = linear(0.0 -> 0.5)",
        "loss jsd(beta = 0.5) weight 1.0",
    )
    assert check(project, block) == []


def test_dpo_without_pairs(project: Path):
    d = only(check(project, train(TRAIN_DATA, "loss dpo weight 1.0")), "KD0304")
    assert (d.span.line, d.span.column) == (7, 29)
    assert (
        d.message
        == "`loss dpo` needs chosen/rejected pairs, but `problems` has no `chosen`, `rejected`"
    )


def test_dpo_on_a_pairs_stage_is_fine(project: Path):
    extra = (
        'prompt rubric = "Rate {{ rationale }}"\n'
        "stage answers = label(problems) { teacher = teacher  prompt = solve  samples = 4  output = rationale }\n"
        "stage judged = judge(answers) { judge = teacher  prompt = rubric }\n"
        "stage prefs = pairs(judged) { group = question  response = rationale }\n"
    )
    block = train("student = student  data = prefs", "loss dpo(beta = 0.1) weight 1.0")
    assert check(project, extra, block) == []


@pytest.mark.parametrize(
    ("loss_line", "column", "message"),
    [
        (
            "loss jsd(beta = linear(0.5 -> 1.5)) weight 1.0",
            19,
            "the `beta` schedule goes from 0.5 to 1.5, but `beta` must stay >= 0.0 and <= 1.0",
        ),
        (
            "loss sft weight cosine(1.0 -> -0.5, over = 50%)",
            19,
            "the `weight` schedule goes from 1 to -0.5, but `weight` must stay >= 0.0",
        ),
        (
            "loss skew_kl(alpha = step(0.1 -> 2.0, at = 100)) weight 1.0",
            24,
            "the `alpha` schedule goes from 0.1 to 2, but `alpha` must stay >= 0.0 and <= 1.0",
        ),
        (
            "loss forward_kl weight 1.0 temperature linear(2.0 -> 0.0)",
            42,
            "the `temperature` schedule goes from 2 to 0, but `temperature` must stay > 0.0",
        ),
    ],
)
def test_schedule_leaving_its_range(project: Path, loss_line: str, column: int, message: str):
    d = only(check(project, train(TRAIN_DATA, "teacher = teacher", loss_line)), "KD0305")
    assert (d.span.line, d.span.column) == (9, column)
    assert d.message == message


def test_on_policy_schedule_leaving_its_range(project: Path):
    block = train(TRAIN_DATA, "teacher = teacher  on_policy = warmup(1.5)", "loss tvd weight 1.0")
    d = only(check(project, block), "KD0305")
    assert (d.span.line, d.span.column) == (8, 34)


def test_schedules_within_their_range_are_fine(project: Path):
    block = train(
        TRAIN_DATA,
        "teacher = teacher",
        "loss jsd(beta = cosine(0.0 -> 1.0)) weight warmup(1.0) temperature linear(2.0 -> 1.0)",
        "loss sft weight step(1.0 -> 0.0, at = 50%)",
    )
    assert check(project, block) == []


def test_hidden_state_loss_needs_an_online_teacher(project: Path):
    block = train(TRAIN_DATA, "loss hidden_mse(layers = [[1, 2]]) weight 1.0")
    d = only(check(project, block), "KD0306")
    assert (d.span.line, d.span.column) == (8, 3)
    assert d.message == "`hidden_mse` compares hidden states and needs an online `hf` teacher"


def test_hidden_state_loss_with_an_online_teacher_is_fine(project: Path):
    block = train(
        TRAIN_DATA, "teacher = teacher", "loss hidden_cosine(layers = [[1, 2], [3, 6]]) weight 0.1"
    )
    assert check(project, block) == []


@pytest.mark.parametrize(
    ("loss", "bad"),
    [
        ("reverse_kl", True),
        ("jsd(beta = 1.0)", True),
        ("jsd(beta = linear(0.0 -> 1.0))", True),
        ("jsd(beta = 0.9)", False),
        ("forward_kl", False),
        ("skew_rkl(alpha = 0.2)", False),
    ],
)
def test_cached_top_k_with_a_loss_it_makes_infinite(project: Path, loss: str, bad: bool):
    extra = "stage soft = teacher_logits(problems) { teacher = teacher  prompt = solve  target = answer }\n"
    block = train(
        "student = student  data = soft  prompt = solve  target = answer", f"loss {loss} weight 1.0"
    )
    diagnostics = check(project, extra, block)
    assert found(diagnostics) == ([("KD0307", 9, 3)] if bad else [])


def test_unreadable_tokenizer_files_leave_the_comparison_to_the_run(project: Path):
    (project / "models" / "other" / "tokenizer.json").write_text("{not json", encoding="utf-8")
    extra = 'model other = hf("models/other")\n'
    block = train(
        TRAIN_DATA.replace("student = student", "student = student  teacher = other"),
        "loss forward_kl weight 1.0",
    )
    assert check(project, extra, block) == []


def test_vocabularies_compared_from_vocab_json(project: Path):
    for name, vocab in (("gpt_a", '{"a": 0, "b": 1}'), ("gpt_b", '{"a": 0, "c": 1}')):
        write(project, {f"models/{name}/vocab.json": vocab, f"models/{name}/config.json": "{}"})
    extra = 'model a = hf("models/gpt_a")\nmodel b = hf("models/gpt_b")\n'
    block = train(
        "student = a  teacher = b  data = problems  prompt = solve  target = answer",
        "loss forward_kl weight 1.0",
    )
    assert found(check(project, extra, block)) == [("KD0302", 9, 13)]


@pytest.mark.parametrize(
    "declaration",
    [
        'model tutor = hf("models/teacher", dtype = "bf16")',  # a string where a name goes
        'model tutor = hf("models/teacher", dtype = bf16)',  # no such dtype
        'model tutor = hf("models/teacher", colour = 1)',  # no such setting
    ],
)
def test_an_error_in_a_named_teacher_causes_no_second_error(project: Path, declaration: str):
    """The teacher's own error is reported; the train naming it is not told it has none."""
    text = train(TRAIN_DATA, "teacher = tutor", "on_policy = 0.5", "loss forward_kl weight 1.0")
    diagnostics = check(project, declaration + "\n", text)
    assert len(diagnostics) == 1, [(d.code, d.message) for d in diagnostics]
    assert diagnostics[0].code in ("KD0102", "KD0103") and diagnostics[0].span.line == 6
