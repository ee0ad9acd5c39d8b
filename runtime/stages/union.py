"""``union(a, b, ...)``: the rows of every input, input after input, each with a ``source``
column holding the name of the input it comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlang.plan import PlanNode

from ..context import StageContext
from .map import write_computed


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for ref in stage.inputs:
        part = ctx.rows(ref.name)
        counts[ref.name] = len(part)
        rows.extend({**row, stage.source: ref.name} for row in part)
    ctx.stats["rows_in"] = len(rows)
    ctx.stats["inputs"] = counts
    return {"rows": write_computed(rows, out, node)}
