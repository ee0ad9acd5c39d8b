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
"""

from __future__ import annotations

import bisect
import math
import random
from pathlib import Path
from typing import Any

from kdlang.plan import PlanNode

from ..context import StageContext
from ..data import write_rows


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
    keys = [number(row.get(column)) for row in rows]
    ranked = sorted(
        range(len(rows)),
        key=lambda i: (keys[i] is None, -(keys[i] or 0.0), i),
    )
    return sorted(ranked[:count])


def sample(rows: list[dict], count: int, seed: int) -> list[int]:
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


def stratified(rows: list[dict], stage, seed: int) -> tuple[list[int], dict[str, int]]:
    """Indices kept by a stratified select, in input order, and the kept count per stratum
    (its value, or its bin as ``[lo, hi)``)."""
    groups: dict[Any, list[int]] = {}
    for index, row in enumerate(rows):
        key = stratum(row.get(stage.stratify), stage.bins)
        if key is not None:
            groups.setdefault(key, []).append(index)
    chosen: list[int] = []
    counts: dict[str, int] = {}
    for order, key in enumerate(sorted(groups, key=str)):
        members = groups[key]
        count = stage.kept(len(members), stage.per_bin)
        part = [rows[i] for i in members]
        picked = top(part, count, stage.by) if stage.by else sample(part, count, seed + order)
        chosen.extend(members[i] for i in picked)
        if stage.bins is None:
            label = key
        else:
            label = f"[{stage.bins[key]:g}, {stage.bins[key + 1]:g}" + (
                "]" if key == len(stage.bins) - 2 else ")"
            )
        counts[label] = count
    return sorted(chosen), counts


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    rows = ctx.rows(stage.input.name)
    if stage.stratify is not None:
        chosen, counts = stratified(rows, stage, ctx.seed)
        ctx.stats["strata"] = counts
    else:
        count = stage.kept(len(rows))
        chosen = top(rows, count, stage.by) if stage.by else sample(rows, count, ctx.seed)
    ctx.stats["rows_in"] = len(rows)
    ctx.stats["dropped"] = {"select": len(rows) - len(chosen)}
    kept = [rows[i] for i in chosen]
    return {"rows": write_rows(kept, out, columns=list(node.columns) if node.columns else None)}
