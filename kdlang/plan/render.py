"""Plan renderings: the JSON document (a stable, documented schema), Graphviz dot, and the lock
file's content. The rich table lives with the CLI."""

from __future__ import annotations

import json
from typing import Any

from kdlang import __version__
from kdlang.plan.builder import Plan

PLAN_SCHEMA_VERSION = 1


def plan_document(plan: Plan, lock: dict | None = None) -> dict[str, Any]:
    """The ``kdlang plan --format json`` document (see docs/plan.md for the schema)."""
    recipe = plan.recipe
    locked = (lock or {}).get("nodes", {})
    nodes = []
    for node in plan.nodes:
        entry = {
            "name": node.name,
            "kind": node.kind,
            "op": node.op,
            "inputs": node.inputs,
            "fingerprint": node.fingerprint,
            "status": node.status,
            "reason": node.reason or None,
            "columns": node.columns,
            "estimates": node.estimate.as_dict(),
        }
        if lock is not None:
            previous = locked.get(node.name, {}).get("fingerprint")
            entry["lock"] = (
                "new" if previous is None else "same" if previous == node.fingerprint else "changed"
            )
        nodes.append(entry)
    return {
        "schema": PLAN_SCHEMA_VERSION,
        "kdlang": __version__,
        "recipe": recipe.title,
        "file": recipe.file,
        "seed": recipe.seed,
        "cache": plan.cache,
        "nodes": nodes,
    }


def plan_to_json(plan: Plan, lock: dict | None = None) -> str:
    return json.dumps(plan_document(plan, lock), indent=2)


def plan_to_dot(plan: Plan) -> str:
    shapes = {
        "dataset": "cylinder",
        "stage": "box",
        "train": "box3d",
        "eval": "note",
        "export": "folder",
    }
    lines = [f'digraph "{plan.recipe.title}" {{', "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for node in plan.nodes:
        style = ', style=filled, fillcolor="#dff0d8"' if node.status == "cached" else ""
        label = f"{node.name}\\n{node.op}" + ("\\n(cached)" if node.status == "cached" else "")
        lines.append(f'  "{node.name}" [shape={shapes[node.kind]}, label="{label}"{style}];')
    for node in plan.nodes:
        for parent in node.inputs:
            lines.append(f'  "{parent}" -> "{node.name}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def lock_document(plan: Plan, store) -> dict[str, Any]:
    """``FILE.lock``: resolved fingerprints, and the output hashes of nodes already run."""
    nodes = {}
    for node in plan.nodes:
        entry: dict[str, Any] = {"op": node.op, "fingerprint": node.fingerprint}
        manifest = store.manifest(node.fingerprint)
        if manifest is not None:
            entry["output"] = manifest.get("content_hash")
            entry["rows"] = manifest.get("rows")
        nodes[node.name] = entry
    return {
        "kdlang": __version__,
        "recipe": plan.recipe.title,
        "seed": plan.recipe.seed,
        "nodes": nodes,
    }
