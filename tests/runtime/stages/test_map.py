"""``map``: computed, replaced and narrowed columns on real rows, and what a change reruns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.runtime.stages.support import node, plan, rows, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[3]

DATA = """\
dataset data = inline([
  {instruction: "Add the numbers.", context: "2 and 3", output: "Sum: <answer>5</answer>", turns: [{role: "user", content: "2+3?"}, {role: "assistant", content: "5"}]},
  {instruction: "Name a colour.", context: "", output: "red", turns: [{role: "user", content: "colour?"}]},
])
"""


def test_map_computes_columns_row_by_row(tmp_path):
    recipe = write_recipe(
        tmp_path,
        DATA
        + """
stage prompts = map(data) {
  prompt = instruction + "\\n" + context
  answer = extract(output, r"<answer>(.*?)</answer>")
  tagged = if(answer == null, "none", format("answer={}", answer))
  last_text = last(turns).content
  first_role = turns[0].role
  n_turns = len(turns)
  words = split(instruction, " ")
  drop = [turns, context]
}
""",
    )
    document = run_recipe(recipe)
    assert rows(document, "prompts") == [
        {
            "instruction": "Add the numbers.",
            "output": "Sum: <answer>5</answer>",
            "prompt": "Add the numbers.\n2 and 3",
            "answer": "5",
            "tagged": "answer=5",
            "last_text": "5",
            "first_role": "user",
            "n_turns": 2,
            "words": ["Add", "the", "numbers."],
        },
        {
            "instruction": "Name a colour.",
            "output": "red",
            "prompt": "Name a colour.\n",
            "answer": None,
            "tagged": "none",
            "last_text": "colour?",
            "first_role": "user",
            "n_turns": 1,
            "words": ["Name", "a", "colour."],
        },
    ]
    assert node(document, "prompts")["rows_in"] == 2


def test_keep_narrows_and_a_rename_replaces_in_place(tmp_path):
    recipe = write_recipe(
        tmp_path,
        DATA
        + """
stage renamed = map(data) {
  keep = [output, instruction]
  instruction = upper(instruction)
  question = instruction
}
""",
    )
    out = rows(run_recipe(recipe), "renamed")
    # the input's column order; a line sees the columns computed above it
    assert [list(row) for row in out] == [["instruction", "output", "question"]] * 2
    assert [row["question"] for row in out] == ["ADD THE NUMBERS.", "NAME A COLOUR."]


def test_a_changed_expression_reruns_the_map_and_what_reads_it_only(tmp_path):
    body = DATA + (
        "stage m = map(data) { short = EXPR }\n"
        "stage f = filter(m) { keep len(short) > 3 }\n"
        "stage other = map(data) { n = 1 }\n"
    )
    recipe = write_recipe(tmp_path, body.replace("EXPR", "lower(instruction)"))
    first = run_recipe(recipe)
    assert {n["name"]: n["status"] for n in plan(recipe).values()} == dict.fromkeys(
        ["data", "m", "f", "other"], "cached"
    )
    write_recipe(tmp_path, body.replace("EXPR", "upper(instruction)"))
    statuses = {name: n["status"] for name, n in plan(recipe).items()}
    assert statuses == {"data": "cached", "m": "will run", "f": "will run", "other": "cached"}
    second = run_recipe(recipe)
    assert [r["short"] for r in rows(second, "m")] == ["ADD THE NUMBERS.", "NAME A COLOUR."]
    assert node(first, "m")["fingerprint"] != node(second, "m")["fingerprint"]
    # the same expression written otherwise (spacing, comments) is the same stage
    write_recipe(tmp_path, "# the same\n" + body.replace("EXPR", "upper( instruction )"))
    assert plan(recipe)["m"]["status"] == "cached"


@pytest.mark.slow
def test_a_map_killed_while_it_runs_reruns_to_the_same_bytes(tmp_path):
    """SIGKILLed while the map writes: nothing of it is committed; the next run reads the
    committed dataset from the cache and writes the artifact an uninterrupted run writes."""
    count = 200_000
    lines = "".join(
        json.dumps({"id": i, "text": f"row {i} <answer>{i * 7}</answer>"}) + "\n"
        for i in range(count)
    )
    body = """
dataset data = jsonl("data.jsonl")
stage m = map(data) {
  answer = int(extract(text, r"<answer>(\\d+)</answer>"))
  label = format("{}:{}", id, lower(text))
}
"""
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    for folder in (clean, killed):
        write_recipe(folder, body)
        (folder / "data.jsonl").write_text(lines, encoding="utf-8")
    fingerprint = plan(killed / "recipe.kd")["m"]["fingerprint"]
    command = [sys.executable, "-m", "kdlang", "run", str(killed / "recipe.kd")]
    process = subprocess.Popen(
        [*command, "--workdir", str(killed), "--device", "cpu"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    writing = killed / ".kdcache" / "tmp"
    deadline = time.monotonic() + 60
    while not list(writing.glob(f"{fingerprint}.*")):
        assert process.poll() is None, "the run ended before the map started"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert plan(killed / "recipe.kd")["m"]["status"] == "will run"
    assert plan(killed / "recipe.kd")["data"]["status"] == "cached"
    resumed = run_recipe(killed / "recipe.kd")
    assert node(resumed, "data")["status"] == "cached"
    expected = run_recipe(clean / "recipe.kd")
    outputs = [Path(node(d, "m")["output"]) / "data.arrow" for d in (resumed, expected)]
    assert outputs[0].read_bytes() == outputs[1].read_bytes()
    assert rows(resumed, "m")[count - 1] == {
        "id": count - 1,
        "text": f"row {count - 1} <answer>{(count - 1) * 7}</answer>",
        "answer": (count - 1) * 7,
        "label": f"{count - 1}:row {count - 1} <answer>{(count - 1) * 7}</answer>",
    }


def test_a_column_of_values_of_several_kinds_fails_the_stage_with_its_rows(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
dataset answers = inline([{t: "[1, 2]"}, {t: "oops"}, {t: "{\\"a\\": 1}"}])
stage parsed = map(answers) { value = json(t) }
stage as_text = map(answers) { value = str(json(t)) }
""",
    )
    document = run_recipe(recipe, expect=1)
    failed = node(document, "parsed")
    assert failed["status"] == "failed"
    assert "column `value` holds a list in row 1 and a map in row 3" in failed["error"]
    assert node(document, "as_text")["status"] == "ran"


def test_a_column_named_input_is_computed_like_any_other(tmp_path):
    recipe = write_recipe(
        tmp_path,
        DATA
        + 'stage m = map(data) {\n  input = instruction + "\\n" + context\n  keep = [output]\n}\n',
    )
    assert rows(run_recipe(recipe), "m") == [
        {"output": "Sum: <answer>5</answer>", "input": "Add the numbers.\n2 and 3"},
        {"output": "red", "input": "Name a colour.\n"},
    ]
