"""``export NAME to hub("owner/name")``: what huggingface_hub sends to a hub (a loopback stand-in,
``HF_ENDPOINT`` pointed at it): the repo created, the branch, the commit with the files'
bytes; the model card's metadata; rows as parquet in a dataset repo; the token sent, never
shown."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.fixtures.hub_server import HubServer
from tests.runtime.train.support import artifact, models, node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

TOKEN = "hf_test_token_4d1f0c9a"

BODY = """
dataset rows = inline([{q: "What is 1 plus 2?", a: "3"}, {q: "Say hi.", a: "Hi!"}])
prompt ask = "Q: {{ q }}\\nA:"
train t {
  student = student  data = rows  prompt = ask  target = a  max_steps = 2  batch = 2
  loss sft weight 1.0
}
export t to hub("my-org/tiny-student") {
  private = true  revision = "dev"  token = env("KD_HUB_TOKEN")
  license = "apache-2.0"  tags = ["math", "tiny"]
}
export rows to hub("my-org/tiny-rows") { token = env("KD_HUB_TOKEN")  license = "mit" }
"""


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import constants

    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("KD_HUB_TOKEN", TOKEN)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server


def header(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_a_train_and_rows_are_committed_with_their_cards(tmp_path, tiny_pair, hub):
    recipe = write_recipe(tmp_path, models(tiny_pair) + BODY, title="hub-test")
    report = run_recipe(recipe)
    assert hub.kinds() == [
        "create", "branch", "validate", "preupload", "commit",  # a model repo, branch dev
        "create", "validate", "preupload", "commit",  # the rows: a dataset repo, main
    ]  # fmt: skip
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in hub.requests)
    model_create, _, _, _, model_commit, data_create, _, _, data_commit = hub.requests
    assert model_create["body"] == {
        "name": "tiny-student",
        "organization": "my-org",
        "visibility": "private",
        "type": "model",
    }
    assert data_create["body"]["type"] == "dataset"
    assert data_create["body"].get("visibility") != "private"
    assert model_commit["path"] == "/api/models/my-org/tiny-student/commit/dev"
    assert data_commit["path"] == "/api/datasets/my-org/tiny-rows/commit/main"
    assert model_commit["body"][0]["value"]["summary"] == "kdlang: hub-test, export:t"

    # the student's files, byte for byte as the train saved them, and the card
    uploaded = hub.files[("model", "my-org/tiny-student", "dev")]
    model = artifact(report, "t") / "model"
    saved = {
        p.relative_to(model).as_posix(): p.read_bytes() for p in model.rglob("*") if p.is_file()
    }
    assert set(uploaded) == set(saved) | {"README.md"}
    for name, data in saved.items():
        assert uploaded[name] == data, name
    card = uploaded["README.md"].decode()
    meta = header(card)
    assert meta["library_name"] == "transformers"
    assert meta["license"] == "apache-2.0"
    assert meta["tags"] == ["kdlang", "knowledge-distillation", "math", "tiny"]
    assert "base_model" not in meta  # a local student has no hub id
    manifest = json.loads((artifact(report, "t") / "manifest.json").read_text())
    final = manifest["final"]
    assert f"| loss | {final['loss']:.4g} |" in card
    assert "## Recipe" in card and 'export rows to hub("my-org/tiny-rows")' in card

    rows = hub.files[("dataset", "my-org/tiny-rows", "main")]
    assert set(rows) == {"README.md", "data/train.parquet"}
    table = pq.read_table(io.BytesIO(rows["data/train.parquet"]))
    assert table.to_pylist() == [{"q": "What is 1 plus 2?", "a": "3"}, {"q": "Say hi.", "a": "Hi!"}]
    data_meta = header(rows["README.md"].decode())
    assert data_meta["license"] == "mit" and "library_name" not in data_meta
    assert "2 rows" in rows["README.md"].decode()

    record = json.loads((artifact(report, "export:t") / "hub.json").read_text())
    assert record["repo"] == "my-org/tiny-student" and record["revision"] == "dev"
    assert record["url"].endswith(record["commit"])
    assert sorted(record["files"]) == sorted(uploaded)

    # the token is sent and never written anywhere
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path

    # nothing is committed again while the exports are cached
    again = run_recipe(recipe)
    assert node(again, "export:t")["status"] == "cached"
    assert len(hub.requests) == 9


def test_a_missing_token_variable_stops_the_run_before_any_request(
    tmp_path, tiny_pair, hub, monkeypatch
):
    from typer.testing import CliRunner

    from kdlang.cli import app

    monkeypatch.delenv("KD_HUB_TOKEN")
    recipe = write_recipe(tmp_path, models(tiny_pair) + BODY)
    result = CliRunner().invoke(app, ["run", str(recipe), "--workdir", str(tmp_path)])
    assert result.exit_code != 0
    assert "KD_HUB_TOKEN" in result.output
    assert hub.requests == []


def test_an_existing_repo_and_branch_are_committed_to(tmp_path, tiny_pair, hub):
    hub.repos[("model", "my-org/tiny-student")] = {"private": False, "branches": {"main", "dev"}}
    hub.repos[("dataset", "my-org/tiny-rows")] = {"private": False, "branches": {"main"}}
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + BODY))
    assert node(report, "export:t")["status"] == "ran"
    assert hub.kinds()[:5] == ["create", "branch", "validate", "preupload", "commit"]
    assert hub.repos[("model", "my-org/tiny-student")]["private"] is False  # left as it was
    assert "README.md" in hub.files[("model", "my-org/tiny-student", "dev")]


def test_a_hub_error_names_the_repo_and_never_the_token(tmp_path, tiny_pair, hub, monkeypatch):
    monkeypatch.setattr(hub, "_preupload", lambda match, body: (403, {"error": f"no: {TOKEN}"}))
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + BODY), expect=1)
    error = node(report, "export:t")["error"]
    assert error.startswith('cannot commit to hub("my-org/tiny-student") at http://127.0.0.1:')
    assert "403" in error and TOKEN not in error


def test_hub_offline_mode_stops_the_export_before_any_request(
    tmp_path, tiny_pair, hub, monkeypatch
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    recipe = write_recipe(tmp_path, models(tiny_pair) + BODY)
    report = run_recipe(recipe, expect=1)
    error = node(report, "export:t")["error"]
    assert error.startswith('HF_HUB_OFFLINE is set, so nothing can be committed to hub("my-org/')
    assert hub.requests == []
    assert Path(artifact(report, "t")).is_dir()  # the train itself ran
