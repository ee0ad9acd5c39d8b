"""``kdlang plan`` (json, dot, table) and ``kdlang lock``: the documented JSON schema, every
recipe of ``recipes/`` and the fixture recipes, and the lock file's same/changed/new marks."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdlang.cli import app
from kdlang.plan import PLAN_SCHEMA_VERSION
from kdlang.plan.estimates import Estimate
from tests.check.support import HEADER, write
from tests.plan.support import NODES, RECIPE, plan_of
from tests.plan.test_status import record_run

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "plan.md"
RECIPES = sorted((REPO / "recipes").glob("*.kd"))

TOP_LEVEL = {"schema", "kdlang", "recipe", "file", "seed", "cache", "nodes"}
NODE_KEYS = {
    "name",
    "kind",
    "op",
    "inputs",
    "fingerprint",
    "status",
    "reason",
    "columns",
    "estimates",
}
LOCK_KEYS = {"kdlang", "recipe", "seed", "nodes"}

FIXTURES = {
    "full": RECIPE,
    "generating": HEADER
    + (
        'dataset topics = csv("data/topics.csv")\n'
        'prompt write = "Write about {{ topic }} ({{ style }})."\n'
        'prompt rubric = "Rate: {{ output }}"\n'
        "stage seeds = expand(problems) { teacher = teacher  column = question  n = 5 }\n"
        "stage written = curate(topics) { teacher = teacher  prompt = write  per_item = 2 }\n"
        "stage judged = judge(written) { judge = teacher  prompt = rubric }\n"
        "stage prefs = pairs(judged) { group = topic  response = output }\n"
        "train dpo { student = student  data = prefs  loss dpo weight 1.0 }\n"
        'export dpo to "out/dpo" { card = false }\n'
    ),
    "black_box": HEADER
    + (
        'model api = openai("gpt-4o-mini", base_url = env("BASE_URL"), api_key = env("API_KEY"))\n'
        'prompt solve = "Q: {{ question }}"\n'
        "stage answers = label(problems) { teacher = api  prompt = solve  output = reply }\n"
        "stage clean = filter(answers) {\n"
        "  keep len(reply) > 0\n"
        "  decontaminate question against heldout\n"
        "}\n"
        "train sft { student = student  data = clean  prompt = solve  target = reply\n"
        "  loss sft weight 1.0 }\n"
        "eval score = evaluate(sft, heldout) { prompt = solve  metric numeric_equal(output, answer) }\n"
    ),
}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def plan_json(recipe: Path, *extra: str) -> dict:
    cache = str(recipe.parent / "c")
    result = invoke("plan", str(recipe), "--format", "json", "--cache", cache, *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_schema(document: dict, with_lock: bool = False) -> None:
    assert set(document) == TOP_LEVEL
    assert document["schema"] == PLAN_SCHEMA_VERSION
    names = [node["name"] for node in document["nodes"]]
    assert len(names) == len(set(names))
    seen: set[str] = set()
    for node in document["nodes"]:
        assert set(node) == NODE_KEYS | ({"lock"} if with_lock else set())
        assert node["kind"] in ("dataset", "stage", "train", "eval", "export")
        assert re.fullmatch("[0-9a-f]{64}", node["fingerprint"])
        assert node["status"] in ("cached", "will run")
        assert (node["reason"] is None) == (node["status"] == "cached")
        assert set(node["inputs"]) <= seen  # execution order
        assert "rows" in node["estimates"]
        assert set(node["estimates"]) <= {f.name for f in fields(Estimate)}
        assert (node["columns"] is None) or node["kind"] in ("dataset", "stage")
        seen.add(node["name"])


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_plan_json_of_fixture_recipes(project: Path, name: str):
    write(project, {f"{name}.kd": FIXTURES[name]})
    document = plan_json(project / f"{name}.kd")
    assert_schema(document)
    assert document["file"] == str(project / f"{name}.kd")


def test_plan_json_values(project: Path):
    write(project, {"recipe.kd": RECIPE})
    document = plan_json(project / "recipe.kd")
    assert (document["recipe"], document["seed"], document["cache"]) == (
        "arith-cot",
        3,
        str(project / "c"),
    )
    nodes = {node["name"]: node for node in document["nodes"]}
    assert list(nodes) == NODES
    assert [nodes[n]["inputs"] for n in ("rationales", "accuracy", "export:distill")] == [
        ["problems"],
        ["heldout", "distill"],
        ["distill"],
    ]
    assert nodes["rationales"]["columns"] == {
        "question": "str",
        "answer": "str",
        "level": "int",
        "rationale": "str",
        "sample": "int",
    }
    assert nodes["rationales"]["estimates"] == {
        "rows": 12,
        "teacher_calls": 12,
        "generated_tokens_max": 1152,
    }
    assert nodes["export:distill"]["estimates"] == {"rows": None}
    in_process = plan_of(project, cache=project / "c")
    assert [n["fingerprint"] for n in document["nodes"]] == [
        n.fingerprint for n in in_process.nodes
    ]


@pytest.mark.skipif(not RECIPES, reason="recipes/ holds no recipe yet")
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_plan_json_of_every_shipped_recipe(recipe: Path, tmp_path: Path):
    result = invoke("plan", str(recipe), "--format", "json", "--cache", str(tmp_path))
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert_schema(document, with_lock=Path(str(recipe) + ".lock").is_file())
    assert document["nodes"]


def test_a_recipe_with_errors_gives_diagnostics_not_a_plan(project: Path):
    write(project, {"recipe.kd": RECIPE.replace("{{ question }}", "{{ questoin }}")})
    result = invoke("plan", str(project / "recipe.kd"), "--format", "json")
    assert result.exit_code == 1
    [diagnostic] = json.loads(result.stdout)
    assert (diagnostic["code"], diagnostic["line"], diagnostic["column"]) == ("KD0206", 12, 7)


def test_every_field_is_documented():
    documented = set(re.findall(r"^\| `([a-z_]+)`", DOCS.read_text(encoding="utf-8"), re.M))
    estimates = {f.name for f in fields(Estimate)} - {"extra"}
    missing = (TOP_LEVEL | NODE_KEYS | {"lock"} | estimates) - documented
    assert missing == set()


def test_dot(project: Path):
    write(project, {"recipe.kd": RECIPE})
    result = invoke("plan", str(project / "recipe.kd"), "--format", "dot", "--cache", "c")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == 'digraph "arith-cot" {'
    assert '  "problems" [shape=cylinder, label="problems\\ndataset"];' in lines
    assert '  "distill" [shape=box3d, label="distill\\ntrain"];' in lines
    edges = [line.strip() for line in lines if "->" in line]
    assert edges == [
        '"problems" -> "rationales";',
        '"rationales" -> "clean";',
        '"clean" -> "soft";',
        '"soft" -> "distill";',
        '"heldout" -> "accuracy";',
        '"distill" -> "accuracy";',
        '"distill" -> "export:distill";',
    ]


def test_table(project: Path):
    write(project, {"recipe.kd": RECIPE})
    result = invoke("plan", str(project / "recipe.kd"), "--cache", str(project / "c"))
    assert result.exit_code == 0
    assert "plan of arith-cot" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "│" in line and "never run" in line]
    assert [row.split("│")[2].strip() for row in rows] == NODES
    assert "12 teacher calls" in result.stdout
    assert "fused_linear" in result.stdout


def test_lock_writes_fingerprints_and_outputs(project: Path):
    write(project, {"recipe.kd": RECIPE})
    plan = plan_of(project, cache=project / "c")
    record_run(project, plan)  # into project/cache
    result = invoke("lock", str(project / "recipe.kd"), "--cache", str(project / "cache"))
    assert result.exit_code == 0
    assert "wrote" in result.stderr
    lock = json.loads((project / "recipe.kd.lock").read_text(encoding="utf-8"))
    assert set(lock) == LOCK_KEYS
    assert (lock["recipe"], lock["seed"]) == ("arith-cot", 3)
    assert sorted(lock["nodes"]) == sorted(NODES)
    for node in plan.nodes:
        assert lock["nodes"][node.name] == {
            "op": node.op,
            "fingerprint": node.fingerprint,
            "output": "sha256:" + node.fingerprint[:16],
            "rows": 3,
        }


def test_plan_marks_nodes_against_the_lock(project: Path):
    write(project, {"recipe.kd": RECIPE})
    recipe = project / "recipe.kd"
    assert invoke("lock", str(recipe), "--cache", str(project / "c")).exit_code == 0
    lock = json.loads(Path(str(recipe) + ".lock").read_text(encoding="utf-8"))
    assert lock["nodes"]["problems"] == {
        "op": "dataset",
        "fingerprint": plan_of(project).node("problems").fingerprint,
    }
    document = plan_json(recipe)
    assert_schema(document, with_lock=True)
    assert {node["lock"] for node in document["nodes"]} == {"same"}

    marks = {n["name"]: n["lock"] for n in plan_json(recipe, "--set", "recipe.seed=5")["nodes"]}
    assert marks == dict.fromkeys(NODES, "changed")
    write(
        project,
        {
            "recipe.kd": RECIPE.replace("in 8..400", "in 8..300")
            + "stage extra = filter(problems) { keep len(answer) > 0 }\n"
        },
    )
    marks = {n["name"]: n["lock"] for n in plan_json(recipe)["nodes"]}
    assert marks == {
        "problems": "same",
        "heldout": "same",
        "extra": "new",
        "rationales": "same",
        "clean": "changed",
        "soft": "changed",
        "distill": "changed",
        "accuracy": "changed",
        "export:distill": "changed",
    }


def test_the_table_shows_changes_since_the_lock(project: Path):
    write(project, {"recipe.kd": RECIPE})
    recipe = project / "recipe.kd"
    assert invoke("lock", str(recipe), "--cache", str(project / "c")).exit_code == 0
    result = invoke("plan", str(recipe), "--cache", str(project / "c"), "--set", "distill.lr=1e-3")
    assert result.exit_code == 0
    assert result.stdout.count("changed since lock") == 3  # distill, accuracy, export
