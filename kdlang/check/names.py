"""Name resolution: every reference names a declaration of the right kind, and declarations
form a DAG.

Which kinds a reference may name is a property of the setting, declared by the class that has it
(``references`` of :mod:`kdlang.ir.descriptor`: ``teacher`` names a model, ``input`` a dataset or
stage, ``model`` of an eval a model or a train); a reference to a declaration of another kind is
KD0204. A reference to a dataset, stage or train is an input of the node that makes it:
:func:`upstream` lists them and :func:`dependency_order` is the one order everything runs and is
checked in.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from kdlang.ir.descriptor import UPSTREAM, reference_kinds
from kdlang.ir.recipe import Recipe
from kdlang.ir.values import Ref
from kdlang.syntax.diagnostics import Collector, suggestion

_NOUN = {
    "datasets": "dataset",
    "stages": "stage",
    "models": "model",
    "prompts": "prompt",
    "trains": "train",
    "evals": "eval",
}
GRAPH = ("datasets", "stages", "trains", "evals")
"""The sections of the named nodes of the DAG (exports are its leaves, named by their train)."""


def references(node: Any, owner: Any = None, setting: str = "") -> Iterator[tuple[Any, str, Ref]]:
    """(node holding the setting, setting, reference) for every reference inside an IR node."""
    if isinstance(node, Ref):
        yield owner, setting, node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from references(getattr(node, name), node, name)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from references(item, owner, setting)


def check_names(recipe: Recipe, errors: Collector) -> bool:
    """Report unresolved and wrong-kind references; True when every reference resolved."""
    ok = True
    nodes = [
        *(node for section in Recipe.SECTIONS for node in getattr(recipe, section).values()),
        *recipe.exports,
    ]
    for node in nodes:
        for owner, field, ref in references(node):
            found = recipe.lookup(ref.name)
            allowed = reference_kinds(owner, field) or tuple(Recipe.SECTIONS)
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
    """Names of the datasets, stages and trains a declaration reads (direct inputs only)."""
    found = recipe.lookup(name)
    return [] if found is None else inputs(recipe, found[1])


def inputs(recipe: Recipe, node: Any) -> list[str]:
    """Names of the datasets, stages and trains a node references: the rows it reads first,
    then the others in the order of its settings."""
    reads = getattr(type(node), "reads", None)
    found_refs = sorted(
        references(node), key=lambda found: found[2] is not getattr(node, reads or "", None)
    )
    out: list[str] = []
    for _, _, ref in found_refs:
        found = recipe.lookup(ref.name)
        if found is not None and found[0] in UPSTREAM and ref.name not in out:
            out.append(ref.name)
    return out


def dependency_order(recipe: Recipe) -> tuple[list[str], list[list[str]]]:
    """``(order, cycles)``: every dataset, stage, train and eval after what it reads (source
    order otherwise), and each cycle met, as the names along it (first name repeated last)."""
    state: dict[str, int] = {}  # 1: being visited, 2: done
    order: list[str] = []
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycles.append([*path[path.index(name) :], name])
            return
        state[name] = 1
        for parent in upstream(recipe, name):
            visit(parent, [*path, name])
        state[name] = 2
        order.append(name)

    for section in GRAPH:
        for name in getattr(recipe, section):
            visit(name, [])
    return order, cycles


def _check_cycles(recipe: Recipe, errors: Collector) -> bool:
    _, cycles = dependency_order(recipe)
    for cycle in cycles:
        errors.error(
            "KD0210",
            "stages depend on each other in a cycle: " + " -> ".join(cycle),
            recipe.name_spans[cycle[0]],
        )
    return not cycles


def _defined(recipe: Recipe, sections: tuple[str, ...]) -> str:
    names = [n for s in sections for n in getattr(recipe, s)]
    kinds = " or ".join(_NOUN[s] for s in sections)
    return f"defined {kinds}s: " + ", ".join(names) if names else f"no {kinds} is declared"
