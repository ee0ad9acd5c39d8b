"""Model paths (``kdlang.check.models``): a path that can only be local must exist; hub ids are
left to the runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlang.check.models import looks_local
from tests.check.support import diagnose, only

LOCAL = ["/opt/models/m", "./m", "../m", "~/m", "a/b/c", "models\\m", ".", ".."]
HUB = ["gpt2", "meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-0.5B-Instruct"]


@pytest.mark.parametrize("path", LOCAL)
def test_paths_that_cannot_be_hub_ids(path):
    assert looks_local(path)


@pytest.mark.parametrize("path", HUB)
def test_hub_ids(path):
    assert not looks_local(path)


@pytest.mark.parametrize("path", ["./models/techer", "../elsewhere/m", "models/teacher/extra"])
def test_a_missing_local_model_folder_is_reported_at_its_path(project: Path, path: str):
    text = f'model teacher = hf("{path}")\n'
    d = only(diagnose(project, text), "KD0402")
    assert d.message == f"model folder not found: {path}"
    assert (d.span.line, d.span.column, d.span.end_column) == (1, 20, 22 + len(path))
    assert str(project / path) in d.help or str(Path(path).expanduser()) in d.help


def test_existing_local_folders_and_hub_ids_pass(project: Path):
    text = (
        'model a = hf("./models/teacher")\n'
        f'model b = hf("{project / "models" / "student"}")\n'
        'model c = hf("meta-llama/Llama-3.2-1B")\n'  # a hub id: the runtime resolves it
        'model d = hf("models/other")\n'
    )
    assert diagnose(project, text) == []


def test_check_offline_warns_of_hub_ids_missing_from_the_local_cache(project: Path, monkeypatch):
    from kdlang.check import check_program
    from kdlang.check.models import uncached_hub_models
    from kdlang.syntax.diagnostics import Collector

    hub = project / "hf-home" / "hub"
    snapshot = hub / "models--org--cached" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}", encoding="utf-8")
    (hub / "models--org--cached" / "refs").mkdir()
    (hub / "models--org--cached" / "refs" / "main").write_text("abc123", encoding="utf-8")
    monkeypatch.setenv("HF_HOME", str(project / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    recipe = project / "offline.kd"
    recipe.write_text(
        'model a = hf("org/cached")\nmodel b = hf("org/missing")\nmodel c = hf("models/other")\n',
        encoding="utf-8",
    )
    assert diagnose(project, recipe.read_text(encoding="utf-8")) == []  # plain check: nothing
    errors = Collector()
    program = check_program(str(recipe), [], errors)
    uncached_hub_models(program, errors)
    (d,) = errors.diagnostics
    assert (d.code, d.severity.name, d.span.line, d.span.column) == ("KD0414", "WARNING", 2, 14)
    assert d.message == (
        "`org/missing` is not in the local Hugging Face cache: a run without the network "
        "(HF_HUB_OFFLINE=1) cannot load it"
    )
    from typer.testing import CliRunner

    from kdlang.cli import app

    result = CliRunner().invoke(app, ["check", str(recipe), "--offline", "--color", "never"])
    assert result.exit_code == 0 and "warning[KD0414]" in result.stderr
