"""Plan status against the cache: ``cached`` where a manifest exists for the fingerprint, else
``will run`` with the reason, from the components recorded in the cache index."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlang.ir import stages as st
from kdlang.plan import Store
from kdlang.plan.render import plan_to_dot
from kdlang.plan.store import MANIFEST, write_json_atomic
from tests.plan.support import NODES, RECIPE, plan_of


def record_run(project: Path, plan) -> Store:
    """What the runtime leaves behind: a manifest per artifact and the index of the recipe."""
    store = Store(project / "cache")
    for node in plan.nodes:
        manifest = {
            "fingerprint": node.fingerprint,
            "op": node.op,
            "name": node.name,
            "rows": 3,
            "content_hash": "sha256:" + node.fingerprint[:16],
        }
        write_json_atomic(store.artifact(node.fingerprint) / MANIFEST, manifest)
        entry = {"fingerprint": node.fingerprint, "components": node.components}
        store.record(plan.recipe.title, node.name, entry)
    return store


def reasons(plan) -> dict[str, str | None]:
    """Node -> None when cached, else the reason it will run."""
    return {n.name: (None if n.status == "cached" else n.reason) for n in plan.nodes}


@pytest.fixture
def ran(project: Path):
    first = plan_of(project, RECIPE)
    assert {n.status for n in first.nodes} == {"will run"}
    assert {n.reason for n in first.nodes} == {"never run"}
    record_run(project, first)
    return first


def test_everything_is_cached_after_a_run(project: Path, ran):
    again = plan_of(project)
    assert [(n.name, n.status, n.reason) for n in again.nodes] == [
        (name, "cached", "") for name in NODES
    ]
    assert plan_to_dot(again).count("(cached)") == len(NODES)


def test_a_changed_prompt(project: Path, ran):
    after = plan_of(project, RECIPE.replace("A:", "Answer:"))
    assert reasons(after) == {
        "problems": None,
        "heldout": None,
        "rationales": "prompt `solve` changed",
        "clean": "upstream `rationales` changed",
        "soft": "prompt `solve` changed; upstream `clean` changed",
        "distill": "prompt `solve` changed; upstream `soft` changed",
        "accuracy": "prompt `solve` changed; upstream `distill` changed",
        "export:distill": "upstream `distill` changed",
    }


def test_a_changed_setting(project: Path, ran):
    after = plan_of(project, overrides=["rationales.temperature=0.7"])
    assert reasons(after)["rationales"] == "setting `temperature` changed: 0.8 -> 0.7"
    assert reasons(after)["clean"] == "upstream `rationales` changed"
    assert reasons(after)["heldout"] is None


def test_a_changed_loss_setting_is_named_like_its_override(project: Path, ran):
    after = plan_of(project, overrides=["distill.loss.forward_kl.temperature=1.0"])
    assert reasons(after) == {
        **dict.fromkeys(["problems", "heldout", "rationales", "clean", "soft"]),
        "distill": "setting `loss.forward_kl.temperature` changed: 2.0 -> 1.0",
        "accuracy": "upstream `distill` changed",
        "export:distill": "upstream `distill` changed",
    }


def test_a_changed_seed(project: Path, ran):
    after = reasons(plan_of(project, overrides=["recipe.seed=4"]))
    assert after["problems"] == "seed changed: 3 -> 4"
    assert after["clean"] == "seed changed: 3 -> 4; upstream `rationales` changed"


def test_a_changed_input_file(project: Path, ran):
    with (project / "data" / "train.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"question": "What is 1 + 1?", "answer": "2", "level": 1}\n')
    after = reasons(plan_of(project))
    assert after["problems"] == "input file changed: train.jsonl"
    assert after["heldout"] is None
    assert after["rationales"] == "upstream `problems` changed"
    assert after["accuracy"] == "upstream `distill` changed"


def test_changed_model_files(project: Path, ran):
    (project / "models" / "teacher" / "generation_config.json").write_text("{}", encoding="utf-8")
    after = reasons(plan_of(project))
    assert after["rationales"] == "model `teacher` changed (its files)"
    assert after["clean"] == "upstream `rationales` changed"


def test_a_changed_model_setting(project: Path, ran):
    after = reasons(plan_of(project, overrides=["teacher.dtype=float32"]))
    assert after["rationales"] == "model `teacher` changed (`dtype`)"
    assert after["soft"] == "model `teacher` changed (`dtype`); upstream `clean` changed"


def test_a_new_code_version(project: Path, ran, monkeypatch):
    monkeypatch.setattr(st.LabelStage, "code_version", st.LabelStage.code_version + 1)
    after = reasons(plan_of(project))
    assert after["rationales"] == "kdlang's code for `label` changed"
    assert after["clean"] == "upstream `rationales` changed"


def test_an_output_missing_from_the_cache(project: Path, ran):
    (Store(project / "cache").artifact(ran.node("clean").fingerprint) / MANIFEST).unlink()
    after = reasons(plan_of(project))
    assert after["clean"] == "its output is no longer in the cache"
    # what was computed from it is still there
    assert after["soft"] is None


def test_an_artifact_without_manifest_is_not_cached(project: Path):
    plan = plan_of(project, RECIPE)
    store = Store(project / "cache")
    store.artifact(plan.node("problems").fingerprint).mkdir(parents=True)
    (store.artifact(plan.node("problems").fingerprint) / "data.arrow").write_bytes(b"partial")
    assert plan_of(project).node("problems").status == "will run"


def test_many_changes_are_summarised(project: Path, ran):
    overrides = [
        "rationales.temperature=0.5",
        "rationales.max_tokens=64",
        "rationales.top_p=0.9",
        "rationales.samples=2",
        'rationales.stop=["\\n\\n"]',
    ]
    reason = reasons(plan_of(project, overrides=overrides))["rationales"]
    parts = reason.split("; ")
    assert len(parts) == 4
    assert parts[-1] == "and 2 more changes"
