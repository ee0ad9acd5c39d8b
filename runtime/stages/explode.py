"""``explode(input) { column = EXPR }``: one row per item of the list EXPR gives on each row.

The item goes to ``column`` (replacing an input column of that name) and the row's other
columns are repeated. A row whose expression gives an empty list, null or a value that is no
list gives no row; how many rows gave none goes to the run report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlang.expr import evaluate
from kdlang.ir.transforms import ExplodeStage
from kdlang.plan import PlanNode

from ..context import StageContext
from .map import write_computed


def exploded(rows: list[dict[str, Any]], stage: ExplodeStage) -> tuple[list[dict[str, Any]], int]:
    """``(output rows, input rows that gave none)``."""
    (column,) = stage.columns
    out, empty = [], 0
    for row in rows:
        items = evaluate(column.expr, row)
        if not isinstance(items, list) or not items:
            empty += 1
            continue
        out.extend({**row, column.name: item} for item in items)
    return out, empty


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    rows = ctx.rows(stage.input.name)
    ctx.stats["rows_in"] = len(rows)
    result, empty = exploded(rows, stage)
    ctx.stats["dropped"] = {"no items": empty}
    return {"rows": write_computed(result, out, node)}
