"""Model paths: an ``hf(...)`` path that is written as a local path must exist.

``hf("org/name")`` is a hub id unless a folder of that name exists beside the recipe, so a typo in
a local path would silently become a hub download (and, offline, a slow failure at run time). A
path that can only be meant as local — absolute, starting with ``./``, ``../`` or ``~``, with a
backslash, or of three or more segments (hub ids are ``name`` or ``org/name``) — and does not
exist is reported here, at the path.
"""

from __future__ import annotations

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
