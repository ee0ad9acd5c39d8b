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


def test_a_column_of_two_types_fails_naming_the_row_the_column_and_both_types(tmp_path):
    # An Arrow column holds one type; the value itself is not shown.
    lines = [{"q": f"q{i}", "n": "twenty-secret" if i == 20 else i} for i in range(30)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    document = run_recipe(write_recipe(tmp_path, 'dataset d = jsonl("d.jsonl")\n'), expect=1)
    error = node(document, "d")["error"]
    assert error == (
        "cannot read dataset `d`: row 21: column `n` holds str, but row 1 holds int; "
        "a column holds one type"
    )


def test_ints_and_floats_share_a_column_and_missing_cells_are_counted_in_the_report(tmp_path):
    lines = [
        {"q": f"q{i}", "x": 0.5 if i % 2 else i, **({"a": "y"} if i % 3 else {})} for i in range(9)
    ]
    lines[4]["a"] = None
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    recipe = write_recipe(tmp_path, 'dataset d = jsonl("d.jsonl")\n')
    document = run_recipe(recipe)
    # rows 0, 3, 6 lack `a`, row 4 holds null: four of nine
    assert node(document, "d")["stats"]["null_cells"] == {"a": 4}
    assert [r["x"] for r in rows(document, "d")] == [0.0, 0.5, 2.0, 0.5, 4.0, 0.5, 6.0, 0.5, 8.0]
    report = (tmp_path / "runs" / "t" / "report.md").read_text(encoding="utf-8")
    assert "- `d`: missing or null `a` in 4 of 9 rows\n" in report


def test_a_malformed_line_is_named_by_its_line_and_column_at_run_time(tmp_path):
    from kdlang.runtime.data import _read_jsonl

    good = '{"q": "fine"}\n'
    path = tmp_path / "big.jsonl"
    path.write_text(good * 49_999 + '{"q": "secret-token-1" oops}\n' + good * 50_000)
    with pytest.raises(ValueError) as raised:
        _read_jsonl(path)
    assert (
        str(raised.value) == "big.jsonl: line 50000, column 24 is not JSON: Expecting ',' delimiter"
    )
    path.write_text(good * 3 + '["a list"]\n')
    with pytest.raises(ValueError, match=r"^big.jsonl: line 4 is a list, not an object$"):
        _read_jsonl(path)


@pytest.mark.parametrize(
    ("rows_in", "declared", "message"),
    [
        (
            [{"q": "a"}, {"p": 1}],
            {"q": "str"},
            "row 2: column `q` is missing, but the recipe declares it str",
        ),
        (
            [{"q": "a"}, {"q": None}],
            {"q": "str"},
            "row 2: column `q` is null, but the recipe declares it str",
        ),
        (
            [{"n": 1}, {"n": 2.5}],
            {"n": "int"},
            "row 2: column `n` holds float, but the recipe declares it int",
        ),
        (
            [{"t": [1]}, {"t": {"a": 1}}],
            {"t": "list"},
            "row 2: column `t` holds map, but the recipe declares it list",
        ),
    ],
)
def test_declared_column_types_are_required_of_every_row(rows_in, declared, message):
    from kdlang.runtime.data import check_column_types

    with pytest.raises(ValueError) as raised:
        check_column_types(rows_in, declared)
    assert str(raised.value).startswith(message)
    check_column_types([{"q": None, "n": 1}, {"n": 2.5}], {"q": "any", "n": "float"})  # fine
