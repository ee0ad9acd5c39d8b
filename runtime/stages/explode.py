"""``explode(input) { column = EXPR }``: one row per item of the list EXPR gives on each row.

The item goes to ``column`` (replacing an input column of that name) and the row's other
columns are repeated. A row whose expression gives an empty list, null or a value that is no
list gives no row; how many rows gave none goes to the run report.

The input is read a batch at a time; where the expression runs as Arrow kernels on a batch
and gives lists (a list column) they are flattened there, else the rows of the batch are
exploded one by one as Python values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from kdlang.expr import evaluate
from kdlang.ir.transforms import ExplodeStage
from kdlang.plan import PlanNode

from ..arrow.expr import Batch, vectorised
from ..arrow.io import ArrowWriter, read_batches
from ..context import StageContext
from .map import close, write_python_rows


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


def exploded_batch(batch: pa.RecordBatch, stage: ExplodeStage) -> tuple[pa.Table, int] | None:
    """``(output rows, input rows that gave none)`` as Arrow kernels compute them; None where
    the expression is not computed so on this batch."""
    (column,) = stage.columns
    items = vectorised(column.expr, Batch.of(batch))
    if items is None or not (pa.types.is_list(items.type) or pa.types.is_large_list(items.type)):
        return None
    lengths = pc.fill_null(pc.list_value_length(items), 0)
    empty = batch.num_rows - pc.sum(pc.not_equal(lengths, 0)).as_py() if batch.num_rows else 0
    parents = pc.list_parent_indices(items)
    values = pc.list_flatten(items)
    out: dict[str, pa.Array] = {}
    for name in batch.schema.names:
        out[name] = values if name == column.name else batch.column(name).take(parents)
    out[column.name] = values
    return pa.table(out), empty


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    writer = ArrowWriter(out, list(node.columns) if node.columns else None)
    rows_in = empty = made = 0
    for batch in read_batches(ctx.artifact(stage.input.name)):
        fast = exploded_batch(batch, stage)
        if fast is not None:
            writer.write(fast[0])
            empty += fast[1]
        else:
            result, none = exploded(batch.to_pylist(), stage)
            write_python_rows(writer, result, node, made)
            empty += none
            made += len(result)
        rows_in += batch.num_rows
    ctx.stats["rows_in"] = rows_in
    ctx.stats["dropped"] = {"no items": empty}
    return {"rows": close(writer, node)}
