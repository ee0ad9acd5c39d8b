"""``judge(data) { judge = model  prompt = rubric  output = score  scale = [1, 10] }``.

The judge model answers the rubric prompt rendered on each row (greedy by default:
``temperature = 0``); the judgement is read by :func:`parse_score`. A row whose judgement has
no number (``unparsable``) or a number outside ``scale`` (``out_of_scale``) is dropped and
counted in the stage's ``dropped`` stats; every other row is kept with the score as a float in
the ``output`` column. Stats also give the ``mean_score`` of the kept rows. Generation is
chunked and logged like ``label``'s, so a killed run resumes and gives byte-identical rows.

With ``metrics``, the judgement is a JSON object read by :func:`parse_metrics`; rows without one,
or with a metric missing or out of its range, are dropped and counted (``no_json``,
``missing_metric``, ``out_of_scale``); stats give each metric's mean (``mean_scores``).
"""

from __future__ import annotations

import json
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


def parse_metrics(text: str, metrics: dict[str, list[float]]) -> tuple[dict | None, str, str]:
    """The scores of a JSON judgement: ``(scores, rationale, why)``, scores None when the text
    holds no JSON object with a number in range for every metric (``why`` says which:
    ``no_json``, ``missing_metric`` or ``out_of_scale``). The object is the first ``{...}``
    that parses (a fenced block or prose around it is fine); the rationale is its
    ``rationale`` field, else the text around it."""
    found, span = _first_object(text)
    if found is None:
        return None, "", "no_json"
    scores = {}
    for name, (low, high) in metrics.items():
        value = found.get(name)
        if isinstance(value, str):
            value = parse_score(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, "", "missing_metric"
        if not low <= value <= high:
            return None, "", "out_of_scale"
        scores[name] = float(value)
    reason = found.get("rationale")
    if not isinstance(reason, str):
        reason = (text[: span[0]] + text[span[1] :]).strip().strip("`").strip()
    return scores, reason, ""


def _first_object(text: str) -> tuple[dict | None, tuple[int, int]]:
    decoder = json.JSONDecoder()
    for start in (i for i, c in enumerate(text) if c == "{"):
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value, (start, end)
    return None, (0, 0)


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    rows = ctx.rows(stage.input.name)
    ctx.stats["rows_in"] = len(rows)
    rubric = ctx.template(stage.prompt)
    requests = row_requests(ctx, stage, rows, rubric)
    judgements = generate_rows(ctx, stage, rows, requests, teacher=stage.judge)
    if not ctx.dist.is_main:  # rank 0 writes the artifact
        return {}
    if stage.metrics is not None:
        return _write_metrics(stage, node, ctx, out, rows, judgements)
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


def _write_metrics(stage, node, ctx, out, rows, judgements) -> dict[str, Any]:
    kept, dropped = [], {"no_json": 0, "missing_metric": 0, "out_of_scale": 0}
    for row, (text,) in zip(rows, judgements, strict=True):
        scores, reason, why = parse_metrics(text, stage.metrics)
        if scores is None:
            dropped[why] += 1
            continue
        extra = {stage.rationale: reason} if stage.rationale is not None else {}
        kept.append({**row, **scores, **extra})
    ctx.stats["dropped"] = dropped
    if kept:
        ctx.stats["mean_scores"] = {
            name: sum(r[name] for r in kept) / len(kept) for name in stage.metrics
        }
    return {"rows": write_rows(kept, out, columns=list(node.columns or {}))}
