"""``judge(data) { judge = model  prompt = rubric  output = score  scale = [1, 10] }``.

The judge model answers the rubric prompt rendered on each row (greedy by default:
``temperature = 0``); the judgement is read by :func:`parse_score`. A row whose judgement has
no number (``unparsable``) or a number outside ``scale`` (``out_of_scale``) is dropped and
counted in the stage's ``dropped`` stats; every other row is kept with the score as a float in
the ``output`` column. Stats also give the ``mean_score`` of the kept rows. Generation is
chunked and logged like ``label``'s, so a killed run resumes and gives byte-identical rows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kdlang.plan import PlanNode

from ..context import StageContext
from ..data import write_rows
from .label import generate_rows, row_requests

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_SCORE = re.compile(rf"\bscore[\s*_:=#]{{0,8}}({_NUMBER})", re.IGNORECASE)
_FIRST = re.compile(rf"(?<![\w.]){_NUMBER}")


def parse_score(text: str) -> float | None:
    """The score in a judgement: the number after the last ``Score: N`` (also ``score = N``,
    ``**Score:** N``; case ignored), else the first number in the text; None if there is none.
    ``8/10`` reads as 8."""
    labelled = _SCORE.findall(text)
    if labelled:
        return float(labelled[-1])
    found = _FIRST.search(text)
    return float(found.group(0)) if found else None


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    rows = ctx.rows(stage.input.name)
    ctx.stats["rows_in"] = len(rows)
    rubric = ctx.template(stage.prompt)
    requests = row_requests(ctx, stage, rows, rubric)
    judgements = generate_rows(ctx, stage, rows, requests, teacher=stage.judge)
    if not ctx.dist.is_main:  # rank 0 writes the artifact
        return {}
    low, high = stage.scale
    kept, dropped = [], {"unparsable": 0, "out_of_scale": 0}
    for row, (text,) in zip(rows, judgements, strict=True):
        score = parse_score(text)
        if score is None:
            dropped["unparsable"] += 1
        elif not low <= score <= high:
            dropped["out_of_scale"] += 1
        else:
            kept.append({**row, stage.output: score})
    ctx.stats["dropped"] = dropped
    if kept:
        ctx.stats["mean_score"] = sum(r[stage.output] for r in kept) / len(kept)
    return {"rows": write_rows(kept, out, columns=list(node.columns or {}))}
