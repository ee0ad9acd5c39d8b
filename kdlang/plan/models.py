"""The plan's model table: what each ``model`` declaration resolves to, decided once.

Where an ``hf`` model loads from (its folder, relative to the recipe, when there is one; else the
hub id as written) decides both what the runtime loads and what identifies the model in every
fingerprint that reads it (a local folder's content, else the hub id and revision). Deciding it
here, in one function the planner and the runtime share through the plan, keeps the two from
drifting: a run loads exactly the model its fingerprints describe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kdlang.check.program import Program
from kdlang.ir.sources import HFModel, OpenAIModel
from kdlang.ir.values import EnvRef
from kdlang.plan.fingerprint import canonical, folder_hash
from kdlang.syntax.source import kind_of


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``model`` declaration.

    ``location`` is a local folder (absolute) for a local ``hf`` model, the hub id for a hub one
    and the server's model name for ``openai``; ``identity`` is what a fingerprint that reads the
    model records (content, never the declaration's name)."""

    name: str
    decl: HFModel | OpenAIModel
    location: str
    local: bool
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def hub_id(self) -> str | None:
        """The hub id an ``hf`` model loads from; None for a local folder or an API model."""
        return self.location if isinstance(self.decl, HFModel) and not self.local else None


def resolve_models(program: Program, resolve: Callable[[Any], Any]) -> dict[str, ModelSource]:
    """Every model of the program, by name. ``resolve`` turns references inside settings into
    their fingerprint contribution (see :func:`kdlang.plan.fingerprint.canonical`)."""
    return {
        name: _resolve(program, name, model, resolve)
        for name, model in program.recipe.models.items()
    }


def _resolve(program: Program, name: str, model, resolve) -> ModelSource:
    if isinstance(model, OpenAIModel):
        base = model.base_url
        identity = {
            "kind": "openai",
            "model": model.model,
            "chat": model.chat,
            "base_url": _url_identity(base),
        }
        return ModelSource(name, model, model.model, False, identity)
    assert isinstance(model, HFModel)
    settings = canonical(model, resolve)
    settings.pop("batch_size", None)  # how many rows go through at once changes no output
    folder = program.resolve(model.span.file, model.path)
    if kind_of(folder) == "dir":
        settings.pop("path")
        settings["content"] = folder_hash(folder)
        return ModelSource(name, model, str(folder), True, settings)
    return ModelSource(name, model, model.path, False, settings)


def _url_identity(base):
    """What a server address contributes to a teacher's identity: the name of the variable an
    ``env()`` reads (never its value), the URL as written, and for a list of replicas only that
    it is a pool, so adding or removing a server reruns nothing."""
    if isinstance(base, list):
        return "pool"
    return {"env": base.env} if isinstance(base, EnvRef) else base
