"""`kdlang check` on datasets declaring captured logits (`logits = topk(...)`): the layout's
columns and their types, the settings each layout reads, DistillKit's compression config and
a declared vocabulary size against the student's, all before anything loads."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kdlang.check import check_files
from kdlang.check.captured import compression_config

AXOLOTL_ROW = {
    "q": "2 + 3?",
    "a": "5",
    "input_ids": [1, 2, 3],
    "labels": [-100, 2, 3],
    "target_token_ids": [[0, 1], [2, 3], [3, 4]],
    "target_logprobs": [[-0.1, -2.0], [-0.2, -1.5], [-0.3, -1.2]],
    "target_mask": [[0, 0], [1, 1], [1, 1]],
}


def recipe(tmp_path, data: str, *, student: str = "Qwen/Qwen2.5-0.5B", loss="forward_kl"):
    path = tmp_path / "r.kd"
    path.write_text(
        f'model student = hf("{student}")\n'
        + data
        + '\nprompt ask = """{{ q }}"""\n'
        + "train distill {\n  student = student  data = soft  prompt = ask  target = a\n"
        + f"  loss {loss} weight 1.0\n}}\n",
        encoding="utf-8",
    )
    return path


def errors(path) -> list[tuple[str, int, int]]:
    diagnostics, _ = check_files([str(path)])
    return [(d.code, d.span.line, d.span.column) for d in diagnostics if d.severity.name == "ERROR"]


def parquet(tmp_path, rows, name="soft.parquet"):
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / name)
    return name


def test_a_declared_axolotl_dataset_is_a_teacher_for_token_losses(tmp_path):
    name = parquet(tmp_path, [AXOLOTL_ROW])
    declared = f'dataset soft = parquet("{name}") {{\n  logits = topk(layout = axolotl)\n}}'
    assert errors(recipe(tmp_path, declared)) == []
    # the same rows without the declaration hold no teacher distribution kdlang knows
    assert [e[0] for e in errors(recipe(tmp_path, f'dataset soft = parquet("{name}")'))] == [
        "KD0301"
    ]


def test_renamed_columns_are_read_where_the_settings_point(tmp_path):
    row = {("ids" if k == "target_token_ids" else k): v for k, v in AXOLOTL_ROW.items()}
    name = parquet(tmp_path, [row])
    missing = f'dataset soft = parquet("{name}") {{\n  logits = topk(layout = axolotl)\n}}'
    assert errors(recipe(tmp_path, missing)) == [("KD0330", 3, 12)]
    renamed = (
        f'dataset soft = parquet("{name}") {{\n  logits = topk(layout = axolotl, ids = ids)\n}}'
    )
    assert errors(recipe(tmp_path, renamed)) == []


def test_prompt_logprobs_may_be_json_text_but_not_a_number(tmp_path):
    rows = [
        {
            "q": "x",
            "a": "y",
            "input_ids": [1, 2],
            "prompt_logprobs": json.dumps([None, {"2": -0.1}]),
        }
    ]
    name = parquet(tmp_path, rows)
    data = f'dataset soft = parquet("{name}") {{\n  logits = topk(layout = prompt_logprobs)\n}}'
    assert errors(recipe(tmp_path, data)) == []
    rows[0]["prompt_logprobs"] = 3
    parquet(tmp_path, rows)
    assert errors(recipe(tmp_path, data)) == [("KD0331", 3, 12)]
    with_ids = data.replace("prompt_logprobs)", "prompt_logprobs, ids = input_ids)")
    rows[0]["prompt_logprobs"] = "[]"
    parquet(tmp_path, rows)
    assert errors(recipe(tmp_path, with_ids)) == [("KD0332", 3, 49)]


def test_a_reverse_kl_is_still_refused_against_captured_top_k(tmp_path):
    name = parquet(tmp_path, [AXOLOTL_ROW])
    declared = f'dataset soft = parquet("{name}") {{\n  logits = topk(layout = axolotl)\n}}'
    assert [e[0] for e in errors(recipe(tmp_path, declared, loss="reverse_kl"))] == ["KD0307"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("d: 512\nk: 4\nexact_k: 5\nresidual_bins: []\n", "`exact_k` must be <= `k`"),
        ("d: 512\nk: 4\nexact_k: 1\nexact_dtype: float8\n", "`exact_dtype` must be one of"),
        ("- 1\n- 2\n", "it is not a map of settings"),
        ("d: [\n", "is no YAML"),
    ],
)
def test_an_unusable_compression_config_is_reported_at_the_setting(tmp_path, text, message):
    (tmp_path / "compression_config.yaml").write_text(text, encoding="utf-8")
    rows = [
        {
            "q": "x",
            "a": "y",
            "input_ids": [1, 2],
            "compressed_logprobs": [[0] * 4],
            "bytepacked_indices": [[0]],
        }
    ]
    name = parquet(tmp_path, rows)
    data = (
        f'dataset soft = parquet("{name}") {{\n'
        '  logits = topk(layout = distillkit, config = "compression_config.yaml")\n}'
    )
    diagnostics, _ = check_files([str(recipe(tmp_path, data))])
    (found,) = [d for d in diagnostics if d.severity.name == "ERROR"]
    assert (found.code, found.span.line, found.span.column) == ("KD0333", 3, 47)
    assert message in found.message


def test_the_compression_config_as_distillkit_writes_it():
    config = compression_config(
        {
            "d": 151936,
            "k": 128,
            "exact_k": 32,
            "exact_dtype": "bfloat16",
            "polynomial_terms": [0, 1, 2, "sqrt"],
            "term_dtype": "float32",
            "residual_bins": [{"scale_dtype": "float16", "element_bits": 4, "num_elements": 96}],
            "delta_encoding": True,
            "error_diffusion": False,
            "normalize_t": False,
        }
    )
    assert config.index_bits == 18  # 2^17 < 151936 <= 2^18
    assert config.polynomial_terms == (0, 1, 2, "sqrt")
    assert config.residual_bins[0].num_elements == 96


def test_a_declared_vocabulary_size_must_be_the_students(tmp_path, tiny_pair):
    size = json.loads((tiny_pair.student / "config.json").read_text())["vocab_size"]
    name = parquet(tmp_path, [AXOLOTL_ROW])
    for declared, expected in ((size, []), (size + 8, [("KD0334", 3, 48)])):
        data = (
            f'dataset soft = parquet("{name}") {{\n'
            f"  logits = topk(layout = axolotl, vocab_size = {declared})\n}}"
        )
        assert errors(recipe(tmp_path, data, student=str(tiny_pair.student))) == expected


def test_ids_beyond_the_students_vocabulary_are_seen_in_the_files_statistics(tmp_path, tiny_pair):
    size = json.loads((tiny_pair.student / "config.json").read_text())["vocab_size"]
    data = 'dataset soft = parquet("soft.parquet") {\n  logits = topk(layout = axolotl)\n}'
    path = recipe(tmp_path, data, student=str(tiny_pair.student))
    for largest, expected in ((size - 1, []), (size, [("KD0334", 3, 12)])):
        row = dict(AXOLOTL_ROW, target_token_ids=[[0, 1], [2, largest], [3, 4]])
        parquet(tmp_path, [row])
        assert errors(path) == expected
    diagnostics, _ = check_files([str(path)])
    assert f"go up to {size}, beyond the {size} ids" in diagnostics[0].message


def test_a_named_tokenizer_must_be_the_students(tmp_path, tiny_pair, tiny_other_vocab_dir):
    name = parquet(tmp_path, [AXOLOTL_ROW])
    for tokenizer, expected in (
        (tiny_pair.tokenizer, []),
        (tiny_other_vocab_dir, [("KD0334", 3, 47)]),
    ):
        data = (
            f'dataset soft = parquet("{name}") {{\n'
            f'  logits = topk(layout = axolotl, tokenizer = "{tokenizer}")\n}}'
        )
        assert errors(recipe(tmp_path, data, student=str(tiny_pair.student))) == expected


def test_the_compression_config_is_part_of_the_datasets_fingerprint(tmp_path):
    from typer.testing import CliRunner

    from kdlang.cli import app

    rows = [
        {
            "q": "x",
            "a": "y",
            "input_ids": [1, 2],
            "compressed_logprobs": [[0] * 4],
            "bytepacked_indices": [[0]],
        }
    ]
    name = parquet(tmp_path, rows)
    config = tmp_path / "compression_config.yaml"
    data = (
        f'dataset soft = parquet("{name}") {{\n'
        '  logits = topk(layout = distillkit, config = "compression_config.yaml")\n}'
    )
    path = recipe(tmp_path, data)

    def fingerprint() -> str:
        args = ["plan", str(path), "--format", "json", "--cache", str(tmp_path / "cache")]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return next(n for n in json.loads(result.stdout)["nodes"] if n["name"] == "soft")[
            "fingerprint"
        ]

    config.write_text("d: 512\nk: 1\nexact_k: 1\n", encoding="utf-8")
    first = fingerprint()
    assert fingerprint() == first
    config.write_text("d: 512\nk: 1\nexact_k: 1\nexact_dtype: float16\n", encoding="utf-8")
    assert fingerprint() != first
