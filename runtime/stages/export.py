"""``export TRAIN to "path" { merge_lora = .. card = .. }``: the trained student, where people use it.
(``export DATA to "rows.jsonl"``, the rows of a dataset or stage: :mod:`._export_data`; an export
to ``hub("owner/name")``: :mod:`._hub_export`.)

The path is relative to the run's working directory (``--workdir``, by default the current
folder), where ``runs/`` goes too. The folder receives the student as ``save_pretrained`` wrote
it, with its tokenizer: the full weights (LoRA merged in) or, for a LoRA student with
``merge_lora = false`` (or its ``lora(merge = false)``), the adapter alone; a model card
``README.md`` generated from the recipe (see :mod:`kdlang.runtime.train.card`); and the marker
:data:`MARKER`, which says the folder is a kdlang export and lists the SHA-256 of its other files.

What an export never does is destroy what kdlang did not make:

- the destination is resolved (links followed) against the run's real working directory and
  cache, and refused when it is either of them, inside the cache, or above either
  (:func:`kdlang.check.exports.unsafe_destination`; ``kdlang check`` reports the same, KD0405);
- an existing destination is taken over only when it is an empty folder or a kdlang export that
  holds no file its marker does not list, unchanged (files may be missing). A regular file, a
  folder of other files, or an export whose files were changed or added to by hand is refused
  with an error naming it, and nothing is deleted;
- the new export is built in a hidden sibling folder and renamed into place; a previous export is
  set aside first and removed only once the new one is in place.

The cache artifact holds :data:`RECORD` (the destination, and every file's SHA-256) and, under
:data:`ADDED`, the files the export adds to the model (card and marker). A cached export is put
back by :func:`restore` whenever its destination does not hold exactly those files, from the
trained model in the cache and these: a deleted export comes back on the next run, and a run in
another ``--workdir`` sharing the ``--cache`` gets its own copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kdlang import __version__
from kdlang.ir.sources import HFModel
from kdlang.plan import PlanNode

from ..cache import file_hashes
from ..context import StageContext
from ..errors import RunError
from ..train.card import model_card
from . import _export_data as export_data
from . import _hub_export as hub_export

MARKER = ".kdlang-export.json"
"""In every export: ``{"kdlang_export": 1, "kdlang", "recipe", "train", "export", "fingerprint",
"merged", "lora", "files": {path: sha256}}``, ``files`` listing every other file it wrote."""
RECORD = "export.json"
"""In the artifact: ``{"path", "train", "merged", "files": [...], "hashes": {path: sha256}}``,
the export as written, marker included."""
ADDED = "added"
"""In the artifact: the files an export adds to the trained model's (``README.md``, the marker),
kept so that a restored export is the same, byte for byte."""


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    export = node.node
    if export.hub is not None:  # a commit to a hub repo (.hub_export)
        return hub_export.run(node, ctx, out)
    target = destination(ctx, export.path)
    if export.train.name not in ctx.program.recipe.trains:  # rows: one file (.export_data)
        return export_data.run(node, ctx, out, target)
    _claim(target)  # before any work: what is not kdlang's stops the node here
    source, merged, lora = _source(ctx, export)
    added = out / ADDED
    added.mkdir()
    if export.card:
        text = model_card(ctx, export, merged=merged, lora=lora)
        (added / "README.md").write_text(text, encoding="utf-8")
    with _building(target) as tmp:
        shutil.copytree(source, tmp)
        shutil.copytree(added, tmp, dirs_exist_ok=True)
        written = file_hashes(tmp)
        marker = {
            "kdlang_export": 1,
            "kdlang": __version__,
            "recipe": ctx.program.recipe.title,
            "train": export.train.name,
            "export": node.name,
            "fingerprint": node.fingerprint,
            "merged": merged,
            "lora": lora,
            "files": written,
        }
        data = (json.dumps(marker, indent=1, sort_keys=True) + "\n").encode()
        (added / MARKER).write_bytes(data)
        (tmp / MARKER).write_bytes(data)
        hashes = {**written, MARKER: hashlib.sha256(data).hexdigest()}
        _place(tmp, target)
    record = {"path": str(target), "train": export.train.name, "merged": merged}
    record["files"] = sorted(hashes)
    document = {**record, "hashes": dict(sorted(hashes.items()))}
    (out / RECORD).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return {"rows": None, **record}


def restore(node: PlanNode, ctx: StageContext, artifact: Path) -> str | None:
    """Put a cached export back when its destination does not hold exactly the files its record
    lists. Returns None when it does (nothing is written), else what was found there (the
    run's note). What :func:`run` refuses is refused here too, with nothing deleted."""
    export = node.node
    if export.hub is not None:
        return hub_export.restore(node, ctx, artifact)
    if export.train.name not in ctx.program.recipe.trains:
        return export_data.restore(node, ctx, artifact, destination(ctx, export.path))
    try:
        record = json.loads((artifact / RECORD).read_text(encoding="utf-8"))
        hashes = record["hashes"]
    except (OSError, ValueError, KeyError):
        raise RunError(
            f"the cached record of `{node.name}` does not list its files (written by an older "
            f"kdlang); run with --force {node.name}"
        ) from None
    target = destination(ctx, export.path)
    if target.is_dir() and _holds(target, hashes):
        return None
    state, marker = _claim(target)
    source, _, _ = _source(ctx, export)
    with _building(target) as tmp:
        shutil.copytree(source, tmp)
        shutil.copytree(artifact / ADDED, tmp, dirs_exist_ok=True)
        if file_hashes(tmp) != hashes:
            raise RunError(
                f"the trained model of `{export.train.name}` in the cache is not the one "
                f"`{node.name}` exported (it was trained again); run with --force {node.name} "
                "to export it"
            )
        _place(tmp, target)
    if state == "missing":
        return f"{target} was missing"
    if state == "empty":
        return f"{target} was an empty folder"
    assert marker is not None  # the state is "export"
    if marker.get("fingerprint") == node.fingerprint:
        return f"files of the export were missing from {target}"
    return f"{target} held another kdlang export ({marker.get('export')})"


def destination(ctx: StageContext, path: str) -> Path:
    """The folder ``path`` exports to, links resolved: relative to the run's working directory.
    :class:`RunError` when it is the working directory, the cache, inside the cache, or above
    either (``""``, ``"."``, ``".."``, ...; :meth:`StageContext.unsafe_output`): the export
    would take them with it."""
    written = ctx.output_path(path)
    reason = ctx.unsafe_output(written)
    if reason is not None:
        raise RunError(
            f'export path "{path}" ({written.resolve()}) {reason}; an export replaces its '
            "destination folder, so it needs a folder of its own: nothing was written"
        )
    return written.resolve()


def _source(ctx: StageContext, export) -> tuple[Path, bool, bool]:
    """The trained model's folder in the cache to export, whether it is the merged model, and
    whether the student was trained with LoRA."""
    student = ctx.model(ctx.program.recipe.trains[export.train.name].student)
    assert isinstance(student, HFModel)  # a student is an `hf` model (`kdlang check` says so)
    artifact = ctx.artifact(export.train.name)
    lora = (artifact / "adapter").is_dir()
    merged = not lora or (export.merge_lora and (student.lora is None or student.lora.merge))
    source = artifact / ("model" if merged else "adapter")
    if not source.is_dir():
        raise RunError(f"`{export.train.name}` has no trained model in {artifact}")
    return source, merged, lora


def _claim(target: Path) -> tuple[str, dict[str, Any] | None]:
    """What lies at ``target``, when an export may take its place: ``missing``, ``empty`` (an
    empty folder), or ``export`` with its marker (a kdlang export holding only files its marker
    lists, unchanged; some may be missing). Anything else is someone else's: :class:`RunError`
    naming it, and nothing is touched."""
    if not target.exists() and not target.is_symlink():
        return "missing", None
    if not target.is_dir():
        raise RunError(f"cannot export to {target}: it exists and is not a folder")
    if not any(target.iterdir()):
        return "empty", None
    marker = _marker(target)
    if marker is None:
        raise RunError(
            f"cannot export to {target}: it is a folder that is not empty and holds no kdlang "
            f"export (no {MARKER}); nothing was deleted. Move its files away or export elsewhere"
        )
    listed = marker["files"]
    changed = [
        name
        for name, digest in file_hashes(target).items()
        if name != MARKER and listed.get(name) != digest
    ]
    if changed:
        shown = ", ".join(changed[:5]) + (
            f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        )
        raise RunError(
            f"cannot export to {target}: it holds files kdlang did not write there or that were "
            f"changed since ({shown}); nothing was deleted. Move them (or the folder) away to "
            "export again"
        )
    return "export", marker


def _marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a kdlang export in ``folder``; None when there is none (or it is not one)."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("files"), dict):
        return None
    return marker


def _holds(folder: Path, hashes: dict[str, str]) -> bool:
    """Whether ``folder`` holds exactly these files with these hashes. The file list is
    compared first: a missing or added file needs no hashing."""
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return names == sorted(hashes) and file_hashes(folder) == hashes


@contextmanager
def _building(target: Path) -> Iterator[Path]:
    """A path beside ``target`` (not yet created) to build the export in; whatever is left
    there when the block ends is removed. File system errors become :class:`RunError`."""
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
    except OSError as error:
        raise RunError(f"cannot write the export to {target}: {error}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _place(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``. What was there (an empty folder or an export :func:`_claim`
    accepted) is set aside first and removed only once ``new`` is in place; if ``new`` cannot
    be moved there, it is put back."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
