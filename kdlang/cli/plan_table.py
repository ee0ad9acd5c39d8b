"""The rich table of ``kdlang plan``."""

from __future__ import annotations

import sys

from rich.table import Table

from kdlang.cli.common import console
from kdlang.plan import Plan


def human_bytes(count: int | None) -> str:
    if count is None:
        return ""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def human_count(count: int | None, upper: bool = False) -> str:
    if count is None:
        return "?"
    text = f"{count:,}"
    return f"<= {text}" if upper else text


def estimate_text(node) -> str:
    e = node.estimate
    parts = []
    if e.teacher_calls is not None:
        parts.append(f"{e.teacher_calls:,} teacher calls")
    if e.generations is not None:
        parts.append(f"{e.generations:,} generations")
    if e.generated_tokens_max is not None:
        parts.append(f"<= {e.generated_tokens_max:,} new tokens")
    if e.logit_storage_bytes is not None:
        parts.append(f"<= {human_bytes(e.logit_storage_bytes)} top-k logits")
    if e.train_steps is not None:
        parts.append(f"{e.train_steps:,} steps, <= {e.train_tokens_max:,} tokens")
    if e.logits_bytes is not None:
        parts.append(f"logits {human_bytes(e.logits_bytes)}/micro-batch")
    if e.loss_path:
        parts.append(f"loss path: {e.loss_path} ({e.loss_path_reason})")
    return "; ".join(parts)


def print_plan(plan: Plan, lock: dict | None = None) -> None:
    table = Table(
        title=f"plan of {plan.recipe.title} ({plan.recipe.file}), cache {plan.cache}",
        show_lines=False,
    )
    for column in ("#", "node", "op", "inputs", "status", "reason", "rows", "estimates"):
        table.add_column(column, overflow="fold")
    locked = (lock or {}).get("nodes", {})
    for position, node in enumerate(plan.nodes, 1):
        status = "[green]cached[/]" if node.status == "cached" else "[yellow]will run[/]"
        reason = node.reason
        if lock is not None:
            previous = locked.get(node.name, {}).get("fingerprint")
            if previous != node.fingerprint:
                reason = (reason + "; " if reason else "") + (
                    "new since lock" if previous is None else "changed since lock"
                )
        table.add_row(
            str(position),
            node.name,
            node.op,
            ", ".join(node.inputs),
            status,
            reason,
            human_count(node.estimate.rows, node.estimate.rows_upper_bound),
            estimate_text(node),
        )
    console(width=None if sys.stdout.isatty() else 200).print(table)
