"""``export TRAIN to "path" { merge_lora = .. card = .. }``: the trained student, where people use it.

The path is relative to the run's working directory (``--workdir``, by default the current
folder), where ``runs/`` goes too. The folder receives the student as
``save_pretrained`` wrote it, with its tokenizer: the full weights (LoRA merged in) or, for a LoRA
student with ``merge_lora = false`` (or its ``lora(merge = false)``), the adapter alone; and a
model card ``README.md`` generated from the recipe (see :mod:`kdlang.runtime.train.card`).

The export is written outside the cache, so it is built in a temporary sibling folder and renamed
into place (a previous export there is replaced only once the new one is complete). The cache
artifact records what was written (``export.json``), so a re-run with nothing changed is cached.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from kdlang.runtime.context import RunError
from kdlang.runtime.train.card import model_card


def run(node, ctx, out: Path) -> dict:
    export = node.node
    recipe = ctx.program.recipe
    train = recipe.trains[export.train.name]
    student = recipe.models[train.student.name]
    artifact = ctx.artifact(export.train.name)
    lora = (artifact / "adapter").is_dir()
    merged = not lora or (export.merge_lora and (student.lora is None or student.lora.merge))
    source = artifact / ("model" if merged else "adapter")
    if not source.is_dir():
        raise RunError(f"`{export.train.name}` has no trained model in {artifact}")
    target = ctx.output_path(export.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(source, tmp)
        if export.card:
            text = model_card(ctx, export, merged=merged, lora=lora)
            (tmp / "README.md").write_text(text, encoding="utf-8")
        _replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    record = {"path": str(target), "train": export.train.name, "merged": merged, "files": files}
    (out / "export.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return {"rows": None, **record}


def _replace(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing ``target`` is set aside first and removed after."""
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
