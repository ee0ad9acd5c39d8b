"""``eval NAME = evaluate(model_or_train, data) { prompt = .. metric ... }``: generate, then score.

The model — a ``train``'s trained student (from its artifact) or a declared ``model`` — answers
each row's rendered prompt (or, with ``messages = COLUMN``, the row's conversation up to its
last user turn, sent as chat turns) (greedy unless ``temperature`` > 0, each row seeded by its index;
the teachers' batched decoder keeps this deterministic). Every ``metric`` expression is evaluated
by :func:`kdlang.expr.evaluate` on the row plus ``output`` (the generated text) and averaged over
the rows where it is not null (true counts 1, false 0). ``perplexity(column)`` scores the column
as the continuation of the prompt instead: exp(Σ NLL / Σ tokens) over all rows.

Output: ``predictions.jsonl`` (each row, its ``output`` and its metric values); manifest
``{"metrics": {name: value}, "model": name, "rows": n}``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kdlang.expr import evaluate
from kdlang.expr.functions import SCORED_METRICS
from kdlang.plan import PlanNode

from ..context import StageContext
from ..errors import RunError
from ..teachers import GenerationRequest, TeacherError
from .label import generate_rows

LARGE_COLUMNS = ("topk_ids", "topk_logprobs", "topk_target_ids", "topk_packed", "topk_codec")


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    ev = node.node
    rows = ctx.rows(ev.data.name)
    rows = rows[: ev.limit] if ev.limit else rows
    ctx.stats["rows_in"] = len(rows)
    model, owned = _model(ev, ctx)
    names = _names(ev.metrics)
    before = None
    try:
        if ev.messages is not None:  # the model answers each conversation's last user turn
            from ..chat import last_user_prompts

            prompts = last_user_prompts(rows, ev.messages)
        else:
            template = ctx.template(ev.prompt)
            prompts = [template.render(i, **row) for i, row in enumerate(rows)]
        outputs = _generate(ev, ctx, model, prompts)
        if not ctx.dist.is_main:  # rank 0 scores and writes the artifact
            return {}
        before = model.stats.as_dict()
        scored = {
            name: _perplexity(model, prompts, rows, metric.expr.args[0].name)
            for name, metric in zip(names, ev.metrics, strict=True)
            if _is_scored(metric)
        }
    except TeacherError as error:
        raise RunError(f"{node.name}: {error}") from None
    finally:
        if before is not None:  # the scoring's usage, after the generation's
            usage = ctx.stats.setdefault("model", {})
            for key, value in model.stats.as_dict().items():
                usage[key] = usage.get(key, 0) + value - before.get(key, 0)
        if owned:
            model.close()
    sums = dict.fromkeys(names, 0.0)
    counted = dict.fromkeys(names, 0)
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
        for row, text in zip(rows, outputs, strict=True):
            seen = {k: v for k, v in row.items() if k not in LARGE_COLUMNS}
            seen["output"] = text
            values = {}
            for name, metric in zip(names, ev.metrics, strict=True):
                if _is_scored(metric):
                    continue
                value = _number(evaluate(metric.expr, seen))
                values[name] = value
                if value is not None:
                    sums[name] += value
                    counted[name] += 1
            handle.write(json.dumps({**seen, "metrics": values}, default=str) + "\n")
    metrics = {
        name: scored[name]
        if name in scored
        else (sums[name] / counted[name] if counted[name] else None)
        for name in names
    }
    nulls = {n: len(rows) - counted[n] for n in names if n not in scored and counted[n] < len(rows)}
    if nulls:
        ctx.stats["null_values"] = nulls
    return {"metrics": metrics, "model": ev.model.name, "rows": len(rows)}


def _model(ev, ctx: StageContext):
    """``(backend, owned)``: a train's student loaded from its artifact (closed here), or the
    declared model shared with the run."""
    recipe = ctx.program.recipe
    if ev.model.name not in recipe.trains:
        return ctx.teacher(ev.model), False
    from ..teachers import load_teacher

    settings = ctx.model_settings(ctx.model(recipe.trains[ev.model.name].student))
    settings.update(path=str(ctx.artifact(ev.model.name) / "model"), revision=None)
    try:
        return load_teacher("hf", **settings), True
    except (OSError, ValueError) as error:
        raise RunError(f"cannot load the trained student of `{ev.model.name}`: {error}") from None


def _generate(ev, ctx: StageContext, model, prompts: list) -> list[str]:
    """The model's answer to every prompt, logged for resuming and split across processes by
    decoding batch (a white-box model's batches are the ones one ``generate`` call of every
    prompt decodes, so the answers do not depend on the number of processes)."""
    requests = [
        GenerationRequest(
            prompt=prompt,
            temperature=ev.temperature,
            top_k=ev.top_k,
            max_tokens=ev.max_tokens,
            seed=ctx.row_seed(index),
        )
        for index, prompt in enumerate(prompts)
    ]
    groups = model.decode_groups(requests) if hasattr(model, "decode_groups") else None
    outputs = generate_rows(
        ctx,
        ev,
        None,
        requests,
        model=model,
        chunks=groups,
        usage_key="model",
        description=f"{ctx.node.name} (evaluate)",
    )
    return [texts[0] for texts in outputs]


def _perplexity(model, prompts: list, rows: list[dict], column: str) -> float | None:
    """exp of the mean negative log-likelihood per token of ``column`` after the prompt."""
    picked = [(p, str(r.get(column))) for p, r in zip(prompts, rows, strict=True) if r.get(column)]
    if not picked:
        return None
    found = model.topk_logprobs([p for p, _ in picked], [t for _, t in picked], 1)
    tokens = sum(len(t) for t in found)
    if not tokens:
        return None
    nll = -sum(float(t.target_logprobs.double().sum()) for t in found)
    return math.exp(nll / tokens)


def _is_scored(metric) -> bool:
    return getattr(metric.expr, "func", None) in SCORED_METRICS


def _number(value) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _names(metrics) -> list[str]:
    """Metric names, made unique (``exact_match``, ``exact_match#2``)."""
    seen: dict[str, int] = {}
    names = []
    for metric in metrics:
        seen[metric.name] = seen.get(metric.name, 0) + 1
        names.append(
            metric.name if seen[metric.name] == 1 else f"{metric.name}#{seen[metric.name]}"
        )
    return names
