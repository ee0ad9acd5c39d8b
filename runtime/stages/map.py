"""``map(input) { column = EXPR ... keep = [..] | drop = [..] }``: computed columns, row by row.

Each computed column is the value of its expression (the typed expression language, never
Python ``eval``) on the input row and the columns computed on the lines above it (also input
columns ``keep``/``drop`` leave out). The input columns are kept as ``keep``/``drop`` say, in their order, the
computed ones after them (one that replaces an input column keeps that column's place).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from kdlang.expr import evaluate
from kdlang.ir.transforms import MapStage
from kdlang.plan import PlanNode

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


def _mixed(stage: str, column: str, values: list[Any]) -> str:
    kinds = [(i, _KINDS.get(type(v), "a number")) for i, v in enumerate(values, 1) if v is not None]
    first = kinds[0]
    other = next(((i, k) for i, k in kinds if k != first[1]), kinds[-1])
    return (
        f"{stage}: column `{column}` holds {first[1]} in row {first[0]} and {other[1]} in row "
        f"{other[0]}; a column holds one kind of value (convert them, e.g. with str(...))"
    )


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


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    rows = ctx.rows(stage.input.name)
    ctx.stats["rows_in"] = len(rows)
    return {"rows": write_computed(mapped(rows, stage), out, node)}
