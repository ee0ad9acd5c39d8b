"""``union(a, b, ...)``: the rows of every input, input after input, each with a ``source``
column holding the name of the input it comes from. The inputs are read a batch at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from kdlang.plan import PlanNode

from ..arrow.io import ArrowWriter, read_batches
from ..context import StageContext
from .map import close


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    writer = ArrowWriter(out, list(node.columns) if node.columns else None)
    counts: dict[str, int] = {}
    for ref in stage.inputs:
        counts[ref.name] = 0
        for batch in read_batches(ctx.artifact(ref.name)):
            columns = dict(zip(batch.schema.names, batch.columns, strict=True))
            columns[stage.source] = pa.array([ref.name] * batch.num_rows, pa.string())
            writer.write(pa.table(columns))
            counts[ref.name] += batch.num_rows
    ctx.stats["rows_in"] = sum(counts.values())
    ctx.stats["inputs"] = counts
    return {"rows": close(writer, node)}
