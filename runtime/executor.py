"""Running a plan: each node is reused from the cache or run, committed, and reported.

``run_plan`` walks the plan in order. A node whose fingerprint is in the cache is reused (unless
``force``d); otherwise its operator (``runtime/stages/<op>.py``) writes into a temporary folder
that is committed atomically. A reused export, whose output also lives outside the cache, is
put back from the cache when its folder is missing or differs (status ``restored``). ``only`` runs a node and whatever it needs. The run report
(``runs/<recipe>/report.md`` and ``report.json``) lists every node's status, rows, time,
teacher usage and where its output is.

Under a launcher (``WORLD_SIZE > 1``) every process walks the plan: rank 0 decides each node's
status and tells the others; operators without teacher or training work (``main_only`` in their
descriptor, :mod:`kdlang.ir.descriptor`)
run on rank 0 while the others wait; the others run on every rank, sharing out their teacher
calls (``stages/label.py``: chunk ``b`` goes to rank ``b % world``, each rank logging its part)
or their training steps, and rank 0 commits the artifact once every rank has finished. Only
rank 0 writes to the cache's index and the run report.

The runtime's layers, each importing only those before it: :mod:`.errors`, then
:mod:`.distributed` and :mod:`.cache` (then :mod:`.data`), then :mod:`.context` (the stages'
only door to the cache), then this module and :mod:`.report`; the operators
(:mod:`.stages`, which call :mod:`.train`, :mod:`.teachers`, :mod:`.losses`) are imported here
only when a node runs, so walking a plan of cached nodes imports no torch.
"""

from __future__ import annotations

import gc
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kdlang.plan import Plan, PlanNode, needed
from kdlang.plan.store import safe_name

from .cache import ArtifactCache
from .context import Resources, StageContext
from .distributed import Dist, from_env
from .errors import RunError

if TYPE_CHECKING:
    from .stages import Restorer, Runner


@dataclass
class NodeResult:
    name: str
    op: str
    status: str  # cached | restored | ran | skipped | failed
    fingerprint: str
    seconds: float = 0.0
    manifest: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    error: str | None = None
    note: str | None = None  # restored: where and why


@dataclass
class RunResult:
    plan: Plan
    results: list[NodeResult]
    report_dir: Path

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results)


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
    from .report import write_report
    from .stages import STAGES, restorer

    cache = ArtifactCache(plan.cache)
    selected = needed(plan, only) if only else {n.name for n in plan.nodes}
    forced = set(force or ())
    dist = _processes(device)
    shared_cache(dist, Path(plan.cache))
    resources = Resources(device=device, workdir=workdir, dist=dist)
    results: list[NodeResult] = []
    failed: set[str] = set()
    report_dir = workdir / "runs" / safe_name(plan.recipe.title)
    try:
        for node in plan.nodes:
            if node.name not in selected:
                continue
            # Rank 0 decides what happens to the node; every rank follows (one cache, one plan).
            status = dist.broadcast(_status(cache, node, failed, forced) if dist.is_main else None)
            restore = restorer(node.node) if status == "cached" else None
            if status == "skipped":
                result = NodeResult(
                    node.name, node.op, "skipped", node.fingerprint, error="an input failed"
                )
            elif status == "cached" and restore is None:
                result = NodeResult(
                    node.name,
                    node.op,
                    "cached",
                    node.fingerprint,
                    manifest=cache.manifest(node.fingerprint) or {},
                    output=str(cache.artifact(node.fingerprint)),
                )
            else:
                if node.name in forced:  # a forced node starts afresh, not from an old log
                    if dist.is_main:
                        shutil.rmtree(cache.progress_dir(node.fingerprint), ignore_errors=True)
                    dist.wait()
                try:
                    if restore is not None:  # cached, and its output also lives outside the cache
                        result = _restore(plan, node, cache, resources, restore)
                    else:
                        result = _run_node(
                            plan, node, cache, resources, progress, STAGES, node.name in forced
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
                    if dist.is_main:
                        write_report(RunResult(plan, results, report_dir))
                    raise
            results.append(result)
            if result.status in ("failed", "skipped"):
                failed.add(node.name)
            elif dist.is_main:
                _record(cache, plan, node)
            if on_node and result.status != "skipped":
                on_node(result)
    finally:
        resources.close()
    run = RunResult(plan, results, report_dir)
    if dist.is_main:
        write_report(run)
    return run


def shared_cache(dist: Dist, cache: Path) -> None:
    """Stop (every rank) unless every process sees the same cache folder: rank 0 writes a
    random token there and each rank reads it back. Processes on one machine always pass;
    several machines pass when the cache is on a filesystem they share, which the executor needs
    (rank 0 commits artifacts that the others read)."""
    if not dist.active:
        return
    import secrets

    probe = cache / f".processes-{os.getpid()}-{secrets.token_hex(4)}" if dist.is_main else None
    if probe is not None:
        cache.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        probe.write_text(token, encoding="utf-8")
    name, token = dist.broadcast((probe.name, token) if probe is not None else None)
    try:
        seen = (cache / name).read_text(encoding="utf-8")
    except OSError:
        seen = None
    views = dist.gather(seen == token)
    if probe is not None:
        probe.unlink()
    blind = [rank for rank, ok in enumerate(views) if not ok]
    if blind:
        raise RunError(
            f"the cache folder {cache} is not shared by every process (rank "
            f"{', '.join(map(str, blind))} cannot see rank 0's files): with several machines, "
            "--workdir and --cache must be on a filesystem every machine mounts at the same path"
        )


def _processes(device: str) -> Dist:
    """The run's processes: one, or the group a launcher started (``WORLD_SIZE > 1``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    return from_env(device)


def _status(cache: ArtifactCache, node: PlanNode, failed: set[str], forced: set[str]) -> str:
    if any(parent in failed for parent in node.inputs):
        return "skipped"
    if cache.is_cached(node.fingerprint) and node.name not in forced:
        return "cached"
    return "run"


def _restore(
    plan: Plan, node: PlanNode, cache: ArtifactCache, resources: Resources, restore: Restorer
) -> NodeResult:
    """A cached node whose output also lives outside the cache (an export): ``restore`` puts it
    back where it is not as the artifact records it. The node is ``cached`` when it was in
    place, ``restored`` (the note says where and why) when it was written again from the cache,
    ``failed`` when what is there may not be replaced. Rank 0 does the work; every rank returns
    its result."""
    dist = _dist(resources)
    result = None
    if dist.is_main:
        context = StageContext(plan, node, cache, resources, None)
        started = time.perf_counter()
        artifact = cache.artifact(node.fingerprint)
        try:
            note = restore(node, context, artifact)
        except RunError as failure:
            result = NodeResult(
                node.name,
                node.op,
                "failed",
                node.fingerprint,
                time.perf_counter() - started,
                error=str(failure),
            )
        else:
            result = NodeResult(
                node.name,
                node.op,
                "restored" if note else "cached",
                node.fingerprint,
                time.perf_counter() - started,
                manifest=cache.manifest(node.fingerprint) or {},
                output=str(artifact),
                note=note,
            )
    return dist.broadcast(result)


def _run_node(
    plan: Plan,
    node: PlanNode,
    cache: ArtifactCache,
    resources: Resources,
    progress: Any,
    stages: Mapping[str, Runner],
    replace: bool = False,
) -> NodeResult:
    """Run one node and commit its output. Under several processes every rank calls this: an
    operator whose descriptor says ``main_only`` (no teacher or training work to share) runs on
    rank 0 alone, the others waiting for the committed artifact; any other runs on every rank, rank 0
    commits once every rank has finished, and a failure on any rank fails the node on all.
    Every rank returns rank 0's result."""
    dist = _dist(resources)
    if not dist.active:
        return _run_here(plan, node, cache, resources, progress, stages, replace, commit=True)
    if node.node.main_only:
        result = None
        if dist.is_main:
            result = _run_here(plan, node, cache, resources, progress, stages, replace, commit=True)
        return dist.broadcast(result)
    if not dist.is_main:
        progress = None
    result = _run_here(plan, node, cache, resources, progress, stages, replace, commit=dist.gather)
    # What the stage held (a sharded student and its process-group state) goes now, not at
    # interpreter exit, where its teardown can abort the process.
    gc.collect()
    return dist.broadcast(result)


def _run_here(
    plan: Plan,
    node: PlanNode,
    cache: ArtifactCache,
    resources: Resources,
    progress: Any,
    stages: Mapping[str, Runner],
    replace: bool,
    commit: Literal[True] | Callable[[str | None], list[Any]],
) -> NodeResult:
    """Run the operator in this process. ``commit``: ``True`` to commit its output, or (several
    processes) the gather through which the ranks tell each other how they ended: rank 0
    commits only when every rank succeeded."""
    runner = stages[node.op]
    dist = _dist(resources)
    context = StageContext(plan, node, cache, resources, progress)
    started = time.perf_counter()
    error = None
    try:
        with cache.writing(node.fingerprint) as tmp:
            try:
                manifest = runner(node, context, tmp) or {}
            except RunError as failure:
                if commit is True:
                    raise
                error = str(failure)
            if commit is not True:  # every rank has finished (or failed) the operator
                errors = [e for e in commit(error) if e is not None]
                if errors:
                    raise RunError(errors[0])
            if dist.is_main:
                if dist.active:  # the stage's work was shared out
                    context.stats["processes"] = dist.world
                manifest.setdefault("op", node.op)
                manifest.setdefault("name", node.name)
                manifest.setdefault("schema", node.columns)
                manifest["stats"] = context.stats
                cache.commit(tmp, node.fingerprint, manifest, replace=replace)
                # The artifact is complete: the progress that led to it is no longer needed.
                shutil.rmtree(cache.progress_dir(node.fingerprint), ignore_errors=True)
    except RunError as failure:
        return NodeResult(
            node.name,
            node.op,
            "failed",
            node.fingerprint,
            time.perf_counter() - started,
            stats=context.stats,
            error=str(failure),
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


def _dist(resources: Resources) -> Dist:
    assert resources.dist is not None  # set by run_plan before any node
    return resources.dist
