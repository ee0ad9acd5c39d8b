"""``export``: never destroys what kdlang did not make, and puts a cached export back in place.

One tiny student is trained once for the module; every test starts from a copy of that cache, so
its export nodes run (or are restored) on their own. Each test says which user files must still
be there afterwards, and compares them byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from kdlang.runtime.cache import file_hashes
from kdlang.runtime.executor import run_plan
from kdlang.runtime.stages.export import ADDED, MARKER, RECORD

from kdlang.check import load_checked
from kdlang.plan import build_plan
from tests.runtime.stages.support import cli, node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

BODY = """
model student = hf("{student}")
dataset rows = inline([
  {{q: "What is 12 plus 7?", a: "19"}},
  {{q: "What is 30 minus 4?", a: "26"}},
])
prompt ask = \"\"\"Q: {{{{ q }}}}
A:\"\"\"
train tuned {{
  student = student  data = rows  prompt = ask  target = a  max_steps = 1  batch = 2
  loss sft weight 1.0
}}
"""

USER_FILES = {
    "notes.txt": b"my notes\n",
    "data/keep.jsonl": b'{"q": "mine"}\n',
    "deep/er/weights.bin": bytes(range(256)),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_pair) -> Path:
    """A cache holding the trained student of :data:`BODY` (nothing exported)."""
    folder = tmp_path_factory.mktemp("trained")
    recipe = write_recipe(folder, body(tiny_pair, 'export tuned to "unused"'))
    run_recipe(recipe, "--only", "tuned")
    return folder / ".kdcache"


def body(pair, *exports: str) -> str:
    return BODY.format(student=pair.student) + "".join(f"{line}\n" for line in exports)


def workdir(root: Path, trained: Path, pair, *exports: str, cache: Path | None = None) -> Path:
    """A working directory with the user's files, a recipe exporting as given, and a copy of
    the trained cache (in ``cache``, else in ``.kdcache``); returns the recipe."""
    recipe = write_recipe(root, body(pair, *exports))
    put(root, USER_FILES)
    target = cache or root / ".kdcache"
    if not target.exists():
        shutil.copytree(trained, target)
    return recipe


def put(root: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def user_files_intact(root: Path, recipe_text: str) -> None:
    assert (root / "recipe.kd").read_text(encoding="utf-8") == recipe_text
    for name, content in USER_FILES.items():
        assert (root / name).read_bytes() == content, name


def leftovers(folder: Path) -> list[str]:
    """Hidden build or set-aside folders an export left beside its destination."""
    return sorted(p.name for p in folder.glob(".*.tmp-*")) + sorted(
        p.name for p in folder.glob(".*.old-*")
    )


# -- what the run refuses, even where the checker was not asked ------------------------------


def run_unchecked(recipe: Path, path: str, workdir: Path, cache: Path):
    """Run ``recipe`` with its export's path replaced by ``path`` after checking: what the run
    does with a path ``kdlang check`` would have rejected."""
    program, _ = load_checked(str(recipe))
    program.recipe.exports[0].path = path
    plan = build_plan(program, str(cache))
    run = run_plan(plan, workdir=workdir, device="cpu")
    return next(r for r in run.results if r.op == "export")


@pytest.mark.parametrize(
    "path",
    [".", "", "..", "./..", "a/..", "{work}", "{work}/.kdcache", ".kdcache", ".kdcache/out", "/"],
)
def test_the_run_refuses_the_workdir_the_cache_and_their_ancestors(
    tmp_path, trained, tiny_pair, path
):
    root = tmp_path / "work"
    recipe = workdir(root, trained, tiny_pair, 'export tuned to "out"')
    text = recipe.read_text(encoding="utf-8")
    neighbour = tmp_path / "neighbour.txt"
    neighbour.write_bytes(b"beside the work folder\n")
    artifacts = snapshot(root / ".kdcache" / "artifacts")
    result = run_unchecked(recipe, path.format(work=root), root, root / ".kdcache")
    assert result.status == "failed"
    assert f'export path "{path.format(work=root)}"' in result.error
    assert "nothing was written" in result.error
    user_files_intact(root, text)
    assert neighbour.read_bytes() == b"beside the work folder\n"
    assert snapshot(root / ".kdcache" / "artifacts") == artifacts
    assert not (root / "out").exists() and not (root / "a").exists()
    assert leftovers(root) == [] and leftovers(tmp_path) == []


def test_the_run_refuses_a_separate_cache_and_its_ancestor(tmp_path, trained, tiny_pair):
    root, cache = tmp_path / "work", tmp_path / "store" / "kd"
    recipe = workdir(root, trained, tiny_pair, 'export tuned to "out"', cache=cache)
    artifacts = snapshot(cache / "artifacts")
    for path, reason in ((cache, "is the cache folder"), (cache.parent, "ancestor of the cache")):
        result = run_unchecked(recipe, str(path), root, cache)
        assert result.status == "failed" and reason in result.error
    assert snapshot(cache / "artifacts") == artifacts
    user_files_intact(root, recipe.read_text(encoding="utf-8"))


def test_the_run_refuses_a_link_to_the_workdir(tmp_path, trained, tiny_pair):
    root = tmp_path / "work"
    recipe = workdir(root, trained, tiny_pair, 'export tuned to "out"')
    (root / "here").symlink_to(root, target_is_directory=True)
    result = run_unchecked(recipe, "here", root, root / ".kdcache")
    assert result.status == "failed" and "is the working directory" in result.error
    user_files_intact(root, recipe.read_text(encoding="utf-8"))


def test_kdlang_run_stops_at_the_check_and_deletes_nothing(tmp_path, trained, tiny_pair):
    """The reported case: ``export t to "."`` used to move the work folder aside and delete it."""
    root = tmp_path / "work"
    recipe = workdir(root, trained, tiny_pair, 'export tuned to "."')
    text = recipe.read_text(encoding="utf-8")
    artifacts = snapshot(root / ".kdcache" / "artifacts")
    result = cli("run", str(recipe), "--workdir", str(root), "--device", "cpu")
    assert result.exit_code == 1
    assert "KD0405" in result.output and 'unsafe export path "."' in result.output
    user_files_intact(root, text)
    assert snapshot(root / ".kdcache" / "artifacts") == artifacts


# -- what is at the destination -------------------------------------------------------------


def test_a_folder_of_other_files_is_refused_and_kept(tmp_path, trained, tiny_pair):
    root = tmp_path / "work"
    recipe = workdir(root, trained, tiny_pair, 'export tuned to "deep"')
    before = snapshot(root / "deep")
    document = run_recipe(recipe, expect=1)
    export = node(document, "export:tuned")
    assert export["status"] == "failed"
    assert str(root / "deep") in export["error"] and "holds no kdlang export" in export["error"]
    assert snapshot(root / "deep") == before
    user_files_intact(root, recipe.read_text(encoding="utf-8"))
    assert leftovers(root) == []


def test_a_regular_file_at_the_destination_is_refused(tmp_path, trained, tiny_pair):
    root = tmp_path / "work"
    recipe = workdir(root, trained, tiny_pair, 'export tuned to "notes.txt"')
    export = node(run_recipe(recipe, expect=1), "export:tuned")
    assert export["status"] == "failed" and "is not a folder" in export["error"]
    user_files_intact(root, recipe.read_text(encoding="utf-8"))
    assert leftovers(root) == []


def test_an_empty_folder_is_used(tmp_path, trained, tiny_pair):
    root = tmp_path / "work"
    recipe = workdir(root, trained, tiny_pair, 'export tuned to "out"')
    (root / "out").mkdir()
    assert node(run_recipe(recipe), "export:tuned")["status"] == "ran"
    assert (root / "out" / "model.safetensors").is_file() and (root / "out" / MARKER).is_file()
    user_files_intact(root, recipe.read_text(encoding="utf-8"))


def test_the_export_is_marked_and_recorded(tmp_path, trained, tiny_pair):
    root = tmp_path / "work"
    recipe = workdir(root, trained, tiny_pair, 'export tuned to "out"')
    document = run_recipe(recipe)
    out = root / "out"
    marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    assert marker["kdlang_export"] == 1 and marker["train"] == "tuned"
    assert marker["export"] == "export:tuned" and marker["recipe"] == "t"
    assert marker["fingerprint"] == node(document, "export:tuned")["fingerprint"]
    hashes = file_hashes(out)
    assert marker["files"] == {k: v for k, v in hashes.items() if k != MARKER}
    artifact = Path(node(document, "export:tuned")["output"])
    record = json.loads((artifact / RECORD).read_text(encoding="utf-8"))
    assert record["hashes"] == hashes and record["files"] == sorted(hashes)
    assert record["path"] == str(out.resolve())
    assert sorted(p.name for p in (artifact / ADDED).iterdir()) == [MARKER, "README.md"]
    assert leftovers(root) == []


def test_a_kdlang_export_is_replaced(tmp_path, trained, tiny_pair):
    root = tmp_path / "work"
    recipe = workdir(root, trained, tiny_pair, 'export tuned to "out"')
    first = run_recipe(recipe)
    assert (root / "out" / "README.md").is_file()
    write_recipe(root, body(tiny_pair, 'export tuned to "out" { card = false }'))
    second = run_recipe(recipe)
    export = node(second, "export:tuned")
    assert export["status"] == "ran"
    assert export["fingerprint"] != node(first, "export:tuned")["fingerprint"]
    assert not (root / "out" / "README.md").exists()
    marker = json.loads((root / "out" / MARKER).read_text(encoding="utf-8"))
    assert marker["fingerprint"] == export["fingerprint"]
    user_files_intact(root, recipe.read_text(encoding="utf-8"))
    assert leftovers(root) == []


# -- restoring a cached export --------------------------------------------------------------


def test_an_export_in_place_stays_cached(tmp_path, trained, tiny_pair):
    root = tmp_path / "work"
    recipe = workdir(root, trained, tiny_pair, 'export tuned to "out"')
    run_recipe(recipe)
    written = {p: p.stat().st_mtime_ns for p in (root / "out").rglob("*")}
    export = node(run_recipe(recipe), "export:tuned")
    assert export["status"] == "cached" and export["note"] is None
    assert {p: p.stat().st_mtime_ns for p in (root / "out").rglob("*")} == written


def test_a_deleted_export_is_restored_on_rerun(tmp_path, trained, tiny_pair):
    root = tmp_path / "work"
    recipe = workdir(root, trained, tiny_pair, 'export tuned to "out"')
    run_recipe(recipe)
    exported = snapshot(root / "out")
    shutil.rmtree(root / "out")
    export = node(run_recipe(recipe), "export:tuned")
    assert export["status"] == "restored"
    assert export["note"] == f"{(root / 'out').resolve()} was missing"
    assert snapshot(root / "out") == exported
    (root / "out" / "model.safetensors").unlink()
    export = node(run_recipe(recipe), "export:tuned")
    assert (
        export["status"] == "restored" and "files of the export were missing from" in export["note"]
    )
    assert snapshot(root / "out") == exported
    assert "| restored (files of the export were missing from" in (
        root / "runs" / "t" / "report.md"
    ).read_text(encoding="utf-8")
    user_files_intact(root, recipe.read_text(encoding="utf-8"))
    assert leftovers(root) == []


def test_a_new_workdir_with_a_shared_cache_gets_its_copy(tmp_path, trained, tiny_pair):
    cache = tmp_path / "shared"
    first = workdir(tmp_path / "a", trained, tiny_pair, 'export tuned to "out"', cache=cache)
    assert node(run_recipe(first, "--cache", str(cache)), "export:tuned")["status"] == "ran"
    second = workdir(tmp_path / "b", trained, tiny_pair, 'export tuned to "out"', cache=cache)
    export = node(run_recipe(second, "--cache", str(cache)), "export:tuned")
    assert export["status"] == "restored" and "was missing" in export["note"]
    assert snapshot(tmp_path / "b" / "out") == snapshot(tmp_path / "a" / "out")
    user_files_intact(tmp_path / "a", first.read_text(encoding="utf-8"))
    user_files_intact(tmp_path / "b", second.read_text(encoding="utf-8"))


def test_an_export_changed_by_hand_is_refused_until_the_change_is_moved_away(
    tmp_path, trained, tiny_pair
):
    """Modified or added files are the user's now: the export is not restored over them."""
    root = tmp_path / "work"
    recipe = workdir(root, trained, tiny_pair, 'export tuned to "out"')
    run_recipe(recipe)
    exported = snapshot(root / "out")
    (root / "out" / "README.md").write_bytes(b"my own card\n")
    (root / "out" / "extra.txt").write_bytes(b"added by hand\n")
    changed = snapshot(root / "out")
    export = node(run_recipe(recipe, expect=1), "export:tuned")
    assert export["status"] == "failed"
    assert "README.md, extra.txt" in export["error"] and "nothing was deleted" in export["error"]
    assert snapshot(root / "out") == changed
    (root / "out" / "extra.txt").unlink()
    shutil.move(root / "out" / "README.md", root / "my-card.md")
    export = node(run_recipe(recipe), "export:tuned")
    assert export["status"] == "restored"
    assert snapshot(root / "out") == exported
    assert (root / "my-card.md").read_bytes() == b"my own card\n"


def test_a_cache_that_cannot_give_back_the_recorded_export_fails_without_touching_it(
    tmp_path, trained, tiny_pair
):
    root = tmp_path / "work"
    recipe = workdir(root, trained, tiny_pair, 'export tuned to "out"')
    document = run_recipe(recipe)
    shutil.rmtree(root / "out")
    config = Path(node(document, "tuned")["output"]) / "model" / "config.json"
    config.write_text(config.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    export = node(run_recipe(recipe, expect=1), "export:tuned")
    assert export["status"] == "failed" and "--force export:tuned" in export["error"]
    assert not (root / "out").exists() and leftovers(root) == []
    assert node(run_recipe(recipe, "--force", "export:tuned"), "export:tuned")["status"] == "ran"
