"""``label(input) { teacher = .. prompt = .. samples = n ... }``: the teacher answers each row.

Rows are sent in fixed chunks (a chunk depends only on the row indices), every finished row is
appended to the stage's progress log, and sampling is seeded per row: a run killed at any point
resumes with the rows it has not finished, and the output is byte-identical to an uninterrupted
run's. Each input row yields ``samples`` output rows (with a ``sample`` column when n > 1).
"""

from __future__ import annotations

from pathlib import Path

from kdlang.runtime.context import RunError
from kdlang.runtime.data import write_rows
from kdlang.runtime.teachers import GenerationRequest, TeacherError


def chunk_size(teacher, samples: int) -> int:
    """Rows per call: one decode batch for a white-box teacher (so a chunk is decoded the same
    way on resume), a few rounds of the server's concurrency for an API."""
    if getattr(teacher, "white_box", False):
        return max(1, getattr(teacher, "batch_size", 16) // samples)
    return max(1, getattr(teacher, "concurrency", 8) * 4)


def generate_rows(
    ctx,
    node_ir,
    rows: list[dict] | None,
    requests: list[GenerationRequest],
    log_name="progress.jsonl",
    *,
    teacher=None,
    description: str = "",
):
    """Generations for every request, resuming from and appending to the progress log
    ``log_name`` (a stage that generates in several rounds gives each round its own log).
    Returns one list of texts per request. The model is ``teacher`` (a reference) if given,
    else ``node_ir.teacher``; its usage during this call is added to ``ctx.stats["teacher"]``
    (a teacher is shared by the stages of a run, so its own counters are run totals)."""
    teacher = ctx.teacher(teacher if teacher is not None else node_ir.teacher)
    before = teacher.stats.as_dict()
    log = ctx.progress_log(log_name)
    done = log.load()
    ctx.count("resumed_rows", len(done))
    ctx.start(len(requests), description)
    ctx.advance(len(done))
    size = chunk_size(teacher, max(r.n for r in requests) if requests else 1)
    try:
        for start in range(0, len(requests), size):
            indices = [i for i in range(start, min(start + size, len(requests))) if i not in done]
            if not indices:
                continue
            chunk = [requests[i] for i in range(start, min(start + size, len(requests)))]
            if not getattr(teacher, "white_box", False):
                chunk = [requests[i] for i in indices]  # an API request stands alone
                offset = {n: i for n, i in enumerate(indices)}
            else:
                offset = {n: start + n for n in range(len(chunk))}

            def finished(position, generations, offset=offset):
                index = offset[position]
                if index in done:
                    return
                texts = [g.text for g in generations]
                done[index] = texts
                log.append(index, texts)
                ctx.advance(1)

            try:
                teacher.generate(chunk, on_result=finished)
            except TeacherError as error:  # requests that failed for good, unsupported asks
                raise RunError(f"{ctx.node.name}: {error}") from None
    finally:
        log.close()
        usage = ctx.stats.setdefault("teacher", {})
        for key, value in teacher.stats.as_dict().items():
            usage[key] = usage.get(key, 0) + value - before.get(key, 0)
    return [done[i] for i in range(len(requests))]


def row_requests(
    ctx, stage, rows: list[dict], prompt, *, system=None, n: int = 1
) -> list[GenerationRequest]:
    """One request per row: ``prompt`` (and ``system``) rendered on it, the stage's sampling
    settings, and the row's own seed."""
    return [
        GenerationRequest(
            prompt=prompt.render(**row),
            system=system.render(**row) if system is not None else None,
            n=n,
            temperature=stage.temperature,
            top_p=stage.top_p,
            max_tokens=stage.max_tokens,
            seed=ctx.row_seed(index),
            stop=tuple(stage.stop) if stage.stop else None,
        )
        for index, row in enumerate(rows)
    ]


def run(node, ctx, out: Path) -> dict:
    stage = node.node
    rows = ctx.rows(stage.input.name)
    ctx.stats["rows_in"] = len(rows)
    prompt = ctx.template(stage.prompt)
    system = ctx.template(stage.system) if stage.system is not None else None
    requests = row_requests(ctx, stage, rows, prompt, system=system, n=stage.samples)
    outputs = generate_rows(ctx, stage, rows, requests)
    result = []
    for row, texts in zip(rows, outputs, strict=True):
        for sample, text in enumerate(texts):
            labelled = {**row, stage.output: text}
            if stage.samples > 1:
                labelled["sample"] = sample
            result.append(labelled)
    return {"rows": write_rows(result, out, columns=list(node.columns) if node.columns else None)}
