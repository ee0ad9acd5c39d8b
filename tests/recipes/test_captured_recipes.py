"""The gallery's captured-logit recipes (``captured_axolotl.kd``, ``captured_distillkit.kd``)
train end to end from parquet files written here, offline, by the tiny teacher in the layout
each recipe names; the sample files committed beside them have the same columns."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kdlang.check import check_files, load_checked
from kdlang.ir.sources import HFModel
from tests.recipes.test_gallery import RECIPES, run_recipe
from tests.runtime.train import captured_files as cf

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SAMPLES = ("axolotl.parquet", "distillkit.parquet", "compression_config.yaml")


def sample_rows() -> list[dict]:
    rows = [json.loads(line) for line in (RECIPES / "data/math/train.jsonl").open()][:4]
    return [
        {"question": r["question"], "answer": f"The answer is {r['answer']}. #### {r['answer']}"}
        for r in rows
    ]


def render(row: dict) -> str:
    return f"Question: {row['question']}\nAnswer:"  # the recipes' prompt `ask`


def write_samples(folder: Path, teacher: Path, tokenizer: Path) -> None:
    """The sample files of ``recipes/data/captured/``, from ``teacher``'s forward passes."""
    captures = cf.capture(teacher, tokenizer, sample_rows(), render, "answer", 5)
    cf.write(folder / "axolotl.parquet", cf.axolotl_rows(cf.renormalized(captures)))
    cf.write(folder / "distillkit.parquet", cf.distillkit_rows(captures))
    cf.write_config(folder / "compression_config.yaml")


def staged(recipe: str, folder: Path, pair) -> Path:
    """The recipe in ``folder``, its data written by the tiny teacher, its student the tiny one."""
    folder.mkdir(parents=True)
    copy = folder / recipe
    copy.write_bytes((RECIPES / recipe).read_bytes())
    write_samples(folder / "data" / "captured", pair.teacher, pair.tokenizer)
    program, _ = load_checked(str(copy))
    for model in program.recipe.models.values():
        assert isinstance(model, HFModel)
        link = folder / model.path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(pair.student, target_is_directory=True)
    diagnostics, _ = check_files([str(copy)])
    assert [f"{d.code} {d.message}" for d in diagnostics] == []
    return copy


def run_captured(recipe: str, tmp_path: Path, pair) -> list[dict]:
    copy = staged(recipe, tmp_path / "recipe", pair)
    workdir = tmp_path / "work"
    document = run_recipe(copy, workdir, ["distill.max_steps=2", "distill.batch=2"])
    (train,) = [n for n in document["nodes"] if n["name"] == "distill"]
    lines = (Path(train["output"]) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    export = workdir / "runs" / recipe.removesuffix(".kd").replace("_", "-") / "student"
    assert (export / "config.json").is_file()
    return [json.loads(line) for line in lines]


def test_captured_axolotl_runs_end_to_end(tmp_path, tiny_pair):
    metrics = run_captured("captured_axolotl.kd", tmp_path, tiny_pair)
    assert [m["step"] for m in metrics] == [0, 1]
    for m in metrics:
        assert math.isfinite(m["forward_kl"]) and m["forward_kl"] > 0
        assert math.isfinite(m["sft"]) and m["sft"] > 0


def test_captured_distillkit_runs_end_to_end(tmp_path, tiny_pair):
    metrics = run_captured("captured_distillkit.kd", tmp_path, tiny_pair)
    assert [m["step"] for m in metrics] == [0, 1]
    for m in metrics:
        assert math.isfinite(m["forward_kl"]) and m["forward_kl"] > 0


def test_the_committed_samples_have_the_layouts_columns(tmp_path, tiny_pair):
    write_samples(tmp_path, tiny_pair.teacher, tiny_pair.tokenizer)
    committed = RECIPES / "data" / "captured"
    for name in SAMPLES[:2]:
        assert pq.read_schema(committed / name) == pq.read_schema(tmp_path / name), name
        assert pq.read_metadata(committed / name).num_rows == len(sample_rows())
    config = SAMPLES[2]
    assert (committed / config).read_text() == (tmp_path / config).read_text()
