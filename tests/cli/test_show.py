"""``kdlang show NAME [FILE]``: the rows of a dataset or stage from the cache."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kdlang.cli import app

pytestmark = pytest.mark.timeout(120)

RECIPE = """recipe "show" { seed = 1 }
dataset words = inline([{q: "a", n: 1}, {q: "bb\\ncc", n: 2}, {q: "ddd", n: 3}])
stage long = filter(words) { keep len(q) > 1 }
train t {
  student = s  data = long  target = q  max_steps = 1
  loss sft weight 1.0
}
model s = hf("Qwen/Qwen2.5-0.5B")
"""


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_show_prints_the_cached_rows_as_a_table_or_json_lines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.kd").write_text(RECIPE.split("train t")[0], encoding="utf-8")
    assert invoke("run", "r.kd", "--device", "cpu").exit_code == 0
    lines = invoke("show", "long", "r.kd", "--format", "jsonl")
    assert lines.exit_code == 0
    assert [json.loads(line) for line in lines.stdout.splitlines()] == [
        {"q": "bb\ncc", "n": 2},
        {"q": "ddd", "n": 3},
    ]
    one = invoke("show", "words", "r.kd", "--format", "jsonl", "--limit", "1")
    assert one.stdout == '{"q": "a", "n": 1}\n'
    table = invoke("show", "long", "r.kd", "--color", "never")
    assert table.exit_code == 0
    assert "long: 2 of 2 rows" in table.stdout and "bb⏎cc" in table.stdout


def test_show_says_what_it_cannot_show(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.kd").write_text(RECIPE, encoding="utf-8")
    never_ran = invoke("show", "long", "r.kd")
    assert never_ran.exit_code == 1
    assert never_ran.stderr == (
        "error: `long` is not in the cache .kdcache (it will run); run the recipe first\n"
    )
    train = invoke("show", "t", "r.kd")
    assert train.exit_code == 2 and "`t` is a train, which holds no rows" in train.stderr
    unknown = invoke("show", "lng", "r.kd")
    assert unknown.exit_code == 2
    assert (
        unknown.stderr == "error: `lng` is no dataset or stage (datasets and stages: words, long)\n"
    )
    assert invoke("show", "long", "r.kd", "--limit", "-1").exit_code == 2
