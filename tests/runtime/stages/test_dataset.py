"""``dataset``: every source kind read into the cache, with columns, limit and shuffle."""

from __future__ import annotations

import csv
import json

import pytest

from tests.runtime.stages.support import node, rows, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(60)

DATA = [{"q": f"question {i}", "a": str(i), "extra": i * 10} for i in range(8)]


def write_sources(folder):
    """The same rows as jsonl, csv, parquet, a parquet data file read through ``hf``, and
    ``save_to_disk`` folders (a Dataset and a DatasetDict)."""
    from datasets import Dataset, DatasetDict

    with (folder / "d.jsonl").open("w") as out:
        out.writelines(json.dumps(row) + "\n" for row in DATA)
    with (folder / "d.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(DATA[0]))
        writer.writeheader()
        writer.writerows(DATA)
    table = Dataset.from_list(DATA)
    table.to_parquet(str(folder / "d.parquet"))
    table.save_to_disk(str(folder / "saved"))
    DatasetDict({"train": table.select(range(2)), "test": table}).save_to_disk(
        str(folder / "saved_dict")
    )


def test_every_source_kind_gives_the_same_rows(tmp_path):
    write_sources(tmp_path)
    recipe = write_recipe(
        tmp_path,
        """
dataset from_jsonl = jsonl("d.jsonl")
dataset from_csv = csv("d.csv")
dataset from_parquet = parquet("d.parquet")
dataset from_hf_file = hf("d.parquet", columns = [q, a, extra])
dataset from_saved = hf("saved", columns = [q, a, extra])
dataset from_saved_split = hf("saved_dict", split = "test", columns = [q, a, extra])
dataset from_inline = inline([{q: "question 0", a: "0", extra: 0}])
""",
    )
    document = run_recipe(recipe)
    for name in ("from_jsonl", "from_parquet", "from_hf_file", "from_saved", "from_saved_split"):
        assert rows(document, name) == DATA, name
        assert node(document, name)["rows_out"] == 8
    # csv has no types: every value is text
    assert rows(document, "from_csv") == [{k: str(v) for k, v in r.items()} for r in DATA]
    assert rows(document, "from_inline") == DATA[:1]


def test_columns_limit_and_shuffle(tmp_path):
    write_sources(tmp_path)
    recipe = write_recipe(
        tmp_path,
        """
dataset picked = jsonl("d.jsonl", columns = [q, a], limit = 3)
dataset mixed = jsonl("d.jsonl", shuffle = true)
dataset mixed_few = jsonl("d.jsonl", shuffle = true, limit = 3)
""",
    )
    document = run_recipe(recipe)
    assert rows(document, "picked") == [{"q": r["q"], "a": r["a"]} for r in DATA[:3]]
    mixed = rows(document, "mixed")
    assert sorted(mixed, key=lambda r: r["extra"]) == DATA and mixed != DATA
    assert rows(document, "mixed_few") == mixed[:3]  # limit applies after shuffling
    # the order is a function of the seed: another seed, another order; same seed, same order
    other = write_recipe(tmp_path / "other", recipe.read_text().split("}\n", 1)[1], seed=8)
    (tmp_path / "other" / "d.jsonl").write_bytes((tmp_path / "d.jsonl").read_bytes())
    assert rows(run_recipe(other), "mixed") != mixed
    assert rows(run_recipe(recipe, "--force", "mixed"), "mixed") == mixed


def test_an_unreadable_source_fails_its_node_with_a_message(tmp_path):
    write_sources(tmp_path)
    recipe = write_recipe(
        tmp_path, 'dataset wrong_split = hf("saved_dict", split = "validation", columns = [q])\n'
    )
    document = run_recipe(recipe, expect=1)
    failed = node(document, "wrong_split")
    assert failed["status"] == "failed"
    assert "no split 'validation'" in failed["error"] and "train, test" in failed["error"]
