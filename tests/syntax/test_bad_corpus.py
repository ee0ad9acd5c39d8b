"""The corpus of broken recipes: each file in ``bad/`` holds one realistic mistake and names, on
its first line, the code and position of the diagnostic it must produce."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from kdlang.syntax.codes import CODES
from kdlang.syntax.diagnostics import render, visible_text
from tests.syntax.support import BAD, GOOD, diagnose, expectation, first_error, has_checker

CORPUS = sorted(BAD.glob("*.kd"))


def test_corpus_is_large_and_named_by_number():
    assert len(CORPUS) >= 45
    for path in CORPUS:
        assert re.fullmatch(r"\d{2,3}_[a-z0-9_]+\.kd", path.name), path.name
    numbers = [int(path.name.split("_", 1)[0]) for path in CORPUS]
    assert len(set(numbers)) == len(numbers)


def test_corpus_covers_every_syntax_and_structure_code():
    expected = {expectation(path)[0] for path in CORPUS}
    wanted = {code for code in CODES if code.startswith(("KD00", "KD01"))}
    assert wanted - expected == set()


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_first_error_has_the_expected_code_and_position(path):
    code, line, column = expectation(path)
    diagnostics, sources = diagnose(path)  # a Python exception escaping fails the test
    primary = first_error(diagnostics)
    assert primary is not None, "no error reported"
    assert (primary.code, primary.span.line, primary.span.column) == (code, line, column), render(
        [primary], sources
    )
    assert primary.span.file == str(path)
    assert (primary.span.end_line, primary.span.end_column) > (line, column)
    assert primary.message and "Input should" not in primary.message  # no raw pydantic text

    text = render([primary], sources)
    _assert_rendering(text, primary, sources[str(path)])

    # Parsing and lowering alone already find a syntax or structure mistake (KD00xx, KD01xx):
    # the later checks add no noise before it. Later codes need the checker.
    if code.startswith(("KD00", "KD01")):
        alone, _ = diagnose(path, checker=False)
        assert first_error(alone) == primary


def _assert_rendering(text: str, diagnostic, source: str) -> None:
    lines = text.splitlines()
    span = diagnostic.span
    assert lines[0] == f"error[{diagnostic.code}]: {visible_text(diagnostic.message)}"
    assert lines[1].strip() == f"--> {span.file}:{span.line}:{span.column}"
    source_line = source.splitlines()[span.line - 1].replace("\t", " ")
    numbered = [i for i, row in enumerate(lines) if re.match(rf"^\s*{span.line} \| ", row)]
    assert numbered, text
    row = numbered[0]
    assert lines[row].split(" | ", 1)[1] == source_line
    caret = re.match(r"^\s* \| (\s*)(\^+)$", lines[row + 1])
    assert caret, text
    assert len(caret.group(1)) == span.column - 1
    if diagnostic.help:
        assert lines[-1].strip() == f"= help: {diagnostic.help}"


# -- the command line ----------------------------------------------------------------------------

JSON_KEYS = {
    "severity",
    "code",
    "message",
    "file",
    "line",
    "column",
    "end_line",
    "end_column",
    "help",
}


def _kdlang(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kdlang", *args], capture_output=True, text=True, timeout=60
    )


needs_checker = pytest.mark.skipif(not has_checker(), reason="kdlang.check.check_files missing")


@needs_checker
@pytest.mark.parametrize(
    "name", ["07_unclosed_string.kd", "30_unknown_setting_typo.kd", "52_duplicate_loss.kd"]
)
def test_check_json_reports_the_diagnostic_and_exits_1(name):
    path = BAD / name
    code, line, column = expectation(path)
    result = _kdlang("check", str(path), "--format", "json")
    assert result.returncode == 1, result.stderr
    found = json.loads(result.stdout)
    assert isinstance(found, list) and found
    for entry in found:
        assert set(entry) >= JSON_KEYS
    entry = min(found, key=lambda d: (d["line"], d["column"]))
    assert (entry["severity"], entry["code"], entry["line"], entry["column"]) == (
        "error",
        code,
        line,
        column,
    )
    assert entry["file"] == str(path)
    assert (entry["end_line"], entry["end_column"]) > (line, column)


@needs_checker
def test_check_text_renders_to_stderr_and_exits_1():
    path = BAD / "30_unknown_setting_typo.kd"
    result = _kdlang("check", str(path))
    assert result.returncode == 1
    assert "error[KD0102]: unknown setting `tempreature`" in result.stderr
    assert f"--> {path}:11:3" in result.stderr
    assert 'help: did you mean "temperature"?' in result.stderr
    assert "Traceback" not in result.stderr


@needs_checker
def test_check_exits_0_on_a_good_recipe():
    result = _kdlang("check", str(GOOD / "arith_cot.kd"), "--format", "json")
    assert result.returncode == 0, result.stdout
    assert json.loads(result.stdout) == []


def test_check_exits_2_on_a_missing_file(tmp_path):
    result = _kdlang("check", str(tmp_path / "absent.kd"))
    assert result.returncode == 2
    assert "no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_exits_2_on_an_unknown_format():
    result = _kdlang("check", str(GOOD / "arith_cot.kd"), "--format", "xml")
    assert result.returncode == 2
    assert "--format must be one of text, json" in result.stderr
