"""``kdlang check`` runs without typer when its arguments are plain, and then answers exactly as
the typer app does: same output, same exit code. Anything else is left to typer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdlang.cli import app
from kdlang.cli.check_cmd import parse_args
from tests.syntax.support import BAD, GOOD

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

CLEAN = str(GOOD / "arith_cot.kd")
FAULTY = str(BAD / "52_duplicate_loss.kd")
TYPO = str(BAD / "30_unknown_setting_typo.kd")


@pytest.mark.parametrize(
    ("args", "parsed"),
    [
        (["a.kd"], (["a.kd"], "text", [])),
        (["a.kd", "b.kd", "--format", "json"], (["a.kd", "b.kd"], "json", [])),
        (["--format=json", "a.kd"], (["a.kd"], "json", [])),
        (["--format=", "a.kd"], (["a.kd"], "", [])),
        (["a.kd", "--set", "x.lr=1", "--set=y=a=b"], (["a.kd"], "text", ["x.lr=1", "y=a=b"])),
        (["-"], (["-"], "text", [])),
        (["a.kd", "--set", "--format=json"], None),  # an option value starting with `-`
        (["a.kd", "--format"], None),  # a missing value
        (["a.kd", "--format", "json", "--format=text"], None),  # given twice
        ([], None),
        (["--set", "x=1"], None),  # no file
        (["a.kd", "--help"], None),
        (["-h"], None),
        (["--", "a.kd"], None),
        (["a.kd", "--bogus"], None),
        (["a.kd", "-x"], None),
    ],
)
def test_which_arguments_are_read_without_typer(args, parsed):
    assert parse_args(args) == parsed


def _main(args: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    """``kdlang ARGS`` through the console script's entry point, reporting whether typer was
    imported."""
    code = (
        "import sys\n"
        "from kdlang.cli import main\n"
        f"sys.argv = ['kdlang', *{args!r}]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    sys.stderr.write(f'typer imported: {\"typer\" in sys.modules}')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["check", CLEAN],
        ["check", FAULTY],
        ["check", TYPO, CLEAN, FAULTY, "--format", "json"],
        ["check", "--format=json", FAULTY],
        ["check", CLEAN, "--set", "recipe.seed=7"],
        ["check", CLEAN, "--set=recipe.seed=oops"],
        ["check", CLEAN, "--set", "nothing=1", "--set", "broken"],
        ["check", CLEAN, "--format", "xml"],
        ["check", "no/such/file.kd"],
        ["check", str(GOOD)],
    ],
)
def test_plain_check_runs_without_typer_and_answers_as_typer_does(args):
    direct = _main(args)
    assert direct.stderr.endswith("typer imported: False")
    through_typer = runner.invoke(app, args)
    assert direct.returncode == through_typer.exit_code
    assert direct.stdout == through_typer.stdout
    assert direct.stderr.removesuffix("typer imported: False") == through_typer.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["check"], 2),
        (["check", CLEAN, "--bogus"], 2),
        (["check", "--help"], 0),
        (["check", CLEAN, "--format"], 2),
        (["--help"], 0),
    ],
)
def test_anything_else_goes_to_typer(args, code):
    result = _main(args)
    assert result.returncode == code
    assert result.stderr.endswith("typer imported: True")


def test_check_reads_standard_input_as_a_file_named_stdin():
    faulty = 'recipe "r" {}\nmodel m = hf("a", temperatur = 1)\n'
    result = _main(["check", "-"], stdin=faulty)
    assert result.returncode == 1
    assert "--> <stdin>:2:19" in result.stderr and "temperatur" in result.stderr
    clean = Path(CLEAN).read_text(encoding="utf-8")
    result = _main(["check", "-", "--format", "json"], stdin=clean)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
