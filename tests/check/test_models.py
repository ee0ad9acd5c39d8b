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
