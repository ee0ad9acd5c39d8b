"""The plan's model table (``kdlang.plan.models``): where each model loads from and what
identifies it, decided once and shared by every fingerprint and the runtime; and each node's
resolved seed."""

from __future__ import annotations

from pathlib import Path

from kdlang.plan.fingerprint import folder_hash
from tests.plan.support import RECIPE, plan_of


def test_local_folders_resolve_to_absolute_paths_identified_by_content(project: Path):
    plan = plan_of(project, RECIPE)
    teacher = plan.models["teacher"]
    folder = (project / "models" / "teacher").resolve()
    assert teacher.local and Path(teacher.location).resolve() == folder
    assert teacher.hub_id is None
    assert teacher.identity["content"] == folder_hash(folder)
    assert "path" not in teacher.identity and "batch_size" not in teacher.identity
    assert plan.source(plan.recipe.models["teacher"]) is teacher


def test_a_hub_id_is_kept_as_written_with_its_revision(project: Path):
    text = RECIPE.replace('hf("models/teacher")', 'hf("org/big-teacher", revision = "abc123")')
    plan = plan_of(project, text)
    teacher = plan.models["teacher"]
    assert not teacher.local
    assert teacher.location == teacher.hub_id == "org/big-teacher"
    assert teacher.identity["path"] == "org/big-teacher"
    assert teacher.identity["revision"] == "abc123"


def test_the_model_identity_is_what_reading_fingerprints_record(project: Path):
    plan = plan_of(project, RECIPE)
    rationales = plan.node("rationales")
    assert rationales.components["params"]["teacher"] == {"model": plan.models["teacher"].identity}


def test_a_train_uses_its_own_seed_else_the_recipe_seed(project: Path):
    plan = plan_of(project, RECIPE)
    assert plan.node("distill").seed == 3
    assert plan.node("rationales").seed == 3
    plan = plan_of(project, RECIPE.replace("epochs = 3", "epochs = 3  seed = 11"))
    assert plan.node("distill").seed == 11
    assert plan.node("rationales").seed == 3
