"""Running a plan: each node is reused from the cache or run, committed, and reported.

``run_plan`` walks the plan in order. A node whose fingerprint is in the cache is reused (unless
``force``d); otherwise its operator (``runtime/stages/<op>.py``) writes into a temporary folder
that is committed atomically. ``only`` runs a node and whatever it needs. The run report
(``runs/<recipe>/report.md`` and ``report.json``) lists every node's status, rows, time,
teacher usage and where its output is.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlang.runtime.cache import ArtifactCache
from kdlang.runtime.context import Resources, RunError, StageContext

from kdlang.plan import Plan, PlanNode


@dataclass
class NodeResult:
    name: str
    op: str
    status: str  # cached | ran | skipped | failed
    fingerprint: str
    seconds: float = 0.0
    manifest: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    error: str | None = None


@dataclass
class RunResult:
    plan: Plan
    results: list[NodeResult]
    report_dir: Path

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results)


def needed(plan: Plan, only: list[str]) -> set[str]:
    """The named nodes and every node they depend on."""
    wanted: set[str] = set()
    by_name = {n.name: n for n in plan.nodes}
    stack = list(only)
    while stack:
        name = stack.pop()
        if name in wanted or name not in by_name:
            continue
        wanted.add(name)
        stack.extend(by_name[name].inputs)
    return wanted


def run_plan(
    plan: Plan,
    *,
    workdir: Path,
    only: list[str] | None = None,
    force: list[str] | None = None,
    device: str = "auto",
    progress=None,
    on_node=None,
) -> RunResult:
    from kdlang.runtime.report import write_report
    from kdlang.runtime.stages import STAGES

    cache = ArtifactCache(plan.cache)
    selected = needed(plan, only) if only else {n.name for n in plan.nodes}
    forced = set(force or ())
    resources = Resources(device=device, workdir=workdir)
    results: list[NodeResult] = []
    failed: set[str] = set()
    report_dir = workdir / "runs" / _safe(plan.recipe.title)
    try:
        for node in plan.nodes:
            if node.name not in selected:
                continue
            if any(parent in failed for parent in node.inputs):
                results.append(
                    NodeResult(
                        node.name, node.op, "skipped", node.fingerprint, error="an input failed"
                    )
                )
                failed.add(node.name)
                continue
            if cache.is_cached(node.fingerprint) and node.name not in forced:
                results.append(
                    NodeResult(
                        node.name,
                        node.op,
                        "cached",
                        node.fingerprint,
                        manifest=cache.manifest(node.fingerprint) or {},
                        output=str(cache.artifact(node.fingerprint)),
                    )
                )
                _record(cache, plan, node)
                if on_node:
                    on_node(results[-1])
                continue
            if node.name in forced:  # a forced node starts afresh, not from an old log
                shutil.rmtree(cache.progress_dir(node.fingerprint), ignore_errors=True)
            try:
                result = _run_node(
                    plan, node, cache, resources, progress, STAGES, replace=node.name in forced
                )
            except Exception as error:  # a bug: still report what ran, then let it surface
                results.append(
                    NodeResult(
                        node.name,
                        node.op,
                        "failed",
                        node.fingerprint,
                        error=f"internal error: {type(error).__name__}: {error}",
                    )
                )
                write_report(RunResult(plan, results, report_dir))
                raise
            results.append(result)
            if result.status == "failed":
                failed.add(node.name)
            else:
                _record(cache, plan, node)
            if on_node:
                on_node(result)
    finally:
        resources.close()
    run = RunResult(plan, results, report_dir)
    write_report(run)
    return run


def _run_node(
    plan, node: PlanNode, cache: ArtifactCache, resources, progress, stages, replace=False
) -> NodeResult:
    runner = stages[node.op]
    context = StageContext(plan, node, cache, resources, progress)
    started = time.perf_counter()
    try:
        with cache.writing(node.fingerprint) as tmp:
            manifest = runner(node, context, tmp) or {}
            manifest.setdefault("op", node.op)
            manifest.setdefault("name", node.name)
            manifest.setdefault("schema", node.columns)
            manifest["stats"] = context.stats
            cache.commit(tmp, node.fingerprint, manifest, replace=replace)
        # The artifact is complete: the progress that led to it is no longer needed.
        shutil.rmtree(cache.progress_dir(node.fingerprint), ignore_errors=True)
    except RunError as error:
        return NodeResult(
            node.name,
            node.op,
            "failed",
            node.fingerprint,
            time.perf_counter() - started,
            stats=context.stats,
            error=str(error),
        )
    committed = cache.manifest(node.fingerprint) or {}
    return NodeResult(
        node.name,
        node.op,
        "ran",
        node.fingerprint,
        time.perf_counter() - started,
        manifest=committed,
        stats=context.stats,
        output=str(cache.artifact(node.fingerprint)),
    )


def _record(cache: ArtifactCache, plan: Plan, node: PlanNode) -> None:
    cache.record(
        plan.recipe.title,
        node.name,
        {"fingerprint": node.fingerprint, "components": node.components},
    )


def _safe(title: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in title).strip("-") or "recipe"
