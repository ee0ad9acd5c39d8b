"""``pairs(scored) { group = prompt_column  response = column  score = score  min_margin = m }``:
preference pairs (chosen, rejected) from several scored responses to the same prompt.

Rows are grouped by the value of ``group`` (groups in order of first appearance). In each group
the response with the highest score is ``chosen`` and the one with the lowest ``rejected`` (the
first such row when several share the score); ``margin`` = their score difference. A group
gives no pair, counted in the stage's ``dropped`` stats, when it has fewer than two scored
responses (``single``), when all its scores are equal (``tie``) or when the margin is below
``min_margin`` (``below_min_margin``). Rows whose score is missing or not a number are left
out of their group (``unscored``). Output columns: the group column, ``chosen``, ``rejected``,
``margin``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kdlang.plan import PlanNode

from ..context import StageContext
from ..data import write_rows


def _score(value) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) else None


def make_pairs(rows: list[dict], group: str, response: str, score: str, min_margin: float):
    """``(pairs, dropped)`` for ``rows``; see the module's docstring."""
    groups: dict[str, list[tuple[float, dict]]] = {}
    dropped = {"unscored": 0, "single": 0, "tie": 0, "below_min_margin": 0}
    for row in rows:
        key = json.dumps(row.get(group), sort_keys=True, default=str)
        value = _score(row.get(score))
        if value is None:
            dropped["unscored"] += 1
            groups.setdefault(key, [])
            continue
        groups.setdefault(key, []).append((value, row))
    pairs = []
    for members in groups.values():
        if len(members) < 2:
            dropped["single"] += 1
            continue
        best = max(members, key=lambda m: m[0])  # max/min keep the first of equal scores
        worst = min(members, key=lambda m: m[0])
        margin = best[0] - worst[0]
        if margin == 0:
            dropped["tie"] += 1
        elif margin < min_margin:
            dropped["below_min_margin"] += 1
        else:
            pairs.append(
                {
                    group: best[1].get(group),
                    "chosen": best[1].get(response),
                    "rejected": worst[1].get(response),
                    "margin": margin,
                }
            )
    return pairs, dropped


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    rows = ctx.rows(stage.input.name)
    ctx.stats["rows_in"] = len(rows)
    pairs, dropped = make_pairs(rows, stage.group, stage.response, stage.score, stage.min_margin)
    ctx.stats["dropped"] = dropped
    return {"rows": write_rows(pairs, out, columns=list(node.columns or {}))}
