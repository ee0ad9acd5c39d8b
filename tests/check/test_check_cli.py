"""``kdlang check``: the checker's diagnostics through the command line, as text and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kdlang.cli import app
from tests.check.support import HEADER, write

TYPO = HEADER + (
    'prompt solve = """\n'
    "Q: {{ questoin }}\n"  # line 6
    'A:"""\n'
    "stage answers = label(problems) { teacher = teacher  prompt = solve }\n"
)


def test_json_diagnostics_carry_code_and_positions(project: Path):
    write(project, {"recipe.kd": TYPO})
    result = CliRunner().invoke(
        app, ["check", str(project / "recipe.kd"), "--format", "json", "--set", "heldout.limit=0"]
    )
    assert result.exit_code == 1
    found = json.loads(result.stdout)
    assert [(d["code"], d["file"], d["line"], d["column"]) for d in found] == [
        ("KD0206", str(project / "recipe.kd"), 6, 7),
        ("KD0104", "--set heldout.limit", 1, 15),
    ]
    first = found[0]
    assert (first["end_line"], first["end_column"], first["severity"]) == (6, 15, "error")
    assert first["help"] == 'did you mean "question"?'
    assert first["notes"][0]["line"] == 8


def test_text_diagnostics_show_the_line_and_a_caret(project: Path):
    write(project, {"recipe.kd": TYPO})
    result = CliRunner().invoke(app, ["check", str(project / "recipe.kd")])
    assert result.exit_code == 1
    assert "error[KD0206]" in result.stderr
    assert f"--> {project / 'recipe.kd'}:6:7" in result.stderr
    assert "6 | Q: {{ questoin }}" in result.stderr
    assert "  |       ^^^^^^^^\n" in result.stderr
    assert result.stderr.rstrip().endswith("1 error")


def test_a_correct_recipe_passes(project: Path):
    write(project, {"recipe.kd": TYPO.replace("questoin", "question")})
    result = CliRunner().invoke(app, ["check", str(project / "recipe.kd")])
    assert (result.exit_code, result.stderr) == (0, "")
