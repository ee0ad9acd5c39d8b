"""The command line: explain, check and fmt exit codes and output, in-process (typer's runner)
and through the console script's entry point, which answers as the app does and turns what
escapes the app (an interrupt, a closed pipe, a bug) into exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdlang import cli
from kdlang.cli import app, commands
from kdlang.ir.vocabulary import words
from kdlang.syntax.codes import CODES, fill
from tests.syntax.support import BAD, GOOD, has_checker

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

CLEAN = str(GOOD / "arith_cot.kd")
FAULTY = str(BAD / "52_duplicate_loss.kd")
TYPO = str(BAD / "30_unknown_setting_typo.kd")


@pytest.mark.parametrize("code", list(CODES))
def test_every_code_has_an_explanation(code):
    result = runner.invoke(app, ["explain", code])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"{code}: {CODES[code].title}\n\n")
    assert fill(CODES[code].explanation, words()) in result.stdout


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


def _main(args: list[str], stdin: str = "", **popen) -> subprocess.CompletedProcess:
    """``kdlang ARGS`` through the console script's entry point, in a fresh interpreter."""
    code = f"import sys\nfrom kdlang.cli import main\nsys.argv = ['kdlang', *{args!r}]\nmain()\n"
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.run(
        [sys.executable, "-c", code], input=stdin, text=True, timeout=60, cwd=ROOT, **streams
    )


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["check", CLEAN], 0),
        (["check", FAULTY], 1),
        (["check", TYPO, CLEAN, FAULTY, "--format", "json"], 1),
        (["check", "--format=json", FAULTY], 1),
        (["check", CLEAN, "--set", "recipe.seed=7"], 0),
        (["check", CLEAN, "--set=recipe.seed=oops"], 1),
        (["check", CLEAN, "--set", "nothing=1", "--set", "broken"], 1),
        (["check", CLEAN, "--format", "xml"], 2),
        (["check", "--format=", CLEAN], 2),
        (["check", "no/such/file.kd"], 2),
        (["check", str(GOOD)], 0),  # a folder: the recipes below it
    ],
)
def test_the_entry_point_checks_as_the_app_does(args, code):
    direct = _main(args)
    in_process = runner.invoke(app, args)
    assert direct.returncode == in_process.exit_code == code
    assert direct.stdout == in_process.stdout
    assert direct.stderr == in_process.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["check"], 0),  # no file: the embedded quickstart
        (["check", CLEAN, "--bogus"], 2),
        (["check", "--help"], 0),
        (["check", CLEAN, "--format"], 2),
        (["--help"], 0),
    ],
)
def test_usage_errors_and_help_from_the_entry_point(args, code):
    assert _main(args).returncode == code


def test_check_reads_standard_input_as_a_file_named_stdin():
    faulty = 'recipe "r" {}\nmodel m = hf("a", temperatur = 1)\n'
    result = _main(["check", "-"], stdin=faulty)
    assert result.returncode == 1
    assert "--> <stdin>:2:19" in result.stderr and "temperatur" in result.stderr
    clean = Path(CLEAN).read_text(encoding="utf-8")
    result = _main(["check", "-", "--format", "json"], stdin=clean)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize(
    "args", [["check", "--format", "json", FAULTY, TYPO], ["explain", "KD0007"], ["--help"]]
)
def test_a_closed_output_pipe_exits_1_without_a_second_error(args):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        result = _main(args, stdout=write)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (1, "")


def test_an_interrupted_check_exits_130(monkeypatch):
    import kdlang.check

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kdlang.check, "check_files", interrupted)
    monkeypatch.setattr(kdlang.check, "check_program", interrupted)
    monkeypatch.setattr(sys, "argv", ["kdlang", "check", CLEAN])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 130


def _failing_app(error: BaseException):
    def run():
        raise error

    return run


def test_an_interrupt_outside_any_command_exits_130(monkeypatch, capsys):
    monkeypatch.setattr(commands, "app", _failing_app(KeyboardInterrupt()))
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_a_closed_pipe_outside_any_command_exits_1(monkeypatch):
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    monkeypatch.setattr(commands, "app", _failing_app(BrokenPipeError()))
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    sys.stdout.flush()  # the reader is gone: flushing must not raise again


def test_an_internal_error_exits_3_with_a_report(monkeypatch, capsys):
    monkeypatch.setattr(commands, "app", _failing_app(RuntimeError("boom")))
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 3
    err = capsys.readouterr().err
    assert err.startswith(
        "internal error: kdlang failed unexpectedly (RuntimeError: boom).\n"
        f"This is a bug in kdlang, not in your recipe; please report it at {cli.REPORT_URL}"
    )
    assert "Traceback (most recent call last):" in err and "RuntimeError: boom" in err
