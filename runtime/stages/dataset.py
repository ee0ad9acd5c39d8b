"""``dataset NAME = jsonl(...) | csv(...) | parquet(...) | hf(...) | inline(...)``: read a source
into the cache, so every stage reads Arrow data and the source's content is pinned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlang.plan import PlanNode

from ..context import StageContext
from ..data import load_source, null_counts, write_rows
from ..errors import RunError


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    data = node.node
    try:
        rows = load_source(data, ctx.program.base_dir(data.span.file), ctx.seed)
    except (OSError, ValueError, KeyError) as error:  # missing file, bad line, unknown split...
        raise RunError(f"cannot read dataset `{node.name}`: {error}") from None
    ctx.stats["rows_in"] = len(rows)
    columns = list(node.columns) if node.columns else None
    nulls = null_counts(rows, columns or list(dict.fromkeys(k for row in rows for k in row)))
    if nulls:  # missing or null: reported, as a stage that reads the column will see null
        ctx.stats["null_cells"] = nulls
    count = write_rows(rows, out, columns=columns)
    return {"rows": count}
