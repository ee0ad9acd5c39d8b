"""Secrets read with ``env("NAME")``: an unset variable is found before anything runs.

``check`` and ``plan`` warn (KD0406) at each ``env(...)`` whose variable is unset: a recipe may
well be checked where its secrets are not. ``run`` refuses to start when a node that will run
needs one (:func:`unset_for`), rather than failing in the middle of the run. Only names are
looked at; a value is never read here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel

from kdlang.ir.recipe import Recipe
from kdlang.ir.values import EnvRef, Ref
from kdlang.syntax.diagnostics import Collector
from kdlang.syntax.span import Span


def env_refs(value: Any, recipe: Recipe) -> Iterator[EnvRef]:
    """Every ``env(...)`` in ``value`` and in the models it names (a stage's teacher, a train's
    student): what running that node reads. Upstream stages are nodes of their own."""
    if isinstance(value, EnvRef):
        yield value
    elif isinstance(value, Ref):
        model = recipe.models.get(value.name)
        if model is not None and model is not value:
            yield from env_refs(model, recipe)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from env_refs(getattr(value, name), recipe)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from env_refs(item, recipe)
    elif isinstance(value, dict):
        for item in value.values():
            yield from env_refs(item, recipe)


def unset(refs: Iterable[EnvRef]) -> list[EnvRef]:
    """The refs whose variable is not set, once per variable, in order."""
    found: dict[str, EnvRef] = {}
    for ref in refs:
        if ref.env not in os.environ:
            found.setdefault(ref.env, ref)
    return list(found.values())


def check_environment(recipe: Recipe, errors: Collector) -> None:
    """A warning at every ``env(...)`` of the recipe whose variable is unset."""
    reported: set[tuple[str, Span]] = set()
    for name in recipe.names():
        declared = recipe.lookup(name)
        assert declared is not None  # names() lists declared names only
        for ref in env_refs(declared[1], recipe):
            key = (ref.env, ref.span)
            if ref.env in os.environ or key in reported:
                continue
            reported.add(key)
            errors.warning(
                "KD0406",
                f"environment variable {ref.env} is not set",
                ref.span,
                help=f"`kdlang run` needs it for the stages that use it: export {ref.env}=...",
            )
