"""What ``kdlang run`` shows: a progress bar per stage, a line per finished node, the summary.

Everything goes to stderr except the evaluation table (stdout) in text form; with
``--format json`` stdout holds the report's JSON document alone (what the run's code prints
to stdout meanwhile is sent to stderr)."""

from __future__ import annotations

import contextlib
import json
import sys

from rich.console import Console
from rich.markup import escape
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


def run_with_progress(
    plan,
    root,
    only,
    force,
    device,
    *,
    fmt: str = "text",
    quiet: bool = False,
    verbose: bool = False,
):
    from kdlang.cli.common import console as make_console
    from kdlang.runtime.executor import run_plan

    _quiet_libraries()

    console = make_console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=quiet or not sys.stderr.isatty(),
    )

    def on_node(result):
        rows = result.manifest.get("rows")
        extra = f", {rows} rows" if rows is not None else ""
        if result.status == "failed":
            # the error is text, not markup: `pip install "kdlang[trackers]"` keeps its brackets
            console.print(
                f"[red]failed[/] {result.name} ({result.op}): {escape(result.error or '')}"
            )
        elif not quiet:
            note = f": {escape(result.note)}" if result.note else ""
            console.print(
                f"[green]{result.status:>6}[/] {result.name} ({result.op}{extra}, "
                f"{result.seconds:.1f}s){note}"
            )
        if verbose:
            console.print(
                f"         fingerprint {result.fingerprint}", highlight=False, soft_wrap=True
            )
            if result.output:
                console.print(f"         output {result.output}", highlight=False, soft_wrap=True)

    # In JSON form, stdout is the document's alone: what the stages print goes to stderr.
    to_stderr = (
        contextlib.redirect_stdout(sys.stderr) if fmt == "json" else contextlib.nullcontext()
    )
    with to_stderr, progress:
        result = run_plan(
            plan,
            workdir=root,
            only=only or None,
            force=force,
            device=device,
            progress=progress,
            on_node=on_node,
        )
    if fmt == "json":
        document = json.loads((result.report_dir / "report.json").read_text(encoding="utf-8"))
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        console.print(f"report: {result.report_dir / 'report.md'}", highlight=False, soft_wrap=True)
        return result
    _summary(console, result, quiet)
    return result


def _summary(console: Console, result, quiet: bool = False) -> None:
    evaluations = [
        r for r in result.results if r.op == "evaluate" and r.status in ("ran", "cached")
    ]
    if evaluations and not quiet:
        from rich.table import Table

        from kdlang.cli.common import console as make_console

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
        make_console().print(table)
    console.print(f"report: {result.report_dir / 'report.md'}", highlight=False, soft_wrap=True)


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
