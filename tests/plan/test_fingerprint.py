"""Fingerprints: invariant under formatting, comments, renaming and the order of independent
declarations; changed by every input they hash; identical across processes and checkouts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdlang.ir import selection as sel
from kdlang.plan import fingerprint as fp
from kdlang.syntax.fmt import format_source
from tests.check.support import jsonl, write
from tests.plan.support import NODES, RECIPE, fingerprints

DOWNSTREAM_OF_RATIONALES = {"rationales", "clean", "soft", "distill", "accuracy", "export:distill"}


def changed(before: dict, after: dict) -> set[str]:
    assert set(before) == set(after)
    return {name for name in before if before[name] != after[name]}


@pytest.fixture
def base(project: Path) -> dict:
    found = fingerprints(project, RECIPE)
    assert list(found) == NODES
    assert len(set(found.values())) == len(NODES)
    assert all(len(value) == 64 and int(value, 16) >= 0 for value in found.values())
    return found


def test_invariant_under_fmt(project: Path, base: dict):
    formatted = format_source(RECIPE, "recipe.kd")
    assert formatted != RECIPE
    assert fingerprints(project, formatted, name="formatted.kd") == base


def test_invariant_under_comments_and_blank_lines(project: Path, base: dict):
    commented = "# a recipe\n\n" + RECIPE.replace("\n\n", "\n\n# note\n\n").replace(
        "output  = rationale", "output  = rationale  # the column it adds"
    )
    assert commented.count("#") == RECIPE.count("#") + 11
    assert fingerprints(project, commented, name="commented.kd") == base


def test_invariant_under_reordering_independent_declarations(project: Path, base: dict):
    blocks = RECIPE.split("\n\n")
    # header, models, datasets, prompt, label, filter, teacher_logits, train, eval, export
    assert len(blocks) == 10
    header, models, datasets, prompt, label, clean, soft, train, evaluate, export = blocks
    reordered = [
        header,
        prompt,
        "\n".join(reversed(datasets.splitlines())),
        "\n".join(reversed(models.splitlines())),
        label,
        clean,
        soft,
        train,
        export,
        evaluate,
    ]
    assert fingerprints(project, "\n\n".join(reordered), name="reordered.kd") == base


def test_invariant_under_reordering_settings(project: Path, base: dict):
    swapped = RECIPE.replace(
        "teacher = teacher  prompt = solve  samples = 4  temperature = 0.8  max_tokens = 96",
        "max_tokens = 96  temperature = 0.8  samples = 4  prompt = solve  teacher = teacher",
    )
    assert swapped != RECIPE
    assert fingerprints(project, swapped, name="swapped.kd") == base


def test_invariant_under_renaming_a_declaration(project: Path, base: dict):
    # a fingerprint hashes what a reference points at, never its name
    renamed = RECIPE.replace("prompt solve", "prompt ask").replace("prompt = solve", "prompt = ask")
    assert fingerprints(project, renamed, name="renamed.kd") == base


def test_a_changed_template_changes_the_stages_that_render_it(project: Path, base: dict):
    after = fingerprints(project, RECIPE.replace("Q: {{ question }}", "Question: {{ question }}"))
    assert changed(base, after) == DOWNSTREAM_OF_RATIONALES


def test_a_changed_setting_changes_the_node_and_what_follows(project: Path, base: dict):
    after = fingerprints(project, RECIPE, ["rationales.temperature=0.7"])
    assert changed(base, after) == DOWNSTREAM_OF_RATIONALES
    after = fingerprints(project, RECIPE, ["distill.lr=1e-4"])
    assert changed(base, after) == {"distill", "accuracy", "export:distill"}
    after = fingerprints(project, RECIPE, ["heldout.limit=1"])
    assert changed(base, after) == {"heldout", "accuracy"}


def test_a_changed_upstream_stage_changes_its_readers(project: Path, base: dict):
    stricter = RECIPE.replace("in 8..400", "in 8..300")
    assert changed(base, fingerprints(project, stricter)) == {
        "clean",
        "soft",
        "distill",
        "accuracy",
        "export:distill",
    }


def test_a_changed_input_file_changes_its_dataset_and_what_follows(project: Path, base: dict):
    path = project / "data" / "train.jsonl"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('"answer": "5"', '"answer": "6"'), encoding="utf-8")  # same size
    after = fingerprints(project)
    assert changed(base, after) == {"problems"} | DOWNSTREAM_OF_RATIONALES
    path.write_text(text, encoding="utf-8")
    assert fingerprints(project) == base


def test_a_changed_seed_changes_every_node(project: Path, base: dict):
    after = fingerprints(project, RECIPE, ["recipe.seed=4"])
    assert changed(base, after) == set(NODES)


def test_changed_model_files_change_the_nodes_using_the_model(project: Path, base: dict):
    config = project / "models" / "teacher" / "config.json"
    config.write_text(config.read_text(encoding="utf-8").replace("64", "96"), encoding="utf-8")
    assert changed(base, fingerprints(project)) == DOWNSTREAM_OF_RATIONALES
    config = project / "models" / "student" / "config.json"
    config.write_text(config.read_text(encoding="utf-8").replace("64", "96"), encoding="utf-8")
    after = fingerprints(project)
    assert changed(base, after) == DOWNSTREAM_OF_RATIONALES  # distill, now also for its student


def test_a_new_operator_code_version_changes_its_nodes(project: Path, base: dict, monkeypatch):
    monkeypatch.setattr(sel.FilterStage, "code_version", sel.FilterStage.code_version + 1)
    assert changed(base, fingerprints(project)) == {
        "clean",
        "soft",
        "distill",
        "accuracy",
        "export:distill",
    }


def test_secrets_are_hashed_by_name_never_by_value(project: Path, monkeypatch):
    text = RECIPE.replace(
        'model teacher = hf("models/teacher")',
        'model teacher = hf("models/teacher")\n'
        'model api = openai("m", base_url = env("KD_TEST_URL"), api_key = env("KD_TEST_KEY"))',
    ).replace(
        "stage rationales = label(problems) {\n  teacher = teacher",
        "stage rationales = label(problems) {\n  teacher = api",
    )
    monkeypatch.setenv("KD_TEST_KEY", "first-secret")
    monkeypatch.setenv("KD_TEST_URL", "http://one")
    first = fingerprints(project, text)
    monkeypatch.setenv("KD_TEST_KEY", "second-secret")
    monkeypatch.setenv("KD_TEST_URL", "http://two")
    assert fingerprints(project, text) == first
    renamed = text.replace('env("KD_TEST_URL")', 'env("KD_OTHER_URL")')
    assert changed(first, fingerprints(project, renamed)) == DOWNSTREAM_OF_RATIONALES


def test_a_file_rewritten_within_one_second_is_hashed_again(tmp_path: Path):
    path = tmp_path / "rows.jsonl"
    path.write_text(jsonl([{"a": 1}]), encoding="utf-8")
    first = fp.file_hash(path)
    path.write_text(jsonl([{"a": 2}]), encoding="utf-8")  # same size, likely the same mtime tick
    assert fp.file_hash(path) != first


def test_folder_hash_depends_on_names_and_bytes_not_on_hidden_files(tmp_path: Path):
    write(tmp_path, {"m/a.txt": "A", "m/sub/b.txt": "B"})
    first = fp.folder_hash(tmp_path / "m")
    write(tmp_path, {"m/.cache/x": "ignored"})
    assert fp.folder_hash(tmp_path / "m") == first
    (tmp_path / "m" / "sub" / "b.txt").rename(tmp_path / "m" / "sub" / "c.txt")
    assert fp.folder_hash(tmp_path / "m") != first


PRINT_FINGERPRINTS = """
import json, sys
from kdlang.check import load_checked
from kdlang.plan import build_plan
program, _ = load_checked("recipe.kd")
print(json.dumps({n.name: n.fingerprint for n in build_plan(program, "cache").nodes}))
"""


def test_identical_across_processes_and_checkouts(project: Path, base: dict, tmp_path_factory):
    results = []
    for seed in ("1", "2"):
        checkout = tmp_path_factory.mktemp(f"checkout{seed}") / "recipes" / "arith"
        shutil.copytree(project, checkout, ignore=shutil.ignore_patterns("cache"))
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", PRINT_FINGERPRINTS],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        results.append(json.loads(done.stdout))
    assert results[0] == results[1] == base
