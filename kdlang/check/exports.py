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
    check_train_outputs(program, errors)
    if not program.recipe.exports:
        return
    try:
        workdir = Path.cwd()
    except OSError:  # the current directory was removed: there is nothing there to protect
        return
    cache = workdir / DEFAULT_CACHE
    for export in program.recipe.exports:
        recipe = program.recipe
        rows = export.train.name in recipe.stages or export.train.name in recipe.datasets
        if not isinstance(export.path, str):  # hub("owner/name")
            check_hub_export(export, rows, errors)
            continue
        _not_hub_settings(export, rows, errors)
        if rows:
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


def check_hub_export(export, rows: bool, errors: Collector) -> None:
    """``hub("owner/name")``: one string of that form (KD0416, KD0415); a data export to the
    hub takes none of a model export's settings (KD0413)."""
    import re

    from kdlang.ir.tracking import HUB_REPO_ID

    hub = export.hub
    args = hub.args
    if len(args) != 1 or not isinstance(args[0], str) or hub.kwargs:
        errors.error(
            "KD0416",
            'hub() takes one string, the repo id: hub("owner/name")',
            hub.span,
            help="the other settings of a hub export go in its block: "
            '`{ private = true  revision = "main"  token = env("HF_TOKEN") }`',
        )
        return
    repo = args[0]
    if not re.fullmatch(HUB_REPO_ID, repo) or ".." in repo or "--" in repo or repo.endswith("."):
        errors.error(
            "KD0415",
            f'"{repo}" is not a hub repo id',
            hub.span,
            help='a repo id is "owner/name": letters, digits, `.`, `_` and `-`, at most 96 '
            "characters each, no `..` or `--`",
        )
    if rows:
        for setting in export.model_settings:
            if setting in export.model_fields_set:
                errors.error(
                    "KD0413",
                    f"`{setting}` is a setting of a model export; `{export.train.name}` holds rows",
                    export.spans.get(setting, export.span),
                )


def _not_hub_settings(export, rows: bool, errors: Collector) -> None:
    """Settings that only an export to the hub takes (KD0417), and card settings on a data
    export to a file, which writes no card (KD0418)."""
    for setting in export.hub_settings:
        if setting in export.model_fields_set:
            errors.error(
                "KD0417",
                f'`{setting}` is a setting of an export to hub("owner/name"); this export '
                f'writes to the path "{export.path}"',
                export.spans.get(setting, export.span),
                help='export to hub("owner/name") for it to apply, or remove it',
            )
    if rows:
        for setting in export.card_settings:
            if setting in export.model_fields_set:
                errors.error(
                    "KD0418",
                    f"`{setting}` goes into a card's metadata, and an export of rows to a file "
                    "writes no card",
                    export.spans.get(setting, export.span),
                    help='export the rows to hub("owner/name") (a dataset card), or remove it',
                )


def check_train_outputs(program: Program, errors: Collector) -> None:
    """What a train sends out of the run and starts from: a ``tracker_project`` no tracker of
    ``report_to`` uses (KD0360), a tracker whose package is not installed here (KD0361, a
    warning: ``kdlang run`` stops at that train), an ``init_from`` that names no folder
    (KD0362). Packages are looked up, never imported."""
    import importlib.util

    from kdlang.syntax.source import kind_of

    for train in program.recipe.trains.values():
        given = train.model_fields_set
        if (
            "tracker_project" in given
            and "report_to" in given
            and not {"wandb", "mlflow"} & set(train.report_to)
        ):
            errors.error(
                "KD0360",
                "`tracker_project` names a W&B project or MLflow experiment, but `report_to` "
                "lists neither",
                train.spans.get("tracker_project", train.span),
                help="add wandb or mlflow to `report_to`, or remove `tracker_project`",
            )
        for tracker, module in (("wandb", "wandb"), ("mlflow", "mlflow")):
            if tracker in train.report_to and importlib.util.find_spec(module) is None:
                errors.warning(
                    "KD0361",
                    f"`report_to` lists {tracker}, which is not installed here",
                    train.spans.get("report_to", train.span),
                    help='`kdlang run` stops at this train without it: pip install "kdlang[trackers]"',
                )
        if train.init_from is not None:
            folder = program.resolve(train.span.file, train.init_from)
            if kind_of(folder) != "dir":
                errors.error(
                    "KD0362",
                    f"init_from names no folder: {train.init_from}",
                    train.spans.get("init_from", train.span),
                    help=f"looked for {folder} (paths are relative to the recipe file): a "
                    "checkpoint folder (ckpt-...), an exported model or a peft adapter",
                )
