"""``select(input) { n = 70%  by = score }``: a subset of the rows, kept in their input order.

With ``by``: the ``n`` rows of highest ``by``. The ranking is stable (of equal values the earlier
row ranks first), and a row whose ``by`` is no number (null, NaN, text that does not parse)
ranks after every number. Without ``by``: ``n`` rows drawn uniformly without replacement by a
generator seeded with the recipe's seed, so a rerun keeps the same rows. Either way the kept
rows keep their input order.
"""

from __future__ import annotations

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


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    rows = ctx.rows(stage.input.name)
    count = stage.kept(len(rows))
    chosen = top(rows, count, stage.by) if stage.by else sample(rows, count, ctx.seed)
    ctx.stats["rows_in"] = len(rows)
    ctx.stats["dropped"] = {"select": len(rows) - count}
    kept = [rows[i] for i in chosen]
    return {"rows": write_rows(kept, out, columns=list(node.columns) if node.columns else None)}
