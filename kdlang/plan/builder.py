"""Building the execution plan of a checked program.

The plan is the DAG of datasets, stages, trains, evals and exports in execution order; each node
has its operator, inputs, canonical parameters, output columns, fingerprint, estimates, and its
status against the cache (``cached`` / ``will run``) with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlang.check.names import dependency_order, inputs
from kdlang.check.program import Program
from kdlang.ir.descriptor import Estimate
from kdlang.ir.recipe import Recipe
from kdlang.ir.sources import HFData, InlineData
from kdlang.ir.values import Ref
from kdlang.plan import estimates as est
from kdlang.plan.changes import explain_change
from kdlang.plan.fingerprint import canonical, file_hash, fingerprint, folder_hash
from kdlang.plan.models import ModelSource, resolve_models
from kdlang.plan.store import Store
from kdlang.syntax.source import kind_of


@dataclass
class PlanNode:
    name: str
    kind: str  # dataset | stage | train | eval | export
    op: str
    inputs: list[str]
    node: Any
    fingerprint: str = ""
    components: dict = field(default_factory=dict)
    columns: dict[str, str] | None = None
    estimate: Estimate = field(default_factory=Estimate)
    status: str = "will run"
    reason: str = ""
    lock: str | None = None
    seed: int = 0  # the node's resolved seed: a train's own ``seed``, else the recipe's


@dataclass
class Plan:
    program: Program
    nodes: list[PlanNode]
    cache: str
    models: dict[str, ModelSource] = field(default_factory=dict)

    def node(self, name: str) -> PlanNode:
        return next(n for n in self.nodes if n.name == name)

    def source(self, model) -> ModelSource:
        """The resolved entry of a ``model`` declaration of this plan's recipe."""
        return next(entry for entry in self.models.values() if entry.decl is model)

    @property
    def recipe(self) -> Recipe:
        return self.program.recipe


def needed(plan: Plan, only: list[str]) -> set[str]:
    """The named nodes and every node they depend on."""
    wanted: set[str] = set()
    by_name = {n.name: n for n in plan.nodes}
    stack = list(only)
    while stack:
        name = stack.pop()
        if name in wanted or name not in by_name:
            continue
        wanted.add(name)
        stack.extend(by_name[name].inputs)
    return wanted


def build_plan(program: Program, cache: str | None = None) -> Plan:
    """The plan of a program that passed :func:`kdlang.check.check_program`."""
    store = Store(cache or ".kdcache")
    builder = _Builder(program)
    nodes = builder.build()
    index = store.read_index(program.recipe.title)
    for node in nodes:
        if store.is_cached(node.fingerprint):
            node.status, node.reason = "cached", ""
        else:
            node.status = "will run"
            node.reason = explain_change(node, index.get(node.name))
    return Plan(program, nodes, str(store.root), builder.models)


class _Builder:
    def __init__(self, program: Program):
        self.program = program
        self.recipe = program.recipe
        self.fingerprints: dict[str, str] = {}
        self.rows: dict[str, tuple[int | None, bool]] = {}
        self.models = resolve_models(program, self.resolve)

    def build(self) -> list[PlanNode]:
        nodes: list[PlanNode] = []
        for name in self.order():
            found = self.recipe.lookup(name)
            assert found is not None  # the order holds declared names only
            nodes.append(self.make(name, *found))
        for position, export in enumerate(self.recipe.exports):
            nodes.append(
                self.make(
                    f"export:{export.train.name}" + (f":{position}" if position else ""),
                    "exports",
                    export,
                )
            )
        return nodes

    def order(self) -> list[str]:
        """Datasets, stages, trains and evals, each after what it reads (source order otherwise)."""
        return dependency_order(self.recipe)[0]

    def make(self, name: str, section: str, decl) -> PlanNode:
        kind = {
            "datasets": "dataset",
            "stages": "stage",
            "trains": "train",
            "evals": "eval",
            "exports": "export",
        }[section]
        op = decl.operator
        node = PlanNode(name=name, kind=kind, op=op, inputs=inputs(self.recipe, decl), node=decl)
        files: dict[str, str] = {}
        if kind == "dataset" and not isinstance(decl, InlineData):
            local = self.program.resolve(
                decl.span.file, decl.id if isinstance(decl, HFData) else decl.path
            )
            found = kind_of(local)
            if found == "file":
                files[local.name] = file_hash(local)
            elif found == "dir":
                files[local.name] = folder_hash(local)
        captured = getattr(decl, "logits", None) if kind == "dataset" else None
        if captured is not None and captured.config:  # DistillKit's codec, by content
            config = self.program.resolve(decl.span.file, captured.config)
            files["logits.config"] = file_hash(config) if kind_of(config) == "file" else "missing"
        start = getattr(decl, "init_from", None) if kind == "train" else None
        if start:  # the folder a student starts from, by content
            folder = self.program.resolve(decl.span.file, start)
            files["init_from"] = folder_hash(folder) if kind_of(folder) == "dir" else "missing"
        node.components = {
            "op": op,
            "code": decl.code_version,
            "params": canonical(decl, self.resolve),
            "seed": self.recipe.seed,
            "files": files,
        }
        own_seed = getattr(decl, "seed", None) if kind == "train" else None
        node.seed = own_seed if own_seed is not None else self.recipe.seed
        node.fingerprint = fingerprint(node.components)
        self.fingerprints[name] = node.fingerprint
        node.columns = self.program.schemas.get(name) if kind in ("dataset", "stage") else None
        node.estimate = self.estimate(name, kind, decl)
        return node

    def resolve(self, ref: Ref) -> Any:
        """What a reference contributes to a fingerprint: content, never the name."""
        found = self.recipe.lookup(ref.name)
        if found is None:
            return {"unresolved": ref.name}
        section, target = found
        if section == "prompts":
            return {"template": target.text}
        if section == "models":
            return {"model": self.models[ref.name].identity}
        return {"upstream": self.fingerprints.get(ref.name, ref.name)}

    def estimate(self, name: str, kind: str, decl) -> Estimate:
        if kind == "dataset":
            path = None
            if not isinstance(decl, InlineData | HFData):
                path = self.program.resolve(decl.span.file, decl.path)
            rows = est.dataset_rows(decl, path)
            self.rows[name] = (rows, False)
            return Estimate(rows=rows)
        if decl.reads is None:
            return decl.estimate(None, False)
        rows, upper = self.rows.get(getattr(decl, decl.reads).name, (None, False))
        vocab = None
        if kind == "train":
            source = self.models[decl.student.name]
            folder = Path(source.location) if source.local else None
            vocab = est.vocab_size(source.decl, folder)
        estimate = decl.estimate(rows, upper, vocab)
        if kind == "stage":
            self.rows[name] = (estimate.rows, estimate.rows_upper_bound)
        return estimate
