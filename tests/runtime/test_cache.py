"""The artifact cache: atomic commits, nothing partial served, progress logs, ``kdlang cache``."""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from kdlang.runtime.cache import ArtifactCache, ProgressLog, tree_hash

from tests.runtime.stages.support import cli, plan, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(60)

FP = "ab" * 32
OTHER = "cd" * 32


def commit(cache: ArtifactCache, fingerprint: str, payload: bytes, **kwargs):
    with cache.writing(fingerprint) as tmp:
        (tmp / "data.arrow").write_bytes(payload)
        return cache.commit(tmp, fingerprint, {"op": "label", "name": "x", "rows": 3}, **kwargs)


def test_commit_writes_a_manifest_and_moves_the_folder_into_place(tmp_path):
    cache = ArtifactCache(tmp_path)
    assert not cache.is_cached(FP)
    final = commit(cache, FP, b"rows")
    assert final == tmp_path / "artifacts" / FP and cache.is_cached(FP)
    manifest = cache.manifest(FP)
    assert manifest["fingerprint"] == FP and manifest["rows"] == 3 and manifest["op"] == "label"
    assert manifest["content_hash"] == tree_hash(final)
    assert time.strptime(manifest["created"], "%Y-%m-%dT%H:%M:%SZ")
    assert sorted(p.name for p in final.iterdir()) == ["data.arrow", "manifest.json"]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_failed_write_leaves_nothing(tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(RuntimeError), cache.writing(FP) as tmp:
        (tmp / "data.arrow").write_bytes(b"half")
        raise RuntimeError("stage failed")
    assert not cache.is_cached(FP)
    assert not (tmp_path / "artifacts" / FP).exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_partial_artifacts_are_never_served(tmp_path):
    cache = ArtifactCache(tmp_path)
    # a crash before the rename: a temporary folder with data and even a manifest
    leftover = tmp_path / "tmp" / f"{FP}.deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "data.arrow").write_bytes(b"partial")
    (leftover / "manifest.json").write_text("{}")
    assert not cache.is_cached(FP)
    # a folder in place without a readable manifest (written by hand, or a torn manifest)
    broken = tmp_path / "artifacts" / FP
    broken.mkdir(parents=True)
    (broken / "data.arrow").write_bytes(b"partial")
    assert not cache.is_cached(FP)
    (broken / "manifest.json").write_text('{"fingerprint": "ab')
    assert not cache.is_cached(FP) and cache.entries() == []
    # a real commit replaces the untrusted folder
    commit(cache, FP, b"complete")
    assert (broken / "data.arrow").read_bytes() == b"complete" and cache.is_cached(FP)


def test_a_second_commit_keeps_the_first_unless_it_replaces(tmp_path):
    cache = ArtifactCache(tmp_path)
    commit(cache, FP, b"first")
    commit(cache, FP, b"second")
    assert (cache.artifact(FP) / "data.arrow").read_bytes() == b"first"
    commit(cache, FP, b"third", replace=True)
    assert (cache.artifact(FP) / "data.arrow").read_bytes() == b"third"
    assert cache.manifest(FP)["content_hash"] == tree_hash(cache.artifact(FP))
    assert list((tmp_path / "tmp").iterdir()) == []


def test_progress_log_survives_a_torn_last_line(tmp_path):
    log = ProgressLog(tmp_path / "progress" / FP)
    log.append(0, ["a"])
    log.append(2, ["c", "d"])
    log.close()
    with log.path.open("ab") as handle:  # a process killed in the middle of a write
        handle.write(b'{"index": 1, "val')
    assert ProgressLog(tmp_path / "progress" / FP).load() == {0: ["a"], 2: ["c", "d"]}
    again = ProgressLog(tmp_path / "progress" / FP)
    again.append(1, ["b"])
    again.close()
    assert again.load() == {0: ["a"], 1: ["b"], 2: ["c", "d"]}
    assert all(json.loads(line) for line in log.path.read_text().splitlines())


def test_gc_keeps_what_it_is_told_and_removes_leftovers(tmp_path):
    cache = ArtifactCache(tmp_path)
    commit(cache, FP, b"kept")
    commit(cache, OTHER, b"stale" * 100)
    for fingerprint in (FP, OTHER):
        ProgressLog(cache.progress_dir(fingerprint)).append(0, "x")
    (tmp_path / "tmp" / f"{OTHER}.0123").mkdir()
    cache.record("recipe", "x", {"fingerprint": FP})
    preview = cache.gc({FP}, dry_run=True)
    assert {(e["kind"], e["fingerprint"]) for e in preview} == {
        ("artifact", OTHER),
        ("progress", OTHER),
        ("tmp", OTHER),
    }
    assert cache.is_cached(OTHER)  # a dry run removes nothing
    removed = cache.gc({FP})
    assert removed == preview
    artifact = next(e for e in removed if e["kind"] == "artifact")
    assert artifact["op"] == "label" and artifact["bytes"] > 500
    assert cache.is_cached(FP) and not cache.is_cached(OTHER)
    assert cache.progress_dir(FP).is_dir() and not cache.progress_dir(OTHER).exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    everything = cache.gc(None)
    assert {e["kind"] for e in everything} == {"artifact", "progress", "index"}
    assert all(not any((tmp_path / sub).iterdir()) for sub in ("artifacts", "progress", "index"))


# ---------------------------------------------------------------- kdlang cache ls | gc

RECIPE = """
dataset qs = inline([{q: "a"}, {q: "b"}, {q: "c"}])
stage kept = filter(qs) { keep q != "b" }
"""


def test_cache_ls_lists_artifacts_with_op_name_rows_size_and_age(tmp_path):
    recipe = write_recipe(tmp_path, RECIPE)
    run_recipe(recipe)
    cache = str(tmp_path / ".kdcache")
    listing = json.loads(cli("cache", "ls", "--cache", cache, "--format", "json").stdout)
    entries = {e["name"]: e for e in listing["artifacts"]}
    assert {n: (e["op"], e["rows"]) for n, e in entries.items()} == {
        "qs": ("dataset", 3),
        "kept": ("filter", 2),
    }
    for entry in entries.values():
        folder = tmp_path / ".kdcache" / "artifacts" / entry["fingerprint"]
        assert entry["bytes"] == sum(f.stat().st_size for f in folder.iterdir())
        assert 0 <= entry["age_seconds"] < 120 and entry["recipes"] == ["t"]
    table = cli("cache", "ls", "--cache", cache)
    assert table.exit_code == 0
    for name, entry in entries.items():
        line = next(line for line in table.stdout.splitlines() if entry["fingerprint"][:12] in line)
        assert name in line and entry["op"] in line and str(entry["rows"]) in line
        assert re.search(r"\d+s", line)


def test_cache_gc_removes_what_the_current_plan_does_not_use(tmp_path):
    recipe = write_recipe(tmp_path, RECIPE)
    first = {n: e["fingerprint"] for n, e in plan(recipe).items()}
    run_recipe(recipe)
    recipe.write_text(recipe.read_text().replace('!= "b"', '!= "c"'))
    run_recipe(recipe)
    cache = str(tmp_path / ".kdcache")
    stale = tmp_path / ".kdcache" / "tmp" / f"{first['kept']}.abc"
    stale.mkdir()
    (stale / "data.arrow").write_bytes(b"x" * 2048)

    preview = cli("cache", "gc", str(recipe), "--cache", cache, "--dry-run")
    assert preview.exit_code == 0
    assert f"would remove artifact {first['kept'][:12]}" in preview.stdout
    assert "filter kept" in preview.stdout and "would free" in preview.stdout
    assert stale.exists()

    result = cli("cache", "gc", str(recipe), "--cache", cache)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"removed artifact {first['kept'][:12]}")
    assert lines[1].startswith(f"removed tmp      {first['kept'][:12]}")
    assert re.fullmatch(r"freed \d+\.\d KB in 2 folders; 2 artifacts kept", lines[-1])
    assert {e["status"] for e in plan(recipe).values()} == {"cached"}
    assert not stale.exists()

    everything = cli("cache", "gc", "--all", "--cache", cache)
    assert everything.exit_code == 0 and "in 3 folders" in everything.stdout  # 2 + the index
    assert {e["status"] for e in plan(recipe).values()} == {"will run"}


def test_cache_gc_needs_recipes_or_all_and_a_valid_recipe(tmp_path):
    recipe = write_recipe(tmp_path, RECIPE)
    run_recipe(recipe)
    cache = str(tmp_path / ".kdcache")
    assert cli("cache", "gc", "--cache", cache).exit_code == 2
    assert cli("cache", "gc", str(recipe), "--all", "--cache", cache).exit_code == 2
    broken = tmp_path / "broken.kd"
    broken.write_text("stage x = label(nothing) { }\n")
    result = cli("cache", "gc", str(broken), "--cache", cache)
    assert result.exit_code == 1
    assert len(os.listdir(tmp_path / ".kdcache" / "artifacts")) == 2  # nothing removed
