"""Model paths: an ``hf(...)`` path that is written as a local path must exist.

``hf("org/name")`` is a hub id unless a folder of that name exists beside the recipe, so a typo in
a local path would silently become a hub download (and, offline, a slow failure at run time). A
path that can only be meant as local — absolute, starting with ``./``, ``../`` or ``~``, with a
backslash, or of three or more segments (hub ids are ``name`` or ``org/name``) — and does not
exist is reported here, at the path.
"""

from __future__ import annotations

import os

from kdlang.check.program import Program
from kdlang.ir.sources import HFModel
from kdlang.syntax.diagnostics import Collector
from kdlang.syntax.source import component_too_long, kind_of


def looks_local(path: str) -> bool:
    """Whether ``path`` cannot be a hub id (``name``, ``org/name``)."""
    return (
        path.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or path in (".", "..")
        or "\\" in path
        or path.count("/") >= 2
    )


def check_models(program: Program, errors: Collector) -> None:
    for model in program.recipe.models.values():
        if isinstance(model, HFModel) and component_too_long(model.path):
            errors.error(
                "KD0409",
                "the model's path has a component longer than the system allows",
                model.spans.get("path", model.span),
                help="a hub id is `org/name`, each part under 96 characters",
            )
            continue
        if not isinstance(model, HFModel) or not looks_local(model.path):
            continue
        folder = program.resolve(model.span.file, model.path)
        if kind_of(folder) is None:
            errors.error(
                "KD0402",
                f"model folder not found: {model.path}",
                model.spans.get("path", model.span),
                help=f"looked for {folder} (paths are relative to the recipe file); a hub id is "
                '`hf("name")` or `hf("org/name")`',
            )


def uncached_hub_models(program: Program, errors: Collector) -> None:
    """KD0414 (a warning) for every hub id of the recipe that is not in the local Hugging Face
    cache: what a run without the network (``HF_HUB_OFFLINE=1``) would stop at. Asked for with
    ``kdlang check --offline``; never asks the network."""
    for model in program.recipe.models.values():
        if isinstance(model, HFModel) and not looks_local(model.path):
            _warn_if_uncached(program, model, errors)


def _hub_cache() -> str | None:
    """The hub cache folder the environment names now (``HF_HUB_CACHE``, else ``HF_HOME/hub``;
    None: the library's default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME")
    return os.path.join(home, "hub") if home else None


def _warn_if_uncached(program: Program, model: HFModel, errors: Collector) -> None:
    """KD0414 for ``model`` if it is a hub id not in the local Hugging Face cache (a folder of
    that name beside the recipe is a local model, not a hub id)."""
    if kind_of(program.resolve(model.span.file, model.path)) == "dir":
        return
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - installed with transformers
        return
    try:
        found = try_to_load_from_cache(
            model.path, "config.json", cache_dir=_hub_cache(), revision=model.revision
        )
    except ValueError:  # not a valid hub id: loading says why
        return
    if isinstance(found, str):
        return
    errors.warning(
        "KD0414",
        f"`{model.path}` is not in the local Hugging Face cache: a run without the network "
        "(HF_HUB_OFFLINE=1) cannot load it",
        model.spans.get("path", model.span),
        help=f"download it where the hub can be reached (hf download {model.path}), or use a "
        "local folder",
    )
