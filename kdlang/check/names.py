"""Name resolution: every reference names a declaration of the right kind, and stages form a DAG.

Which kinds a reference may name is a property of the setting (``teacher`` names a model,
``input`` a dataset or stage, ``model`` of an eval a model or a train); :data:`REFERENCE_KINDS`
lists them, and a reference to a declaration of another kind is KD0204.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from kdlang.ir.recipe import Recipe
from kdlang.ir.values import Ref
from kdlang.syntax.diagnostics import Collector, suggestion

DATA = ("datasets", "stages")
REFERENCE_KINDS: dict[str, tuple[str, ...]] = {
    "input": DATA,
    "data": DATA,
    "against": DATA,
    "teacher": ("models",),
    "student": ("models",),
    "judge": ("models",),
    "prompt": ("prompts",),
    "system": ("prompts",),
    "model": ("models", "trains"),
    "train": ("trains",),
}
_NOUN = {
    "datasets": "dataset",
    "stages": "stage",
    "models": "model",
    "prompts": "prompt",
    "trains": "train",
    "evals": "eval",
}


def references(node: Any, field: str | None = None) -> Iterator[tuple[str, Ref]]:
    """(setting, reference) for every reference inside an IR node."""
    if isinstance(node, Ref):
        yield field or "", node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from references(getattr(node, name), name)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from references(item, field)


def check_names(recipe: Recipe, errors: Collector) -> bool:
    """Report unresolved and wrong-kind references; True when every reference resolved."""
    ok = True
    nodes = [
        *(node for section in Recipe.SECTIONS for node in getattr(recipe, section).values()),
        *recipe.exports,
    ]
    for node in nodes:
        for field, ref in references(node):
            found = recipe.lookup(ref.name)
            allowed = REFERENCE_KINDS.get(field, tuple(Recipe.SECTIONS))
            if found is None and ref.name in recipe.broken:
                continue  # its own errors are reported already
            if found is None:
                ok = False
                candidates = [n for s in allowed for n in getattr(recipe, s)]
                errors.error(
                    "KD0201",
                    f"`{ref.name}` is not defined",
                    ref.span,
                    help=suggestion(ref.name, candidates) or _defined(recipe, allowed),
                )
            elif found[0] not in allowed:
                ok = False
                wanted = " or ".join(_NOUN[s] for s in allowed)
                errors.error(
                    "KD0204",
                    f"`{field}` expects a {wanted}, but `{ref.name}` is a {_NOUN[found[0]]}",
                    ref.span,
                    notes=[(f"`{ref.name}` is declared here", recipe.name_spans.get(ref.name))],
                )
    acyclic = _check_cycles(recipe, errors)  # over the references that did resolve
    return ok and acyclic


def upstream(recipe: Recipe, name: str) -> list[str]:
    """Names of the stages and datasets a stage, train or eval reads (direct inputs only)."""
    found = recipe.lookup(name)
    if found is None:
        return []
    return [
        ref.name
        for field, ref in references(found[1])
        if field in ("input", "data", "against", "model")
        and recipe.lookup(ref.name) is not None
        and recipe.lookup(ref.name)[0] in ("stages", "datasets", "trains")
    ]


def _check_cycles(recipe: Recipe, errors: Collector) -> bool:
    state: dict[str, int] = {}
    ok = True

    def visit(name: str, path: list[str]) -> None:
        nonlocal ok
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            ok = False
            cycle = [*path[path.index(name) :], name]
            errors.error(
                "KD0210",
                "stages depend on each other in a cycle: " + " -> ".join(cycle),
                recipe.name_spans[name],
            )
            return
        state[name] = 1
        for parent in upstream(recipe, name):
            visit(parent, [*path, name])
        state[name] = 2

    for name in [*recipe.stages, *recipe.trains, *recipe.evals]:
        visit(name, [])
    return ok


def _defined(recipe: Recipe, sections: tuple[str, ...]) -> str:
    names = [n for s in sections for n in getattr(recipe, s)]
    kinds = " or ".join(_NOUN[s] for s in sections)
    return f"defined {kinds}s: " + ", ".join(names) if names else f"no {kinds} is declared"
