"""What ``kdlang run`` shows: a progress bar per stage, a line per finished node, the summary."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second, once there is a rate to show."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f}/s" if speed else "", style="progress.data.speed")


def run_with_progress(plan, root, only, force, device):
    from kdlang.runtime.executor import run_plan

    _quiet_libraries()

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not sys.stderr.isatty(),
    )

    def on_node(result):
        rows = result.manifest.get("rows")
        extra = f", {rows} rows" if rows is not None else ""
        if result.status == "failed":
            console.print(f"[red]failed[/] {result.name} ({result.op}): {result.error}")
        else:
            note = f": {result.note}" if result.note else ""
            console.print(
                f"[green]{result.status:>6}[/] {result.name} ({result.op}{extra}, "
                f"{result.seconds:.1f}s){note}"
            )

    with progress:
        result = run_plan(
            plan,
            workdir=root,
            only=only or None,
            force=force,
            device=device,
            progress=progress,
            on_node=on_node,
        )
    _summary(console, result)
    return result


def _summary(console: Console, result) -> None:
    evaluations = [
        r for r in result.results if r.op == "evaluate" and r.status in ("ran", "cached")
    ]
    if evaluations:
        from rich.table import Table

        names = sorted({m for r in evaluations for m in r.manifest.get("metrics", {})})
        table = Table(title="evaluation")
        for column in ("eval", "model", "rows", *names):
            table.add_column(column)
        for r in evaluations:
            metrics = r.manifest.get("metrics", {})
            table.add_row(
                r.name,
                str(r.manifest.get("model", "")),
                str(r.manifest.get("rows", "")),
                *[
                    f"{metrics[m]:.4f}"
                    if isinstance(metrics.get(m), float)
                    else str(metrics.get(m, ""))
                    for m in names
                ],
            )
        Console().print(table)
    console.print(f"report: {result.report_dir / 'report.md'}")


def _quiet_libraries() -> None:
    """Library progress bars would interleave with ours; their warnings still show."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        from datasets.utils import logging as ds_logging

        ds_logging.disable_progress_bar()
    except ImportError:
        pass
