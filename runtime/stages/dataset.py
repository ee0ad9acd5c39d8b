"""``dataset NAME = jsonl(...) | csv(...) | parquet(...) | hf(...) | inline(...)``: read a source
into the cache, so every stage reads Arrow data and the source's content is pinned.

``jsonl`` and ``parquet`` files are read by pyarrow in blocks, straight into the artifact, when
they can be (:mod:`kdlang.runtime.arrow.sources`); the other sources, and those files where
they cannot, as Python rows. Either way the artifact holds the same rows in the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlang.plan import PlanNode

from ..arrow.io import ArrowWriter
from ..arrow.sources import NotArrow, arrow_source, write_arrow_source
from ..context import StageContext
from ..data import _local, load_source, null_counts
from ..errors import RunError


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    data = node.node
    base = ctx.program.base_dir(data.span.file)
    columns = list(node.columns) if node.columns else None
    writer = ArrowWriter(out, columns)
    batches = arrow_source(data, _local(base, data.path)) if hasattr(data, "path") else None
    if batches is not None and _local(base, data.path).is_file():
        try:
            write_arrow_source(batches, data, ctx.seed, writer)
            ctx.stats["reader"] = "arrow"
            return _finish(ctx, writer)
        except NotArrow:
            writer.abort()
    try:
        rows = load_source(data, base, ctx.seed)
    except (OSError, ValueError, KeyError) as error:  # missing file, bad line, unknown split...
        raise RunError(f"cannot read dataset `{node.name}`: {error}") from None
    writer.write_rows(rows)
    nulls = null_counts(rows, columns or list(dict.fromkeys(k for row in rows for k in row)))
    if nulls:  # missing or null: reported, as a stage that reads the column will see null
        ctx.stats["null_cells"] = nulls
    ctx.stats["rows_in"] = len(rows)
    return {"rows": writer.close()}


def _finish(ctx: StageContext, writer: ArrowWriter) -> dict[str, Any]:
    count = writer.close()
    ctx.stats["rows_in"] = count
    from ..arrow.io import read_batches

    nulls: dict[str, int] = {}
    for batch in read_batches(writer.folder, writer.columns or None):
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            if column.null_count:
                nulls[name] = nulls.get(name, 0) + column.null_count
    if nulls:
        ctx.stats["null_cells"] = nulls
    return {"rows": count}
