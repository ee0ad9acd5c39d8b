"""Every way lowering can fail, as a diagnostic: its code, its span, its message and help."""

from __future__ import annotations

import pytest

from kdlang.ir.sources import HFModel
from kdlang.ir.validation import Fields, validate
from kdlang.syntax.diagnostics import Collector
from kdlang.syntax.span import Span
from tests.ir.support import at, diagnostics, lowered, only, where

LABEL = "stage s = label(d) {{ teacher = t  prompt = p  {} }}"
TRAIN = "train t {{ student = s  data = d  {} }}"


# -- KD0102 unknown setting ------------------------------------------------------------------------


def test_unknown_setting_with_a_suggestion():
    source = LABEL.format("tempreature = 0.8")
    found = only(source)
    assert (found.code, found.message) == (
        "KD0102",
        "unknown setting `tempreature` for `label` operator",
    )
    assert at(found) == where(source, "tempreature")
    assert found.help == 'did you mean "temperature"?'


def test_unknown_setting_without_a_suggestion_lists_the_settings():
    found = only('recipe "r" { colour = "blue" }')
    assert found.code == "KD0102"
    assert found.help == "settings: title, seed, description"


def test_unknown_keyword_argument_points_at_the_keyword():
    source = 'model m = hf("x", revison = "main")'
    found = only(source)
    assert (found.code, found.help) == ("KD0102", 'did you mean "revision"?')
    assert at(found) == where(source, 'revison = "main"')


def test_unknown_loss_option_names_the_loss():
    found = only(TRAIN.format("loss jsd(bta = 0.5) weight 1"))
    assert (found.code, found.message) == ("KD0102", "unknown setting `bta` for loss `jsd`")
    assert found.help == 'did you mean "beta"?'


@pytest.mark.parametrize(
    ("loss", "option", "known"),
    [
        (
            "forward_kl",
            "beta = 0.9",
            "temperature, temperature_scale, topk_mass, reduction, infinite_logits",
        ),
        (
            "forward_kl",
            "alpha = 0.7",
            "temperature, temperature_scale, topk_mass, reduction, infinite_logits",
        ),
        (
            "tvd",
            "beta = 0.5",
            "temperature, temperature_scale, topk_mass, reduction, infinite_logits",
        ),
        (
            "jsd",
            "alpha = 0.2",
            "temperature, temperature_scale, topk_mass, reduction, infinite_logits, beta",
        ),
        (
            "skew_kl",
            "beta = 0.2",
            "temperature, temperature_scale, topk_mass, reduction, infinite_logits, alpha",
        ),
        ("sft", "temperature = 2", None),
    ],
)
def test_a_loss_accepts_the_options_of_its_own_kind_only(loss, option, known):
    source = TRAIN.format(f"loss {loss}({option}) weight 1")
    found = only(source)
    key = option.split()[0]
    assert (found.code, found.message) == ("KD0102", f"unknown setting `{key}` for loss `{loss}`")
    assert at(found) == where(source, option)
    if known is not None:
        assert found.help == f"settings: {known}"


@pytest.mark.parametrize(
    ("source", "key", "given_by"),
    [
        (TRAIN.format("losses = 3  loss sft weight 1"), "losses", "its `loss NAME weight W` lines"),
        (
            'stage f = filter(d) { rules = "x"  keep len(a) > 0 }',
            "rules",
            "its `keep`, `dedup` and `decontaminate` lines",
        ),
        (
            "eval e = evaluate(m, d) { prompt = p  metrics = 1  metric exact_match(output, a) }",
            "metrics",
            "its `metric EXPR` lines",
        ),
        (TRAIN.format("loss sft(weight = 3) weight 1"), "weight", "`weight W` after the loss's"),
        ('export t to "out" { path = "/" }', "path", '`export NAME to "PATH"`'),
        ('export t to "out" { train = u }', "train", '`export NAME to "PATH"`'),
    ],
)
def test_a_field_the_syntax_gives_is_no_setting(source, key, given_by):
    """A setting named like a field the declaration's lines or head give was silently replaced
    by them; it is an error at the setting."""
    found = [d for d in diagnostics(source) if d.code == "KD0102"]
    assert len(found) == 1, found
    assert found[0].message.startswith(f"`{key}` is not a setting: it is given by {given_by}")
    assert at(found[0])[:2] == where(source, f"{key} =")[:2]  # the setting (or keyword) itself


def test_statement_fields_are_not_offered_as_settings():
    found = only(TRAIN.format("loss sft weight 1  zzz = 1"))
    assert found.code == "KD0102" and found.help.startswith("settings: student, teacher, data")
    assert "losses" not in found.help.removeprefix("settings: ").split(", ")


def test_unknown_lora_option():
    source = 'model m = hf("x", lora = lora(rank = 8))'
    found = only(source)
    assert (found.code, found.message) == ("KD0102", "unknown setting `rank` for `lora`")
    assert at(found) == where(source, "rank = 8")


# -- KD0103 wrong type -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("samples", '"4"', "`samples` expects an integer, got a string"),
        ("samples", "2.5", "`samples` expects an integer, got a number"),
        ("samples", "true", "`samples` expects an integer, got a boolean"),
        ("temperature", '"hot"', "`temperature` expects a number, got a string"),
    ],
)
def test_wrong_scalar_types(setting, value, message):
    source = "stage s = label(d) { teacher = t  prompt = p  " + f"{setting} = {value}" + " }"
    found = only(source)
    assert (found.code, found.message) == ("KD0103", message)
    assert at(found) == where(source, value)


def test_number_for_a_reference():
    source = LABEL.format("").replace("teacher = t", "teacher = 0.8")
    found = only(source)
    assert (found.code, found.message) == (
        "KD0103",
        "`teacher`: expected the name of a declaration, got a number",
    )
    assert at(found) == where(source, "0.8")
    assert found.help == "The model that writes (a `model` declaration)."


def test_string_where_a_prompt_reference_is_expected():
    found = only('stage s = label(d) { teacher = t  prompt = "Q: {{ q }}" }')
    assert found.message == "`prompt`: expected the name of a declaration, got a string"


def test_dotted_name_is_no_symbol():
    found = only('model m = hf("x", dtype = torch.bfloat16)')
    assert found.code == "KD0103"
    assert "got the name `torch.bfloat16`" in found.message


def test_bad_symbol_with_a_suggestion():
    source = "stage s = expand(d) { teacher = t  column = q  method = self_instrct }"
    found = only(source)
    assert found.code == "KD0103"
    assert (
        found.message == "`method` must be one of 'self_instruct' or 'evol_instruct', got a string"
    )
    assert found.help == 'did you mean "self_instruct"?'
    assert at(found) == where(source, "self_instrct")


def test_wrong_item_in_a_list_points_at_the_item():
    source = 'stage s = judge(d) { judge = j  prompt = p  scale = [1, "ten"] }'
    found = only(source)
    assert (found.code, found.message) == ("KD0103", "`scale` expects a number, got a string")
    assert at(found) == where(source, '"ten"')


def test_wrong_container_types():
    assert only('dataset d = jsonl("x") { columns = "question" }').message == (
        "`columns` expects a list, got a string"
    )
    assert only('dataset d = jsonl("x") { shuffle = 1 }').message == (
        "`shuffle` expects true or false, got an integer"
    )


def test_nested_node_given_a_number():
    found = only('model m = hf("x", lora = 8)')
    assert found.message == "`lora` expects lora(...), got an integer"


def test_schedule_setting_given_a_string():
    found = only(TRAIN.format('loss sft weight "high"'))
    assert found.message == "`weight` expects a number, got a string"


def test_expression_in_a_setting():
    source = TRAIN.format("lr = base * 2  loss sft weight 1")
    found = only(source)
    assert (found.code, found.message) == (
        "KD0103",
        "an expression is not allowed in a setting; give a value",
    )
    assert at(found) == where(source, "base * 2")


def test_division_by_zero_is_no_constant():
    found = only(TRAIN.format("lr = 1 / 0  loss sft weight 1"))
    assert (found.code, found.message) == (
        "KD0104",
        "this arithmetic has no value: a division by zero",
    )


def test_expression_language_has_no_maps():
    mapped = only("stage f = filter(r) { keep x == {a: 1} }")
    assert mapped.message == "maps and `->` have no meaning in an expression"


def test_non_string_prompt():
    source = "prompt p = 42"
    found = only(source)
    assert (found.code, found.message) == ("KD0103", "a prompt is a string (usually triple-quoted)")
    assert at(found) == where(source, "42")


def test_secret_written_as_a_string():
    source = 'model m = openai("gpt", api_key = "sk-123")'
    found = only(source)
    assert found.code == "KD0103"
    assert 'env("NAME")' in found.message and "never written into a recipe" in found.message
    assert at(found) == where(source, '"sk-123"')


@pytest.mark.parametrize("call", ["env(KEY)", 'env("A", "B")', "env()", 'env(name = "K")'])
def test_env_takes_one_string(call):
    found = only(f'model m = openai("gpt", api_key = {call})')
    assert (found.code, found.message) == (
        "KD0103",
        '`api_key`: env() takes one string: env("NAME")',
    )


def test_dedup_and_decontaminate_methods():
    source = "stage f = filter(r) { dedup x by simhash }"
    found = only(source)
    assert (found.code, found.message, found.help) == (
        "KD0103",
        "expected `exact` or `minhash`",
        'did you mean "minhash"?',
    )
    assert at(found) == where(source, "simhash")
    assert only("stage f = filter(r) { decontaminate x against h by exact }").message == (
        "expected `ngram`"
    )


# -- KD0104 out of range ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "needle", "message"),
    [
        (TRAIN.format("epochs = -3  loss sft weight 1"), "-3", "`epochs` must be >= 1, got -3"),
        (TRAIN.format("lr = 0  loss sft weight 1"), "0", "`lr` must be > 0.0, got 0"),
        (LABEL.format("top_p = 1.2"), "1.2", "`top_p` must be <= 1.0, got 1.2"),
        (LABEL.format("top_p = 0"), "0", "`top_p` must be > 0.0, got 0"),
        (LABEL.format("temperature = -0.5"), "-0.5", "`temperature` must be >= 0.0, got -0.5"),
        (
            "stage s = teacher_logits(d) { teacher = t prompt = p target = x top_k = 0 }",
            "0",
            "`top_k` must be >= 1, got 0",
        ),
        (
            TRAIN.format("loss forward_kl weight 1 temperature 0"),
            "0",
            "`temperature` must be > 0.0, got 0",
        ),
        (TRAIN.format("loss jsd(beta = 1.5) weight 1"), "1.5", "`beta` must be <= 1.0, got 1.5"),
        (
            TRAIN.format("loss skew_kl(alpha = -0.1) weight 1"),
            "-0.1",
            "`alpha` must be >= 0.0, got -0.1",
        ),
        (TRAIN.format("loss sft weight -1"), "-1", "`weight` must be >= 0.0, got -1"),
        (
            TRAIN.format("on_policy = 2  loss sft weight 1"),
            "2",
            "`on_policy` must be <= 1.0, got 2",
        ),
        (TRAIN.format("loss dpo(beta = 0) weight 1"), "0", "`beta` must be > 0.0, got 0"),
        ('recipe "r" { seed = -1 }', "-1", "`seed` must be >= 0, got -1"),
        (
            'model m = hf("x", lora = lora(dropout = 1.0))',
            "1.0",
            "`dropout` must be < 1.0, got 1.0",
        ),
        (
            "stage f = filter(r) { dedup x by minhash(threshold = 1.5) }",
            "1.5",
            "`threshold` must be <= 1.0, got 1.5",
        ),
        (
            TRAIN.format("lr_schedule = cosine(warmup = 0)  loss sft weight 1"),
            "0",
            "`warmup` must be >= 1, got 0",
        ),
        (
            TRAIN.format("lr_schedule = linear(min_ratio = 2)  loss sft weight 1"),
            "2",
            "`min_ratio` must be <= 1.0, got 2",
        ),
        (
            TRAIN.format("loss sft weight linear(0 -> 1, over = 0)"),
            "linear(0 -> 1, over = 0)",
            "`over` must be >= 1, got 0",
        ),
        ('dataset d = jsonl("x", limit = 0)', "0", "`limit` must be >= 1, got 0"),
    ],
)
def test_values_out_of_range(source, needle, message):
    found = only(source)
    assert (found.code, found.message) == ("KD0104", message)
    assert at(found) == where(source, needle)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (LABEL.format('temperature = "0.8"'), "`temperature` expects a number, got a string"),
        (LABEL.format('top_p = "0.9"'), "`top_p` expects a number, got a string"),
        ('dataset d = jsonl("x", limit = "10")', "`limit` expects an integer, got a string"),
        ('dataset d = jsonl("x", limit = 10.0)', "`limit` expects an integer, got a number"),
        (
            'eval e = evaluate(t, d) { prompt = p  temperature = "0"  metric m }',
            "`temperature` expects a number, got a string",
        ),
        (
            TRAIN.format('lr_schedule = cosine(min_ratio = "0.1")  loss sft weight 1'),
            "`min_ratio` expects a number, got a string",
        ),
    ],
)
def test_numbers_are_never_read_from_strings(source, message):
    found = only(source)
    assert (found.code, found.message) == ("KD0103", message)


def test_list_length():
    source = TRAIN.format("betas = [0.9]  loss sft weight 1")
    found = only(source)
    assert (found.code, found.message) == ("KD0104", "`betas` takes at least 2 items, got 1")
    assert at(found) == where(source, "[0.9]")
    assert only("dataset d = inline([])").message == "`rows` takes at least 1 item, got 0"
    pair = only(TRAIN.format("loss hidden_mse(layers = [[1, 2, 3]]) weight 1"))
    assert pair.message == "`layers` takes at most 2 items, got 3"


def test_a_schedule_is_not_range_checked_here():
    # A schedule's whole path is checked against the setting's range later (KD0305).
    assert lowered(TRAIN.format("loss jsd(beta = linear(0.0 -> 2.0)) weight 1"))


# -- KD0105 missing --------------------------------------------------------------------------------


def test_missing_required_setting_points_at_the_name():
    source = "stage rationales = label(problems) { prompt = p }"
    found = only(source)
    assert (found.code, found.message) == ("KD0105", "`label` operator needs `teacher`")
    assert at(found) == where(source, "rationales")
    assert (
        found.help == "The model that writes (a `model` declaration); several: `teachers = [a, b]`."
    )


def test_train_needs_a_loss_and_still_reports_its_other_problems():
    source = "train distill { data = d }"
    found = diagnostics(source)
    assert [(d.code, d.message) for d in found] == [
        ("KD0105", "train `distill` has no `loss` line"),
        ("KD0105", "`train` needs `student`"),
    ]
    assert at(found[0]) == where(source, "distill")


def test_filter_needs_a_rule_and_eval_a_metric():
    assert only("stage f = filter(r) {}").message == "filter `f` has no rule"
    assert only("stage f = filter(r)").message == "filter `f` has no rule"
    assert only("eval e = evaluate(t, d) { prompt = p }").message == "eval `e` has no `metric` line"


def test_a_failed_rule_or_loss_is_reported_once():
    assert only("stage f = filter(r) { dedup x by minhash(threshold = 2) }").code == "KD0104"
    found = diagnostics(TRAIN.format("on_policy = 3  loss magic weight 1"))
    assert [d.code for d in found] == ["KD0104", "KD0108"]


# -- KD0106 duplicates -----------------------------------------------------------------------------


def test_setting_given_twice():
    source = LABEL.format("samples = 2  samples = 3")
    found = only(source)
    assert (found.code, found.message) == ("KD0106", "`samples` is set twice")
    assert at(found) == where(source, "samples", 2)
    assert found.notes[0][0] == "first set here"
    assert (found.notes[0][1].line, found.notes[0][1].column) == where(source, "samples")[:2]


def test_setting_given_as_argument_and_in_the_block():
    source = 'dataset d = jsonl("x", limit = 3) { limit = 4 }'
    found = only(source)
    assert found.code == "KD0106"
    assert at(found) == where(source, "limit", 2)


def test_keyword_argument_given_twice():
    source = 'model m = hf("x", dtype = auto, dtype = float32)'
    found = only(source)
    assert (found.code, found.message) == ("KD0106", "`dtype` is given twice")
    assert at(found) == where(source, "dtype = float32")


def test_loss_temperature_given_twice():
    source = TRAIN.format("loss tvd(temperature = 2) weight 1 temperature 3")
    found = only(source)
    assert (found.code, found.message) == ("KD0106", "temperature given twice")
    line, column, _, _ = where(source, "3 }")
    assert at(found) == (line, column, line, column + 1)


def test_loss_given_twice():
    source = TRAIN.format("loss sft weight 1  loss sft weight 2")
    found = only(source)
    assert (found.code, found.message) == ("KD0106", "loss `sft` appears twice")
    assert at(found) == where(source, "sft", 2)
    assert found.notes[0][1].column == where(source, "sft")[1]


# -- KD0101, KD0107, KD0108 unknown words ----------------------------------------------------------


def test_unknown_stage_operator():
    source = "stage s = lable(d) { teacher = t }"
    found = only(source)
    assert (found.code, found.message, found.help) == (
        "KD0101",
        "unknown stage operator `lable`",
        'did you mean "label"?',
    )
    assert at(found) == where(source, "lable")
    assert only("stage s = zzz(d)").help.startswith("operators: label, expand, curate")


def test_evaluate_is_no_stage_and_stages_are_no_eval():
    assert "eval NAME = evaluate(model, data)" in only("stage s = evaluate(t, d)").help
    found = only("eval e = label(t, d) { metric x }")
    assert (found.code, found.message, found.help) == (
        "KD0101",
        "unknown eval operator `label`",
        'did you mean "evaluate"?',
    )


def test_unknown_model_and_dataset_kinds():
    source = 'model m = huggingface("x")'
    found = only(source)
    assert (found.code, found.message, found.help) == (
        "KD0107",
        "unknown model kind `huggingface`",
        "models: hf, openai",
    )
    assert at(found) == where(source, "huggingface")
    assert only('dataset d = json("x")').help == 'did you mean "jsonl"?'
    not_a_call = only('model m = "Qwen/Qwen2.5"')
    assert (not_a_call.code, not_a_call.message) == (
        "KD0107",
        "a model is made by a call such as `hf(...)` or `openai(...)`",
    )


def test_unknown_loss():
    source = TRAIN.format("loss foward_kl weight 1")
    found = only(source)
    assert (found.code, found.message, found.help) == (
        "KD0108",
        "unknown loss `foward_kl`",
        'did you mean "forward_kl"?',
    )
    assert at(found) == where(source, "foward_kl")


# -- KD0109 statements in the wrong block ----------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "word", "help"),
    [
        (LABEL.format("keep len(output) > 3"), "keep", "`keep` lines belong in `filter` stages"),
        (
            TRAIN.format("metric m  loss sft weight 1"),
            "metric",
            "`metric` lines belong in `eval` blocks",
        ),
        (LABEL.format("loss sft weight 1"), "loss", "`loss` lines belong in `train` blocks"),
        ('recipe "r" { dedup x by exact }', "dedup", "`dedup` lines belong in `filter` stages"),
        ('export t to "x" { decontaminate x against y }', "decontaminate", None),
    ],
)
def test_statement_in_the_wrong_block(source, word, help):
    found = only(source)
    assert (found.code, found.message) == ("KD0109", f"`{word}` is not allowed here")
    assert found.span.column == where(source, word)[1]
    if help:
        assert found.help == help


# -- KD0110 schedules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "message"),
    [
        (
            "exponential(1 -> 0)",
            "unknown schedule `exponential`; schedules: constant, linear, cosine, step, warmup",
        ),
        ("linear(0, 1)", "`linear` takes a transition: linear(a -> b, ...)"),
        ("linear(0 -> 1, ovr = 30%)", "`linear` has no argument `ovr`"),
        ("step(1 -> 0)", "`step` needs `at = N%` or a step count"),
        ("step(1 -> 0, over = 5)", "`step` has no argument `over`"),
        ('cosine("a" -> 0)', "schedule ends must be numbers"),
        ("constant(0 -> 1)", "`constant` takes one number: constant(v)"),
        ("warmup()", "`warmup` takes one number: warmup(v)"),
    ],
)
def test_bad_schedules(weight, message):
    source = TRAIN.format(f"loss sft weight {weight}")
    found = only(source)
    assert (found.code, found.message) == ("KD0110", message)
    assert at(found) == where(source, weight)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "exponential",
            "unknown learning-rate schedule `exponential`; use constant, linear or cosine",
        ),
        ("cosine(5%)", "learning-rate schedules take keywords only: cosine(warmup = 5%)"),
    ],
)
def test_bad_learning_rate_schedules(value, message):
    source = TRAIN.format(f"lr_schedule = {value}  loss sft weight 1")
    found = only(source)
    assert (found.code, found.message) == ("KD0110", message)
    assert at(found) == where(source, value)


# -- KD0111, KD0112, KD0202 ------------------------------------------------------------------------


def test_second_recipe_header_points_at_its_head():
    source = 'recipe "a" { seed = 1 }\nrecipe "b" {\n  seed = 2\n}'
    found = only(source)
    assert found.code == "KD0111"
    assert at(found) == where(source, 'recipe "b"')
    assert (found.notes[0][1].line, found.notes[0][1].column) == (1, 1)


def test_operator_arguments():
    two = "stage s = label(problems, solve) { teacher = t }"
    found = only(two)  # the prompt it lacks is explained by the extra argument: one error
    assert (found.code, found.message) == (
        "KD0112",
        "`label` takes 1 positional argument(s): input",
    )
    assert at(found) == where(two, "solve")
    none = "stage s = label() { teacher = t  prompt = p }"
    found = only(none)
    assert (found.code, found.message) == ("KD0112", "`label` needs its `input` argument")
    assert at(found) == where(none, "label()")
    assert only("eval e = evaluate(t) { prompt = p metric m }").message == (
        "`evaluate` needs its `data` argument"
    )


def test_keyword_only_calls():
    source = TRAIN.format("loss jsd(0.5) weight 1")
    found = only(source)
    assert (found.code, found.message) == (
        "KD0112",
        "loss `jsd` takes keyword options only, e.g. `loss jsd(beta = 0.5)`",
    )
    assert at(found) == where(source, "0.5")
    assert only('model m = hf("x", lora = lora(8))').message == "`lora` takes keyword arguments"
    assert only("stage f = filter(r) { dedup x by minhash(0.9) }").message == (
        "`minhash` takes keyword arguments"
    )


def test_duplicate_declaration():
    source = 'model teacher = hf("a")\ndataset teacher = jsonl("b")'
    found = only(source)
    assert (found.code, found.message) == ("KD0202", "`teacher` is declared twice")
    assert at(found) == where(source, "teacher", 2)
    assert found.notes == (("first declared here", found.notes[0][1]),)
    assert found.notes[0][1].line == 1


def test_every_error_of_a_file_is_collected():
    source = (
        'model m = hf("x", dtpye = auto)\n'
        "stage s = lable(d)\n"
        "train t { student = m  data = d  epochs = 0  loss sft weight 1 }\n"
    )
    assert [(d.code, d.span.line) for d in diagnostics(source)] == [
        ("KD0102", 1),
        ("KD0101", 2),
        ("KD0104", 3),
    ]


def test_validate_reports_against_the_subject_when_a_value_has_no_span():
    errors = Collector()
    subject = Span("f.kd", 3, 7, 3, 12)
    fields = Fields()
    fields.add("path", 42, Span("f.kd", 3, 20, 3, 22))
    assert validate(HFModel, fields, subject, subject, errors) is None
    (found,) = errors.diagnostics
    assert (found.code, found.span) == ("KD0103", Span("f.kd", 3, 20, 3, 22))
    errors = Collector()
    assert validate(HFModel, Fields(), subject, subject, errors) is None
    assert [(d.code, d.span) for d in errors.diagnostics] == [("KD0105", subject)]
