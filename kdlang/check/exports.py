"""Export paths: an ``export`` may not land on the work folder, the cache, or a folder above them.

An export puts a folder in place of its destination, so a destination that is the working
directory (``""``, ``"."``, ``"a/.."``), the cache folder (``.kdcache``), a folder inside the cache,
or an ancestor of the working directory or of the cache (``".."``, ``"/"``) would take the recipe,
the user's files or the cache with it. Such a path is an error (KD0405) at the path's string.

``kdlang check`` does not know ``--workdir`` and ``--cache``; it judges paths against the folders
``kdlang run`` uses by default: the current directory and ``.kdcache`` in it. The run judges them
again, with :func:`unsafe_destination`, against the folders it really uses.
"""

from __future__ import annotations

import os
from pathlib import Path

from kdlang.check.program import Program
from kdlang.syntax.diagnostics import Collector

DEFAULT_CACHE = ".kdcache"
"""The cache folder of a run without ``--cache`` (``kdlang.plan.store.DEFAULT_CACHE``, not
imported from there: ``check`` does not load the planner)."""


def unsafe_destination(target: Path, workdir: Path, cache: Path) -> str | None:
    """Why ``target`` must not receive an export, given the run's ``workdir`` and ``cache``
    (relative paths are taken from the current directory), or None when it may. The paths are
    compared twice: as written, with ``..`` taken lexically (``a/..`` is the folder holding
    ``a``), and with symbolic links resolved, so that neither a spelling nor a link leads an
    export onto these folders."""
    paths = (target, workdir, cache)
    lexical = [Path(os.path.normpath(Path(p).absolute())) for p in paths]
    real = [Path(p).resolve() for p in paths]
    for there, work, store in (lexical, real):
        reason = _overlap(there, work, store)
        if reason is not None:
            return reason
    return None


def _overlap(target: Path, workdir: Path, cache: Path) -> str | None:
    if target == workdir:
        return "is the working directory"
    if target == cache:
        return "is the cache folder"
    if target in workdir.parents:
        return "is an ancestor of the working directory"
    if target in cache.parents:
        return "is an ancestor of the cache folder"
    if cache in target.parents:
        return "is inside the cache folder"
    return None


def check_exports(program: Program, errors: Collector) -> None:
    if not program.recipe.exports:
        return
    try:
        workdir = Path.cwd()
    except OSError:  # the current directory was removed: there is nothing there to protect
        return
    cache = workdir / DEFAULT_CACHE
    for export in program.recipe.exports:
        recipe = program.recipe
        if export.train.name in recipe.stages or export.train.name in recipe.datasets:
            _check_data_export(export, errors)
        reason: str | None
        if export.path == "":
            reason = "is empty, which names the working directory"
        elif "\0" in export.path:
            reason = "holds a NUL character, which no folder name can"
        else:
            target = workdir / Path(export.path).expanduser()
            reason = unsafe_destination(target, workdir, cache)
        if reason is None:
            continue
        errors.error(
            "KD0405",
            f'unsafe export path "{export.path}": it {reason}',
            export.spans.get("path", export.span),
            help="an export replaces its destination folder; give it a folder of its own, "
            f'such as "exports/{export.train.name}" (relative to the working directory)',
        )


def _check_data_export(export, errors: Collector) -> None:
    """An export of a dataset or stage writes one file in the format its extension names, and
    takes none of a model export's settings."""
    from kdlang.ir.training import DATA_FORMATS

    suffix = Path(export.path).suffix.lower()
    if suffix not in DATA_FORMATS:
        errors.error(
            "KD0412",
            f'`{export.train.name}` holds rows, exported as one file: "{export.path}" names no '
            "data format",
            export.spans.get("path", export.span),
            help="end the path with " + ", ".join(DATA_FORMATS),
        )
    for setting in export.model_settings:
        if setting in export.model_fields_set:
            errors.error(
                "KD0413",
                f"`{setting}` is a setting of a model export; `{export.train.name}` holds rows",
                export.spans.get(setting, export.span),
            )
