"""Estimates before running: rows, teacher calls and token bounds, top-k storage, training steps
and tokens, the memory of materialized logits and the loss path it makes ``auto`` choose."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlang.plan.estimates import FUSED_LINEAR_THRESHOLD, TOPK_BYTES_PER_ENTRY
from tests.check.support import HEADER, STUDENT_VOCAB
from tests.plan.support import RECIPE, plan_of

GIB = 2**30


def estimates(project: Path, text: str | None = None, overrides=()) -> dict:
    return {n.name: n.estimate for n in plan_of(project, text, overrides).nodes}


def test_rows_teacher_calls_and_token_bounds(project: Path):
    e = estimates(project, RECIPE)
    assert (e["problems"].rows, e["heldout"].rows) == (3, 1)
    # label: 3 rows x 4 samples, each at most 96 new tokens
    label = e["rationales"]
    assert (label.rows, label.teacher_calls, label.generated_tokens_max) == (12, 12, 12 * 96)
    assert not label.rows_upper_bound
    # a filter only drops rows: what follows it is an upper bound
    assert (e["clean"].rows, e["clean"].rows_upper_bound) == (12, True)
    # top-k: 12 rows x 1024 positions x 32 entries of (int32 id + float16 log-prob)
    soft = e["soft"]
    assert TOPK_BYTES_PER_ENTRY == 6
    assert (soft.teacher_calls, soft.logit_storage_bytes) == (12, 12 * 1024 * 32 * 6)
    # eval: one generation per held-out row, at most max_tokens (default 128) each
    assert (e["accuracy"].generations, e["accuracy"].generated_tokens_max) == (1, 128)


def test_training_steps_tokens_and_the_logits_memory(project: Path):
    train = estimates(project, RECIPE)["distill"]
    # at most 12 rows, batch 16: one step per epoch, three epochs
    assert (train.rows, train.rows_upper_bound, train.train_steps) == (12, True, 3)
    assert train.train_tokens_max == 3 * 16 * 2048
    # 16 sequences x 2048 positions x V = 151936 (the student's config.json) x 4 bytes
    assert train.logits_bytes == 16 * 2048 * STUDENT_VOCAB * 4 == 19_914_555_392
    assert 18.5 < train.logits_bytes / GIB < 18.6
    assert train.loss_path == "fused_linear"
    assert train.loss_path_reason == (
        "32768 tokens x V=151936 fp32 logits = 18.55 GiB per micro-batch"
    )


@pytest.mark.parametrize(
    ("overrides", "micro_batch", "path"),
    [
        (["distill.grad_accum=4"], 4, "fused_linear"),  # 4.6 GiB
        (["distill.grad_accum=16"], 1, "materialized"),  # 1.2 GiB
        (["distill.batch=2", "distill.max_length=512"], 2, "materialized"),
    ],
)
def test_the_loss_path_follows_the_micro_batch(project: Path, overrides, micro_batch, path):
    train = estimates(project, RECIPE, overrides)["distill"]
    length = 512 if "distill.max_length=512" in overrides else 2048
    assert train.logits_bytes == micro_batch * length * STUDENT_VOCAB * 4
    assert (train.logits_bytes > FUSED_LINEAR_THRESHOLD) == (path == "fused_linear")
    assert train.loss_path == path


def test_a_loss_path_set_in_the_recipe_is_kept(project: Path):
    train = estimates(project, RECIPE, ["distill.loss_path=materialized"])["distill"]
    assert (train.loss_path, train.loss_path_reason) == ("materialized", "set in the recipe")


def test_sequence_level_training_materializes_nothing_large(project: Path):
    text = RECIPE.replace(
        "  loss forward_kl weight linear(0.0 -> 1.0, over = 30%)  temperature 2.0\n", ""
    )
    train = estimates(project, text)["distill"]
    assert (train.loss_path, train.loss_path_reason) == (
        "materialized",
        "no token-level divergence",
    )


def test_an_unknown_vocabulary_leaves_the_choice_to_the_run(project: Path):
    text = RECIPE.replace('hf("models/student")', 'hf("some-org/student", revision = "v1")')
    train = estimates(project, text)["distill"]
    assert train.logits_bytes is None
    assert (train.loss_path, train.loss_path_reason) == (
        "auto",
        "vocabulary size unknown until the student loads",
    )


def test_max_steps_overrides_epochs(project: Path):
    train = estimates(project, RECIPE, ["distill.max_steps=50"])["distill"]
    assert (train.train_steps, train.train_tokens_max) == (50, 50 * 16 * 2048)


def test_rows_of_each_file_format_and_limits(project: Path):
    text = HEADER + (
        'dataset topics = csv("data/topics.csv")\n'
        'dataset scored = parquet("data/scored.parquet")\n'
        'dataset few = jsonl("data/train.jsonl") { limit = 2 }\n'
        'dataset many = jsonl("data/train.jsonl") { limit = 100 }\n'
        'dataset written = inline([{q: "a"}, {q: "b"}, {q: "c"}, {q: "d"}])\n'
    )
    e = estimates(project, text)
    assert {name: e[name].rows for name in ("topics", "scored", "few", "many", "written")} == {
        "topics": 2,
        "scored": 2,
        "few": 2,
        "many": 3,
        "written": 4,
    }


def test_generating_stages(project: Path):
    text = HEADER + (
        'dataset topics = csv("data/topics.csv")\n'  # 2 rows
        'prompt write = "Write about {{ topic }} in a {{ style }} style."\n'
        'prompt rubric = "Rate: {{ output }}"\n'
        "stage seeds = expand(problems) { teacher = teacher  column = question  n = 10  max_tokens = 50 }\n"
        "stage evolved = expand(problems) {\n"
        "  teacher = teacher  column = question  method = evol_instruct  rounds = 2  keep_seeds = false\n"
        "}\n"
        "stage written = curate(topics) { teacher = teacher  prompt = write  per_item = 3  max_tokens = 100 }\n"
        "stage judged = judge(written) { judge = teacher  prompt = rubric }\n"
        "stage prefs = pairs(judged) { group = topic  response = output }\n"
    )
    e = estimates(project, text)
    # self-instruct: n new items, plus the 3 seeds kept; some may be rejected
    assert (e["seeds"].rows, e["seeds"].rows_upper_bound) == (13, True)
    assert (e["seeds"].teacher_calls, e["seeds"].generated_tokens_max) == (10, 500)
    # evol-instruct: every seed rewritten twice
    assert (e["evolved"].rows, e["evolved"].teacher_calls) == (6, 6)
    # curate: one call per topic row, 3 items each
    assert (e["written"].rows, e["written"].teacher_calls) == (6, 2)
    assert e["written"].generated_tokens_max == 6 * 100
    # judge: one call per row, at most 64 tokens of judgement (its default)
    assert (e["judged"].teacher_calls, e["judged"].generated_tokens_max) == (6, 6 * 64)
    assert e["judged"].rows_upper_bound
    # pairs: at most one pair per two rows
    assert (e["prefs"].rows, e["prefs"].rows_upper_bound) == (3, True)


def test_eval_limit(project: Path):
    text = RECIPE.replace("evaluate(distill, heldout)", "evaluate(distill, problems)").replace(
        "  prompt = solve\n  metric", "  prompt = solve  max_tokens = 8\n  metric"
    )
    e = estimates(project, text)
    assert (e["accuracy"].rows, e["accuracy"].generated_tokens_max) == (3, 24)
    e = estimates(project, text, ["accuracy.limit=2"])
    assert (e["accuracy"].rows, e["accuracy"].generated_tokens_max) == (2, 16)


def test_an_unreadable_student_config_leaves_the_choice_to_the_run(project: Path):
    (project / "models" / "student" / "config.json").write_bytes(b"\xff\xfe not json")
    train = estimates(project, RECIPE)["distill"]
    assert (train.logits_bytes, train.loss_path) == (None, "auto")
