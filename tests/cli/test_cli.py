"""The command line in-process (typer's runner): explain, check and fmt exit codes and output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from kdlang.cli import app
from kdlang.syntax.codes import CODES
from tests.syntax.support import BAD, GOOD, has_checker

runner = CliRunner()


@pytest.mark.parametrize("code", list(CODES))
def test_every_code_has_an_explanation(code):
    result = runner.invoke(app, ["explain", code])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"{code}: {CODES[code].title}\n\n")
    assert CODES[code].explanation in result.stdout


def test_explain_is_case_insensitive():
    assert runner.invoke(app, ["explain", "kd0102"]).stdout.startswith("KD0102: unknown setting")


def test_explain_unknown_code_is_a_usage_error():
    result = runner.invoke(app, ["explain", "KD9999"])
    assert result.exit_code == 2
    assert "unknown code 'KD9999'" in result.stderr
    assert "KD0001" in result.stderr


def test_explain_from_the_installed_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "kdlang", "explain", "KD0007"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("KD0007: unknown escape sequence")


def test_no_arguments_prints_help():
    result = runner.invoke(app, [])
    assert result.exit_code in (0, 2)
    for command in ("check", "fmt", "explain"):
        assert command in result.output


@pytest.mark.skipif(not has_checker(), reason="kdlang.check.check_files missing")
def test_check_several_files_reports_each_in_order():
    files = [
        str(BAD / "30_unknown_setting_typo.kd"),
        str(GOOD / "arith_cot.kd"),
        str(BAD / "07_unclosed_string.kd"),
    ]
    result = runner.invoke(app, ["check", *files, "--format", "json"])
    assert result.exit_code == 1
    found = json.loads(result.stdout)
    assert [(d["file"], d["code"]) for d in found] == [(files[0], "KD0102"), (files[2], "KD0003")]


@pytest.mark.skipif(not has_checker(), reason="kdlang.check.check_files missing")
def test_check_text_summary_counts_errors():
    result = runner.invoke(app, ["check", str(BAD / "52_duplicate_loss.kd")])
    assert result.exit_code == 1
    assert result.stderr.rstrip().endswith("1 error")
    assert "error[KD0106]: loss `forward_kl` appears twice" in result.stderr
    assert "= note: first given here" in result.stderr


def test_fmt_check_of_stdin():
    formatted = (GOOD / "arith_cot.kd").read_text(encoding="utf-8")
    assert runner.invoke(app, ["fmt", "--check", "-"], input=formatted).exit_code == 0
    messy = formatted.replace("seed = 1234", "seed=1234")
    assert runner.invoke(app, ["fmt", "--check", "-"], input=messy).exit_code == 1


def test_fmt_of_stdin_with_a_syntax_error():
    result = runner.invoke(app, ["fmt", "-"], input='model m = hf("x"\n')
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "error[KD0004]" in result.stderr
    assert "--> <stdin>:1:13" in result.stderr
