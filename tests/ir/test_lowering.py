"""Lowering each declaration kind to its IR: values, defaults, symbols, schedules, secrets, spans."""

from __future__ import annotations

import json

import pytest

from kdlang.ir import strip_spans
from kdlang.ir.expr import Apply, Between, BinOp, Column, Lit, Seq, UnOp, columns_used
from kdlang.ir.losses import DivergenceLoss, DPOLoss, HiddenLoss, JSDLoss, SFTLoss, SkewLoss
from kdlang.ir.selection import DecontaminateRule, DedupRule, KeepRule
from kdlang.ir.sources import CsvData, HFData, HFModel, InlineData, JsonlData, OpenAIModel
from kdlang.ir.values import EnvRef, LRSchedule, Percent, Ref, Schedule
from tests.ir.support import FILE, lowered, where


def pos(span) -> tuple[int, int, int, int]:
    return span.line, span.column, span.end_line, span.end_column


# -- recipe header, imports ------------------------------------------------------------------------


def test_recipe_header_and_defaults():
    assert lowered('recipe "r" {}').header.model_dump() == {
        "kind": "recipe",
        "title": "r",
        "seed": 0,
        "description": None,
    }
    header = lowered('recipe "arith" { seed = 1234  description = "one line" }').header
    assert (header.title, header.seed, header.description) == ("arith", 1234, "one line")


def test_recipe_without_header_takes_its_title_from_the_file():
    recipe = lowered('model m = hf("x")')
    assert recipe.header is None
    assert (recipe.title, recipe.seed, recipe.file) == ("r", 0, FILE)


def test_imports_are_recorded_with_their_spans():
    source = 'import "common.kd"\nimport "../shared/models.kd"'
    recipe = lowered(source)
    assert [i.path for i in recipe.imports] == ["common.kd", "../shared/models.kd"]
    assert pos(recipe.imports[1].span) == where(source, '"../shared/models.kd"')


# -- models ----------------------------------------------------------------------------------------


def test_hf_model_defaults():
    model = lowered('model teacher = hf("Qwen/Qwen2.5-1.5B")').models["teacher"]
    assert isinstance(model, HFModel)
    assert model.model_dump() == {
        "kind": "hf",
        "path": "Qwen/Qwen2.5-1.5B",
        "revision": None,
        "dtype": "auto",
        "device": "auto",
        "batch_size": 16,
        "decode_slots": None,
        "lora": None,
        "trust_remote_code": False,
        "attention": "auto",
        "chat_template": "auto",
        "chat_template_args": None,
    }


def test_symbols_and_strings_are_the_same_value():
    bare = lowered('model m = hf("x", dtype = bfloat16, device = cuda, chat_template = none)')
    quoted = lowered(
        'model m = hf("x", dtype = "bfloat16", device = "cuda", chat_template = "none")'
    )
    assert strip_spans(bare.models["m"]) == strip_spans(quoted.models["m"])
    assert (bare.models["m"].dtype, bare.models["m"].device) == ("bfloat16", "cuda")


def test_lora_is_a_nested_node():
    default = lowered('model s = hf("x", lora = lora())').models["s"].lora
    assert default.model_dump() == {
        "kind": "lora",
        "r": 8,
        "alpha": 16.0,
        "dropout": 0.0,
        "target_modules": None,
        "dora": False,
        "modules_to_save": None,
        "merge": True,
    }
    source = 'model s = hf("x", lora = lora(r = 16, alpha = 32, target_modules = ["q_proj", "v_proj"], merge = false))'
    lora = lowered(source).models["s"].lora
    assert (lora.r, lora.alpha, lora.target_modules, lora.merge) == (
        16,
        32.0,
        ["q_proj", "v_proj"],
        False,
    )
    assert pos(lora.span) == where(
        source, 'lora(r = 16, alpha = 32, target_modules = ["q_proj", "v_proj"], merge = false)'
    )


def test_model_settings_may_come_from_a_block_only_for_datasets():
    # Models take every setting as a keyword argument; datasets also from a block.
    recipe = lowered('dataset d = jsonl("x.jsonl") { limit = 5  shuffle = true }')
    assert (recipe.datasets["d"].limit, recipe.datasets["d"].shuffle) == (5, True)


def test_openai_model_with_secrets_from_the_environment():
    source = (
        'model judge = openai("gpt-4o-mini", base_url = env("OPENAI_BASE_URL"),\n'
        '                     api_key = env("OPENAI_API_KEY"), concurrency = 16)'
    )
    model = lowered(source).models["judge"]
    assert isinstance(model, OpenAIModel)
    assert model.api_key == EnvRef(env="OPENAI_API_KEY", span=model.api_key.span)
    assert model.base_url.env == "OPENAI_BASE_URL"
    assert pos(model.api_key.span) == where(source, 'env("OPENAI_API_KEY")')
    dumped = model.model_dump(mode="json")
    assert dumped["api_key"] == {"env": "OPENAI_API_KEY"}  # the name, never a value
    assert (dumped["concurrency"], dumped["timeout"], dumped["max_retries"], dumped["chat"]) == (
        16,
        60.0,
        6,
        True,
    )


def test_openai_base_url_may_be_a_plain_string():
    model = lowered('model m = openai("llama3", base_url = "http://localhost:8000/v1")').models["m"]
    assert model.base_url == "http://localhost:8000/v1"
    assert model.api_key is None


def test_secret_values_never_enter_the_ir(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    recipe = lowered('model m = openai("gpt", api_key = env("OPENAI_API_KEY"))')
    assert "sk-very-secret" not in json.dumps(strip_spans(recipe))
    assert "sk-very-secret" not in repr(recipe)


# -- datasets --------------------------------------------------------------------------------------


def test_file_datasets():
    recipe = lowered(
        'dataset a = jsonl("data/train.jsonl")\n'
        'dataset b = csv("data/x.csv", columns = [question, "answer"])\n'
        'dataset c = parquet("data/x.parquet") { limit = 100 }\n'
    )
    a, b, c = recipe.datasets["a"], recipe.datasets["b"], recipe.datasets["c"]
    assert isinstance(a, JsonlData) and a.model_dump() == {
        "kind": "jsonl",
        "path": "data/train.jsonl",
        "columns": None,
        "limit": None,
        "shuffle": False,
        "messages": None,
        "role_key": None,
        "content_key": None,
        "roles": None,
        "logits": None,
    }
    assert isinstance(b, CsvData) and b.columns == ["question", "answer"]  # bare names are names
    assert (c.kind, c.path, c.limit) == ("parquet", "data/x.parquet", 100)


def test_hub_dataset():
    data = lowered('dataset d = hf("openai/gsm8k", config = "main", split = "test")').datasets["d"]
    assert isinstance(data, HFData)
    assert (data.id, data.config, data.split, data.revision) == (
        "openai/gsm8k",
        "main",
        "test",
        None,
    )
    assert lowered('dataset d = hf("x")').datasets["d"].split == "train"


def test_inline_dataset_rows():
    source = (
        'dataset d = inline([{question: "2 + 3?", answer: 5}, {"question": "q", answer: [1, 2.5]}])'
    )
    data = lowered(source).datasets["d"]
    assert isinstance(data, InlineData)
    assert data.rows == [{"question": "2 + 3?", "answer": 5}, {"question": "q", "answer": [1, 2.5]}]


# -- prompts ---------------------------------------------------------------------------------------


def test_prompt_text_and_where_it_starts():
    source = (
        'recipe "r" {}\nprompt solve = """\nQ: {{ question }}\nA:"""\nprompt raw = r"\\d {{ x }}"'
    )
    recipe = lowered(source)
    solve, raw = recipe.prompts["solve"], recipe.prompts["raw"]
    assert solve.text == "\nQ: {{ question }}\nA:"
    assert (solve.origin, solve.raw) == ((2, 19), False)
    assert raw.text == "\\d {{ x }}"
    assert (raw.origin, raw.raw) == ((5, 16), True)
    assert pos(solve.spans["text"]) == where(source, '"""\nQ: {{ question }}\nA:"""')
    assert solve.model_dump() == {"kind": "prompt", "text": "\nQ: {{ question }}\nA:"}


# -- stages ----------------------------------------------------------------------------------------


def test_label_stage_defaults_and_bare_column_names():
    stage = lowered("stage s = label(problems) { teacher = t  prompt = p }").stages["s"]
    assert strip_spans(stage) == {
        "op": "label",
        "input": {"name": "problems"},
        "teacher": {"name": "t"},
        "teachers": None,
        "route": {"kind": "round_robin", "n": None},
        "teacher_column": "teacher",
        "prompt": {"name": "p"},
        "system": None,
        "samples": 1,
        "output": "output",
        "messages": None,
        "turns": "last",
        "answer": None,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "max_tokens": 256,
        "stop": None,
    }
    stage = lowered(
        'stage s = label(problems) { teacher = t prompt = p output = rationale system = "Be brief."'
        ' samples = 4 temperature = 0 stop = ["\\n\\n"] }'
    ).stages["s"]
    assert (stage.output, stage.system, stage.samples, stage.temperature, stage.stop) == (
        "rationale",
        "Be brief.",
        4,
        0.0,
        ["\n\n"],
    )


def test_references_keep_their_spans():
    source = "stage s = label(problems) { teacher = big_teacher  prompt = solve }"
    stage = lowered(source).stages["s"]
    assert stage.teacher == Ref(name="big_teacher", span=stage.teacher.span)
    assert pos(stage.teacher.span) == where(source, "big_teacher")
    assert pos(stage.input.span) == where(source, "problems")
    assert pos(stage.spans["prompt"]) == where(source, "solve")
    assert pos(stage.span) == (1, 1, 1, len(source) + 1)


def test_system_prompt_may_name_a_prompt():
    stage = lowered("stage s = label(d) { teacher = t prompt = p system = orca_system }").stages[
        "s"
    ]
    assert stage.system == Ref(name="orca_system", span=stage.system.span)


def test_expand_stage_methods_are_symbols():
    recipe = lowered(
        "stage a = expand(seeds) { teacher = t  column = instruction  method = self_instruct  n = 50 }\n"
        "stage b = expand(seeds) { teacher = t  column = instruction  method = evol_instruct  rounds = 3 }"
    )
    a, b = recipe.stages["a"], recipe.stages["b"]
    assert (a.method, a.column, a.n, a.demos, a.keep_seeds) == (
        "self_instruct",
        "instruction",
        50,
        3,
        True,
    )
    assert (b.method, b.rounds) == ("evol_instruct", 3)


def test_curate_judge_and_pairs_stages():
    recipe = lowered(
        "stage c = curate(topics) { teacher = t  prompt = p  per_item = 3 }\n"
        "stage j = judge(c) { judge = t  prompt = rubric  scale = [1, 5] }\n"
        "stage p = pairs(j) { group = question  response = output  min_margin = 0.5 }"
    )
    curate, judge, pairs = recipe.stages["c"], recipe.stages["j"], recipe.stages["p"]
    assert (curate.per_item, curate.output) == (3, "output")
    assert (judge.scale, judge.output, judge.temperature, judge.max_tokens) == (
        [1.0, 5.0],
        "score",
        0.0,
        64,
    )
    assert (pairs.group, pairs.response, pairs.score, pairs.min_margin) == (
        "question",
        "output",
        "score",
        0.5,
    )


def test_teacher_logits_stage():
    stage = lowered(
        "stage soft = teacher_logits(clean) { teacher = t  prompt = p  target = rationale }"
    ).stages["soft"]
    assert (stage.target, stage.top_k, stage.max_length) == ("rationale", 32, 1024)


def test_filter_rules_in_order():
    source = (
        "stage clean = filter(r) {\n"
        '  keep matches(rationale, r"#### -?\\d+") and not (len(rationale) > 400)\n'
        "  dedup rationale by exact\n"
        "  dedup question by minhash(threshold = 0.8, num_perm = 64)\n"
        "  decontaminate question against heldout by ngram(n = 8)\n"
        "  decontaminate answer against heldout\n"
        "  keep -len(x) in [1, 2] or y not in 1..3\n"
        "}"
    )
    keep, exact, minhash, decon, decon_default, keep2 = lowered(source).stages["clean"].rules
    assert isinstance(keep, KeepRule)
    assert strip_spans(keep.condition) == {
        "kind": "binop",
        "op": "and",
        "left": {
            "kind": "apply",
            "func": "matches",
            "args": [
                {"kind": "column", "name": "rationale"},
                {"kind": "lit", "value": "#### -?\\d+"},
            ],
            "kwargs": {},
        },
        "right": {
            "kind": "unop",
            "op": "not",
            "operand": {
                "kind": "binop",
                "op": ">",
                "left": {
                    "kind": "apply",
                    "func": "len",
                    "args": [{"kind": "column", "name": "rationale"}],
                    "kwargs": {},
                },
                "right": {"kind": "lit", "value": 400},
            },
        },
    }
    assert isinstance(exact, DedupRule)
    assert (exact.column, exact.method, exact.threshold) == ("rationale", "exact", 0.9)
    assert (minhash.method, minhash.threshold, minhash.num_perm, minhash.ngram) == (
        "minhash",
        0.8,
        64,
        5,
    )
    assert isinstance(decon, DecontaminateRule)
    assert (decon.column, decon.against.name, decon.ngram) == ("question", "heldout", 8)
    assert decon_default.ngram == 13
    condition = keep2.condition
    assert isinstance(condition, BinOp) and condition.op == "or"
    membership, outside = condition.left, condition.right
    assert isinstance(membership.left, UnOp) and membership.left.op == "-"
    assert isinstance(membership.right, Seq) and [i.value for i in membership.right.items] == [1, 2]
    assert outside.op == "not in" and isinstance(outside.right, Between)
    assert (outside.right.low.value, outside.right.high.value) == (1, 3)
    assert [c.name for c in columns_used(condition)] == ["x", "y"]
    assert pos(condition.span) == where(source, "-len(x) in [1, 2] or y not in 1..3")
    assert pos(keep.span) == where(
        source, 'keep matches(rationale, r"#### -?\\d+") and not (len(rationale) > 400)'
    )


def test_expression_literals():
    rule = (
        lowered('stage f = filter(r) { keep x == [true, null, 2.5, 50%, "s"] }')
        .stages["f"]
        .rules[0]
    )
    values = [item.value for item in rule.condition.right.items]
    assert values == [True, None, 2.5, 0.5, "s"]
    assert all(isinstance(item, Lit) for item in rule.condition.right.items)
    assert isinstance(rule.condition.left, Column)


# -- training --------------------------------------------------------------------------------------

TRAIN = """\
train distill {
  student = student  data = soft  prompt = solve  target = rationale
  epochs = 3  batch = 32  lr = 3e-4  lr_schedule = cosine(warmup = 5%)
  loss sft weight 0.5
  loss forward_kl weight linear(0.0 -> 1.0, over = 30%)  temperature 2.0
}
"""


def test_train_values_and_defaults():
    train = lowered(TRAIN).trains["distill"]
    dumped = strip_spans(train)
    losses = dumped.pop("losses")
    assert dumped == {
        "kind": "train",
        "student": {"name": "student"},
        "teacher": None,
        "data": {"name": "soft"},
        "prompt": {"name": "solve"},
        "target": "rationale",
        "train_on": "assistant",
        "chat_template_mix": None,
        "epochs": 3,
        "max_steps": None,
        "batch": 32,
        "grad_accum": 1,
        "lr": 3e-4,
        "lr_schedule": {"kind": "cosine", "warmup": {"fraction": 0.05}, "min_ratio": 0.0},
        "weight_decay": 0.0,
        "betas": [0.9, 0.999],
        "clip": 1.0,
        "max_length": 512,
        "on_policy": 0.0,
        "sample_temperature": 1.0,
        "sample_top_p": 1.0,
        "sample_top_k": 0,
        "max_new_tokens": 128,
        "loss_path": "auto",
        "precision": "auto",
        "compile": "auto",
        "gradient_checkpointing": False,
        "strategy": "ddp",
        "checkpoint_every": 200,
        "log_every": 10,
        "seed": None,
        # the settings groups Train mixes in
        "packing": "auto",
        "tokens_per_micro_batch": None,
        "report_to": ["tensorboard"],
        "tracker_project": None,
        "save_total_limit": None,
        "init_from": None,
        "freeze": [],
        "pad_vocab_to_multiple": None,
        "teacher_mix": 0.0,
        "ppo_epochs": 4,
        "lm_data": None,
        "lm_weight": 1.0,
        "lm_text": "text",
        "eval_data": None,
        "eval_every": None,
        "replay": None,
        "seq_kd": False,
        "num_generations": 1,
        "sample_batch": None,
    }
    assert losses == [
        {"name": "sft", "weight": 0.5},
        {
            "name": "forward_kl",
            "weight": {
                "kind": "linear",
                "start": 0.0,
                "end": 1.0,
                "over": {"fraction": 0.3},
                "at": None,
                "begin": None,
            },
            "temperature": 2.0,
            "temperature_scale": False,
            "topk_mass": "renormalize",
            "reduction": "token_mean",
            "infinite_logits": "keep",
        },
    ]
    assert train.lr_schedule == LRSchedule(kind="cosine", warmup=Percent(fraction=0.05))


def test_loss_kinds():
    losses = (
        lowered(
            "train t { student = s  data = d\n"
            "  loss sft weight 1\n"
            "  loss jsd(beta = 0.9, temperature_scale = true) weight 0.5 temperature 4\n"
            "  loss skew_rkl(alpha = 0.2) weight 0.5\n"
            "  loss hidden_cosine(layers = [[1, 2], [3, 6]]) weight 0.1\n"
            "  loss dpo(beta = 0.05) weight 1\n"
            "}"
        )
        .trains["t"]
        .losses
    )
    sft, jsd, skew, hidden, dpo = losses
    assert isinstance(sft, SFTLoss) and sft.weight == 1.0
    assert isinstance(jsd, JSDLoss) and isinstance(jsd, DivergenceLoss)
    assert (jsd.name, jsd.beta, jsd.temperature, jsd.temperature_scale) == ("jsd", 0.9, 4.0, True)
    assert isinstance(skew, SkewLoss) and (skew.name, skew.alpha) == ("skew_rkl", 0.2)
    assert isinstance(hidden, HiddenLoss) and hidden.layers == [[1, 2], [3, 6]]
    assert isinstance(dpo, DPOLoss) and dpo.beta == 0.05


def test_loss_temperature_may_be_an_option_or_a_clause():
    clause = lowered("train t { student = s data = d loss tvd weight 1 temperature 3 }")
    option = lowered("train t { student = s data = d loss tvd(temperature = 3) weight 1 }")
    assert strip_spans(clause) == strip_spans(option)
    assert clause.trains["t"].losses[0].temperature == 3.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.25", 0.25),
        ("constant(0.5)", Schedule(kind="constant", start=0.5, end=0.5)),
        (
            "linear(0.0 -> 1.0, over = 30%)",
            Schedule(kind="linear", start=0.0, end=1.0, over=Percent(fraction=0.3)),
        ),
        (
            "cosine(1 -> 0, start = 10%, over = 200)",
            Schedule(kind="cosine", start=1.0, end=0.0, begin=Percent(fraction=0.1), over=200),
        ),
        ("step(0 -> 1, at = 500)", Schedule(kind="step", start=0.0, end=1.0, at=500)),
        (
            "warmup(0.8, over = 5%)",
            Schedule(kind="warmup", start=0.0, end=0.8, over=Percent(fraction=0.05)),
        ),
    ],
)
def test_weight_schedules(text, expected):
    loss = (
        lowered(f"train t {{ student = s data = d loss sft weight {text} }}").trains["t"].losses[0]
    )
    assert loss.weight == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("constant", LRSchedule(kind="constant")),
        ("constant()", LRSchedule(kind="constant")),
        ("cosine(warmup = 5%)", LRSchedule(kind="cosine", warmup=Percent(fraction=0.05))),
        (
            "linear(warmup = 100, min_ratio = 0.1)",
            LRSchedule(kind="linear", warmup=100, min_ratio=0.1),
        ),
        ("cosine", LRSchedule(kind="cosine")),
    ],
)
def test_learning_rate_schedules(text, expected):
    train = lowered(
        f"train t {{ student = s data = d lr_schedule = {text} loss sft weight 1 }}"
    ).trains["t"]
    assert train.lr_schedule == expected


def test_on_policy_schedule_and_constant_arithmetic():
    train = lowered(
        "train t { student = s teacher = big data = d lr = 3e-4 * 2 max_steps = 10 * 100\n"
        "  on_policy = linear(0.0 -> 0.5)  loss reverse_kl weight 1 }"
    ).trains["t"]
    assert train.lr == pytest.approx(6e-4)
    assert train.max_steps == 1000
    assert train.on_policy == Schedule(kind="linear", start=0.0, end=0.5)
    assert train.teacher.name == "big"


# -- eval and export -------------------------------------------------------------------------------


def test_evaluate_metrics():
    source = (
        "eval accuracy = evaluate(distill, heldout) {\n"
        "  prompt = solve  max_tokens = 64\n"
        '  metric exact_match(extract(output, r"#### (-?\\d+)"), answer)\n'
        "  metric short = len(output) < 100\n"
        "  metric output == answer\n"
        "}"
    )
    evaluation = lowered(source).evals["accuracy"]
    assert (evaluation.model.name, evaluation.data.name, evaluation.prompt.name) == (
        "distill",
        "heldout",
        "solve",
    )
    assert (evaluation.temperature, evaluation.max_tokens, evaluation.limit) == (0.0, 64, None)
    assert [m.name for m in evaluation.metrics] == ["exact_match", "short", "metric"]
    first = evaluation.metrics[0].expr
    assert isinstance(first, Apply) and first.func == "exact_match"
    assert isinstance(first.args[0], Apply) and first.args[0].args[1].value == "#### (-?\\d+)"
    assert pos(evaluation.metrics[1].span) == where(source, "metric short = len(output) < 100")


def test_evaluate_arguments_may_be_keywords():
    by_position = lowered("eval e = evaluate(t, d) { prompt = p metric m }")
    by_keyword = lowered("eval e = evaluate(model = t, data = d) { prompt = p metric m }")
    assert strip_spans(by_position) == strip_spans(by_keyword)


def test_export():
    recipe = lowered(
        'export distill to "runs/student"\nexport other to "runs/adapter" { merge_lora = false  card = false }'
    )
    first, second = recipe.exports
    assert strip_spans(first) == {
        "kind": "export",
        "train": {"name": "distill"},
        "path": "runs/student",
        "merge_lora": True,
        "card": True,
        "private": False,
        "revision": None,
        "token": None,
        "license": None,
        "tags": [],
    }
    assert (second.train.name, second.merge_lora, second.card) == ("other", False, False)


# -- the recipe as a whole -------------------------------------------------------------------------


def test_sections_lookup_and_name_spans():
    source = (
        'model m = hf("x")\ndataset d = jsonl("d.jsonl")\nprompt p = "x"\n'
        "stage s = label(d) { teacher = m prompt = p }\n"
        "train t { student = m data = s loss sft weight 1 }\n"
        "eval e = evaluate(t, d) { prompt = p metric x }\n"
    )
    recipe = lowered(source)
    assert recipe.names() == ["m", "d", "p", "s", "t", "e"]
    assert recipe.lookup("s")[0] == "stages"
    assert recipe.lookup("t")[0] == "trains"
    assert recipe.lookup("absent") is None
    assert pos(recipe.name_spans["e"]) == (6, 6, 6, 7)


def test_layout_and_comments_do_not_change_the_ir():
    compact = lowered(TRAIN)
    spread = lowered(
        "# a comment\n\ntrain distill {\n  student = student\n  data = soft  # where from\n"
        "  prompt = solve\n  target = rationale\n  epochs = 3\n  batch = 32\n  lr = 0.0003\n"
        "  lr_schedule = cosine(warmup = 5%)\n  loss sft weight 0.5\n"
        "  loss forward_kl weight linear(0.0 -> 1.0, over = 30%) temperature 2.0\n}\n"
    )
    assert strip_spans(compact) == strip_spans(spread)
    assert compact.trains["distill"].span != spread.trains["distill"].span
