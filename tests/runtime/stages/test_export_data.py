"""``export DATA to "rows.jsonl" | ".parquet" | ".csv"``: a dataset's or stage's rows as one file,
byte-stable, marked, written again when removed or replaced by another kdlang export, and never
put in place of a file kdlang did not write."""

from __future__ import annotations

import csv
import json

import pyarrow.parquet as pq
import pytest

from kdlang.check import check_files
from tests.runtime.stages.support import node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(120)

DATA = """
dataset rows = inline([
  {q: "naïve, \\"quoted\\"", n: 1, tags: ["a", "b"]},
  {q: "second", n: 2, tags: []},
  {q: "third", n: null, tags: ["c"]}
])
stage long = filter(rows) { keep len(q) > 5 }
"""
ROWS = [
    {"q": 'naïve, "quoted"', "n": 1, "tags": ["a", "b"]},
    {"q": "second", "n": 2, "tags": []},
]


def exports(*paths: str) -> str:
    return "".join(f'export long to "{path}"\n' for path in paths)


def test_rows_are_written_in_the_format_of_the_extension(tmp_path):
    recipe = write_recipe(
        tmp_path, DATA + exports("out/long.jsonl", "out/long.parquet", "out/long.csv")
    )
    document = run_recipe(recipe)
    out = tmp_path / "out"
    lines = (out / "long.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == ROWS
    assert lines[0] == '{"q": "naïve, \\"quoted\\"", "n": 1, "tags": ["a", "b"]}'  # text as written
    assert pq.read_table(out / "long.parquet").to_pylist() == ROWS
    with (out / "long.csv").open(encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["q", "n", "tags"],
            ['naïve, "quoted"', "1", '["a", "b"]'],
            ["second", "2", "[]"],
        ]
    marker = json.loads((out / ".long.jsonl.kdlang-export.json").read_text(encoding="utf-8"))
    import hashlib

    assert marker["sha256"] == hashlib.sha256((out / "long.jsonl").read_bytes()).hexdigest()
    assert node(document, "export:long")["rows_out"] == 2
    # the same rows give the same bytes: a second recipe folder writes identical files
    other = write_recipe(
        tmp_path / "again", DATA + exports("out/long.jsonl", "out/long.parquet", "out/long.csv")
    )
    run_recipe(other)
    for name in ("long.jsonl", "long.parquet", "long.csv"):
        assert (tmp_path / "again" / "out" / name).read_bytes() == (out / name).read_bytes()


def test_a_removed_export_comes_back_and_a_file_kdlang_did_not_write_is_kept(tmp_path):
    recipe = write_recipe(tmp_path, DATA + exports("long.jsonl"))
    run_recipe(recipe)
    written = (tmp_path / "long.jsonl").read_bytes()
    (tmp_path / "long.jsonl").unlink()
    again = run_recipe(recipe)
    assert node(again, "export:long")["status"] == "restored"
    assert (tmp_path / "long.jsonl").read_bytes() == written
    # edited by hand: not kdlang's any more, refused, nothing deleted
    (tmp_path / "long.jsonl").write_text("my notes\n", encoding="utf-8")
    refused = run_recipe(recipe, "--force", "export:long", expect=1)
    assert "is not a kdlang export, or was changed since" in node(refused, "export:long")["error"]
    assert (tmp_path / "long.jsonl").read_text(encoding="utf-8") == "my notes\n"
    # a user's file that was never exported is refused the same way
    mine = write_recipe(tmp_path / "mine", DATA + exports("theirs.csv"))
    (tmp_path / "mine" / "theirs.csv").write_text("a,b\n", encoding="utf-8")
    document = run_recipe(mine, expect=1)
    assert node(document, "export:long")["status"] == "failed"
    assert (tmp_path / "mine" / "theirs.csv").read_text(encoding="utf-8") == "a,b\n"


@pytest.mark.parametrize(
    ("line", "code", "column"),
    [
        ('export long to "long.txt"', "KD0412", 16),
        ('export long to "long.jsonl" { card = false }', "KD0413", 38),
        ('export rows to "rows"', "KD0412", 16),
    ],
)
def test_a_data_export_is_checked(tmp_path, line, code, column):
    recipe = write_recipe(tmp_path, DATA + line + "\n")
    diagnostics, _ = check_files([str(recipe)])
    assert [(d.code, d.span.line, d.span.column) for d in diagnostics] == [(code, 11, column)]
