"""``map(input) { column = EXPR ... keep = [..] | drop = [..] }``: computed columns.

Each computed column is the value of its expression (the typed expression language, never
Python ``eval``) on the input row and the columns computed on the lines above it (also input
columns ``keep``/``drop`` leave out). The input columns are kept as ``keep``/``drop`` say, in their order, the
computed ones after them (one that replaces an input column keeps that column's place).

The input is read a batch at a time. On a batch where every expression runs as Arrow kernels
(:mod:`kdlang.runtime.arrow.expr`) the columns are computed so; on any other, its rows are
computed one by one as Python values. Both give the same values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from kdlang.expr import evaluate
from kdlang.ir.transforms import MapStage
from kdlang.plan import PlanNode

from ..arrow.expr import Batch, vectorised
from ..arrow.io import ArrowWriter, MixedColumn, read_batches
from ..context import StageContext
from ..data import write_rows
from ..errors import RunError

_KINDS = {dict: "a map", list: "a list", str: "a string", bool: "true/false", int: "a number"}


def write_computed(rows: list[dict[str, Any]], out: Path, node: PlanNode) -> int:
    """``write_rows`` of computed rows. A column whose values have no one type (a map on one
    row, text on another: ``json(...)`` of varied answers) is a :class:`RunError` naming the
    column and two rows that disagree."""
    columns = list(node.columns) if node.columns else None
    try:
        return write_rows(rows, out, columns=columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        for name in columns or list(rows[0]):
            values = [row.get(name) for row in rows]
            try:
                pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise RunError(_mixed(node.name, name, values)) from None
        raise


def _mixed(stage: str, column: str, values: list[Any], offset: int = 0) -> str:
    kinds = [(i, _KINDS.get(type(v), "a number")) for i, v in enumerate(values, 1) if v is not None]
    first = kinds[0]
    other = next(((i, k) for i, k in kinds if k != first[1]), kinds[-1])
    return (
        f"{stage}: column `{column}` holds {first[1]} in row {first[0] + offset} and {other[1]} "
        f"in row {other[0] + offset}; a column holds one kind of value (convert them, e.g. with "
        "str(...))"
    )


def write_python_rows(
    writer: ArrowWriter, rows: list[dict[str, Any]], node: PlanNode, offset: int
) -> None:
    """``writer.write_rows`` of computed rows (row ``offset + 1`` the first), a column of no
    one type a :class:`RunError` naming it and two rows that disagree."""
    try:
        writer.write_rows(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        for name in dict.fromkeys(k for row in rows for k in row):
            values = [row.get(name) for row in rows]
            try:
                pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise RunError(_mixed(node.name, name, values, offset)) from None
        raise


def close(writer: ArrowWriter, node: PlanNode) -> int:
    """``writer.close()``; batches of two kinds in one column are a :class:`RunError`."""
    try:
        return writer.close()
    except MixedColumn as error:
        raise RunError(
            f"{node.name}: {error}; a column holds one kind of value (convert them, e.g. with "
            "str(...))"
        ) from None


def mapped(rows: list[dict[str, Any]], stage: MapStage) -> list[dict[str, Any]]:
    """The output rows of ``stage`` on ``rows``."""
    out = []
    for row in rows:
        kept = {name: row.get(name) for name in stage.kept(list(row))}
        scope = dict(row)
        for column in stage.columns:
            scope[column.name] = kept[column.name] = evaluate(column.expr, scope)
        out.append(kept)
    return out


def mapped_batch(batch: pa.RecordBatch, stage: MapStage) -> pa.Table | None:
    """The output of ``stage`` on ``batch`` as Arrow kernels compute it; None where an
    expression of it is not computed so on this batch."""
    scope = dict(Batch.of(batch).columns)
    out = {name: scope[name] for name in stage.kept(batch.schema.names)}
    for column in stage.columns:
        computed = vectorised(column.expr, Batch(scope, batch.num_rows))
        if computed is None:
            return None
        if computed.null_count == len(computed):  # as Python's None in every row converts
            computed = pa.nulls(len(computed))
        scope[column.name] = out[column.name] = computed
    return pa.table(out)


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    writer = ArrowWriter(out, list(node.columns) if node.columns else None)
    rows_in = 0
    for batch in read_batches(ctx.artifact(stage.input.name)):
        table = mapped_batch(batch, stage)
        if table is not None:
            writer.write(table)
        else:
            write_python_rows(writer, mapped(batch.to_pylist(), stage), node, rows_in)
        rows_in += batch.num_rows
    ctx.stats["rows_in"] = rows_in
    return {"rows": close(writer, node)}
