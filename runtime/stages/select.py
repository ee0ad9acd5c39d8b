"""``select(input) { n = 70%  by = score }``: a subset of the rows, kept in their input order.

With ``by``: the ``n`` rows of highest ``by``. The ranking is stable (of equal values the earlier
row ranks first), and a row whose ``by`` is no number (null, NaN, text that does not parse)
ranks after every number. Without ``by``: ``n`` rows drawn uniformly without replacement by a
generator seeded with the recipe's seed, so a rerun keeps the same rows. Either way the kept
rows keep their input order.

With ``stratify``: the rows are grouped into strata (a value of the column, or the bin of
``bins`` it falls in; rows in no bin, or without a value, are left out), each stratum keeps
``per_bin`` of its rows the same way (the sample of stratum k drawn with a generator seeded by
the recipe's seed and k's order among the strata), and the kept rows of every stratum keep
their input order together.

Only the columns ``by`` and ``stratify`` name are read to choose the rows; the kept rows are
then copied from the input a batch at a time.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sized
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kdlang.plan import PlanNode

from ..arrow.io import ArrowWriter, read_batches, read_schema
from ..context import StageContext


def number(value: Any) -> float | None:
    """``value`` as a number to rank by, or None (bools are no numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        found = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(found) else found


def top(rows: list[dict], count: int, column: str) -> list[int]:
    """Indices of the ``count`` rows of highest ``column``, in input order."""
    return top_values([row.get(column) for row in rows], count)


def top_values(values: list[Any] | pa.Array, count: int) -> list[int]:
    """Indices of the ``count`` highest of ``values`` (by :func:`number`), in input order."""
    if isinstance(values, pa.Array) and _numeric(values.type):
        keys = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    else:
        listed = values.to_pylist() if isinstance(values, pa.Array) else values
        keys = np.array([_key(v) for v in listed], dtype=np.float64)
    missing = np.isnan(keys)
    order = np.lexsort((np.arange(len(keys)), -np.where(missing, 0.0, keys), missing))
    return sorted(order[:count].tolist())


def _numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _key(value: Any) -> float:
    found = number(value)
    return math.nan if found is None else found


def sample(rows: Sized, count: int, seed: int) -> list[int]:
    """Indices of ``count`` rows drawn uniformly without replacement, in input order."""
    return sorted(random.Random(seed).sample(range(len(rows)), count))


def stratum(value: Any, bins: list[float] | None) -> Any:
    """The stratum of a row's ``stratify`` value: the value itself (as JSON text, so that any
    value is a key), or the index of its bin; None: the row is in none."""
    if value is None:
        return None
    if bins is None:
        import json

        return json.dumps(value, sort_keys=True)
    found = number(value)
    if found is None or not bins[0] <= found <= bins[-1]:
        return None
    return min(bisect.bisect_right(bins, found) - 1, len(bins) - 2)


def stratified(
    values: list[Any], by: list[Any] | None, stage, seed: int
) -> tuple[list[int], dict[str, int]]:
    """Indices kept by a stratified select, in input order, and the kept count per stratum
    (its value, or its bin as ``[lo, hi)``); ``values`` are the rows' ``stratify`` values and
    ``by`` their ``by`` values."""
    groups: dict[Any, list[int]] = {}
    for index, value in enumerate(values):
        key = stratum(value, stage.bins)
        if key is not None:
            groups.setdefault(key, []).append(index)
    chosen: list[int] = []
    counts: dict[str, int] = {}
    for order, key in enumerate(sorted(groups, key=str)):
        members = groups[key]
        count = stage.kept(len(members), stage.per_bin)
        if by is not None:
            picked = top_values([by[i] for i in members], count)
        else:
            picked = sorted(random.Random(seed + order).sample(range(len(members)), count))
        chosen.extend(members[i] for i in picked)
        if stage.bins is None:
            label = key
        else:
            label = f"[{stage.bins[key]:g}, {stage.bins[key + 1]:g}" + (
                "]" if key == len(stage.bins) - 2 else ")"
            )
        counts[label] = count
    return sorted(chosen), counts


def _column(folder: Path, name: str | None, total: int) -> pa.Array | None:
    """The values of column ``name`` of the artifact (nulls where it has none)."""
    if name is None:
        return None
    if name not in read_schema(folder).names:
        return pa.nulls(total)
    parts = [batch.column(0) for batch in read_batches(folder, [name])]
    return pa.concat_arrays(parts) if parts else pa.nulls(0)


def _count(folder: Path) -> int:
    return sum(batch.num_rows for batch in read_batches(folder))


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    source = ctx.artifact(stage.input.name)
    total = _count(source)
    by = _column(source, stage.by, total)
    if stage.stratify is not None:
        strata = _column(source, stage.stratify, total)
        assert strata is not None
        chosen, counts = stratified(
            strata.to_pylist(), by.to_pylist() if by is not None else None, stage, ctx.seed
        )
        ctx.stats["strata"] = counts
    else:
        count = stage.kept(total)
        chosen = top_values(by, count) if by is not None else sample(range(total), count, ctx.seed)
    ctx.stats["rows_in"] = total
    ctx.stats["dropped"] = {"select": total - len(chosen)}
    writer = ArrowWriter(out, list(node.columns) if node.columns else None)
    wanted = np.array(chosen, dtype=np.int64)
    start = 0
    for batch in read_batches(source):
        end = start + batch.num_rows
        low, high = np.searchsorted(wanted, [start, end])
        if high > low:
            writer.write(batch.take(pa.array(wanted[low:high] - start)))
        start = end
    return {"rows": writer.close()}
