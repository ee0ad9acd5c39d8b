"""``curate(topics) { teacher = .. prompt = .. per_item = k  output = column }``: data written
from meta-information (UltraChat, phi, GLAN).

Each input row (typically a topic crossed with a template: make the cross product with the
data you pass in) is rendered through ``prompt``, and the teacher writes ``per_item`` samples
for it, seeded per row. Each sample becomes an output row: the input row's columns plus
``output``. Samples that are empty (only whitespace) are dropped and counted (stats
``dropped.empty``). Generation is chunked and logged like ``label``'s, so a killed run resumes
and gives byte-identical rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlang.plan import PlanNode

from ..context import StageContext
from ..data import write_rows
from .label import generate_rows, row_requests


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    rows = ctx.rows(stage.input.name)
    ctx.stats["rows_in"] = len(rows)
    prompt = ctx.template(stage.prompt)
    requests = row_requests(ctx, stage, rows, prompt, n=stage.per_item)
    outputs = generate_rows(ctx, stage, rows, requests)
    if not ctx.dist.is_main:  # rank 0 writes the artifact
        return {}
    written, empty = [], 0
    for row, texts in zip(rows, outputs, strict=True):
        for text in texts:
            if not text.strip():
                empty += 1
                continue
            written.append({**row, stage.output: text})
    ctx.stats["dropped"] = {"empty": empty}
    return {"rows": write_rows(written, out, columns=list(node.columns or {}))}
