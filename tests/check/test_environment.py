"""``env("NAME")`` unset: ``check`` and ``plan`` warn (KD0406) at the reference; ``run`` stops
before its first stage when a stage that will run needs it, and not when that stage is cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.check.support import diagnose
from tests.fixtures.openai_server import FakeOpenAIServer
from tests.runtime.stages.support import BASE_URL_ENV, api_model, cli, run_recipe, write_recipe

KEY = "KD_TEST_UNSET_KEY"
BODY = (
    'dataset qs = inline([{question: "one"}, {question: "two"}])\n'
    + api_model("api", concurrency=2, api_key=f'env("{KEY}")')
    + '\nprompt ask = "Answer: {{ question }}"\n'
    + "stage answers = label(qs) { teacher = api  prompt = ask  max_tokens = 8 }\n"
)


def test_check_warns_at_each_unset_variable(project: Path, monkeypatch):
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    monkeypatch.delenv(KEY, raising=False)
    found = diagnose(project, BODY)
    assert [(d.code, d.severity.value, d.message) for d in found] == [
        ("KD0406", "warning", f"environment variable {BASE_URL_ENV} is not set"),
        ("KD0406", "warning", f"environment variable {KEY} is not set"),
    ]
    line = BODY.splitlines()[1]
    assert [(d.span.line, d.span.column) for d in found] == [
        (2, line.index(f'env("{BASE_URL_ENV}")') + 1),
        (2, line.index(f'env("{KEY}")') + 1),
    ]
    monkeypatch.setenv(KEY, "secret-value")
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9")
    assert diagnose(project, BODY) == []


def test_plan_warns_and_succeeds(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(KEY, raising=False)
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9")
    recipe = write_recipe(tmp_path, BODY)
    result = cli("plan", str(recipe), "--cache", str(tmp_path / ".kdcache"))
    assert result.exit_code == 0, result.output
    assert f"warning[KD0406]: environment variable {KEY} is not set" in result.output


@pytest.mark.timeout(60)
def test_run_stops_before_the_first_stage_unless_the_stage_is_cached(tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path, BODY)
    with FakeOpenAIServer() as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        monkeypatch.delenv(KEY, raising=False)
        result = cli("run", str(recipe), "--workdir", str(tmp_path), "--device", "cpu")
        assert result.exit_code == 1, result.output
        assert f"error[KD0406]: environment variable {KEY} is not set" in result.output
        assert server.requests == 0 and not (tmp_path / "runs").exists()
        assert not (tmp_path / ".kdcache").exists()  # not even the dataset stage ran

        monkeypatch.setenv(KEY, "secret-value")
        run_recipe(recipe)
        asked = server.requests
        assert asked == 2
        monkeypatch.delenv(KEY)  # everything is cached now: no secret is needed
        document = run_recipe(recipe)
        assert {n["status"] for n in document["nodes"]} == {"cached"}
        assert server.requests == asked
    assert "secret-value" not in result.output
