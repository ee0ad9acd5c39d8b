"""A planted secret appears in no output: not in what `check`, `plan` and `run` print, not in the
run's reports, not in any file kdlang writes (cache manifests, progress logs, the index, the
lock) — even when the server echoes the key back in its error, or a data file holding it is
malformed or fails a prompt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.timeout(180)

SECRET = "sk-planted-5f3c9a7e1d2b"
IN_DATA = "sk-in-the-data-8e41c07b"
"""A key-like value inside the user's data: cached with the data (it is theirs), never shown."""
RECIPE = """recipe "secrets" { seed = 1 }
model api = openai("scripted", base_url = env("KD_TEST_BASE_URL"), api_key = env("KD_PLANTED_KEY"),
                   max_retries = 0)
dataset qs = jsonl("qs.jsonl")
prompt ask = "Answer: {{ question }}"
stage answers = label(qs) { teacher = api  prompt = ask }
"""


def kdlang(*args: str, cwd: Path, url: str = "") -> subprocess.CompletedProcess:
    env = {"KD_PLANTED_KEY": SECRET, "KD_TEST_BASE_URL": url, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "kdlang", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, **env},
    )


def written(folder: Path, mine: set[Path]) -> dict[Path, bytes]:
    """Every file under ``folder`` that the test did not write itself."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p not in mine}


def test_a_planted_key_appears_in_no_output_or_file(tmp_path):
    recipe = tmp_path / "r.kd"
    recipe.write_text(RECIPE, encoding="utf-8")
    data = tmp_path / "qs.jsonl"
    data.write_text('{"question": "one"}\n{"question": "two"}\n', encoding="utf-8")
    printed = []
    printed += [kdlang("check", "r.kd", cwd=tmp_path), kdlang("plan", "r.kd", cwd=tmp_path)]
    with FakeOpenAIServer(api_key="the-right-key") as server:  # 401s echo the key they got
        failed = kdlang("run", "r.kd", cwd=tmp_path, url=server.url)
        assert server.authorizations and server.authorizations[0] == f"Bearer {SECRET}"
    assert failed.returncode == 1
    assert "HTTP 401" in failed.stdout + failed.stderr  # the failure is told, the key is not
    printed.append(failed)
    # the secret in the data: a malformed line and a prompt that fails on it name the place only
    data.write_text(f'{{"question": "one"}}\n{{"question": "{IN_DATA}" oops}}\n', encoding="utf-8")
    printed.append(kdlang("check", "r.kd", cwd=tmp_path))
    assert "qs.jsonl: line 2, column 40 is not JSON" in printed[-1].stderr
    data.write_text(f'{{"question": "{IN_DATA}"}}\n', encoding="utf-8")
    recipe.write_text(
        RECIPE.replace(
            "{{ question }}",
            "{{ {}[question] }}",
        ),
        encoding="utf-8",
    )
    printed.append(kdlang("run", "r.kd", cwd=tmp_path, url="http://127.0.0.1:9"))
    report = json.loads((tmp_path / "runs" / "secrets" / "report.json").read_text(encoding="utf-8"))
    (answers,) = [n for n in report["nodes"] if n["name"] == "answers"]
    assert answers["error"] == (
        "prompt `ask` cannot be rendered on row 1: 'dict object' has no attribute '…'"
    )
    for result in printed:
        for value in (SECRET, IN_DATA):
            assert value not in result.stdout and value not in result.stderr, result.args
    files = written(tmp_path, {recipe, data})
    assert any(p.name == "report.json" for p in files) and any(p.name == "lock" for p in files)
    assert [p for p, content in files.items() if SECRET.encode() in content] == []
    copies = [p for p, content in files.items() if IN_DATA.encode() in content]
    assert {p.name for p in copies} == {"data.arrow"}  # only the cached copy of the data
