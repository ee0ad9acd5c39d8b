"""``kdlang cache ls|gc``: inspect and clean the artifact cache.

``ls`` lists every committed artifact (fingerprint, op, name, rows, size, age, and the recipes
whose last run used it), then the resumable progress and temporary leftovers. ``gc FILE...``
removes every artifact and progress folder that the current plans of the given recipes do not
use, plus temporary leftovers; ``gc --all`` empties the cache. Both print what they freed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer

from kdlang.cli.common import (
    EXIT_ERRORS,
    Command,
    Group,
    check_format,
    color_option,
    print_diagnostics,
    set_color,
    usage_error,
)

app = typer.Typer(
    name="cache",
    help="Inspect (ls) and clean (gc) the artifact cache.",
    no_args_is_help=True,
    add_completion=False,
    cls=Group,
)

CACHE_HELP = "The cache folder."


@app.command("ls", cls=Command)
def ls(
    cache: str = typer.Option(".kdcache", "--cache", metavar="DIR", help=CACHE_HELP),
    fmt: str = typer.Option("table", "--format", metavar="FORMAT", help="table or json."),
    color: str = color_option(),
) -> None:
    """List the cached artifacts: op, name, rows, size and age."""
    from kdlang.runtime.cache import ArtifactCache, disk_bytes

    check_format(fmt, ("table", "json"))
    set_color(color)
    store = ArtifactCache(cache)
    users = _recipes_by_fingerprint(store.root)
    entries = [
        {
            "fingerprint": m["fingerprint"],
            "op": m.get("op"),
            "name": m.get("name"),
            "rows": m.get("rows"),
            "bytes": m["bytes"],
            "created": m.get("created"),
            "age_seconds": _age(m.get("created")),
            "recipes": sorted(users.get(m["fingerprint"], ())),
        }
        for m in store.entries()
    ]
    entries.sort(key=lambda e: (e["age_seconds"] is None, e["age_seconds"] or 0))
    pending = {
        sub: [(p.name, disk_bytes(p)) for p in sorted((store.root / sub).iterdir())]
        if (store.root / sub).is_dir()
        else []
        for sub in ("progress", "tmp")
    }
    if fmt == "json":
        document = {
            "cache": str(store.root),
            "artifacts": entries,
            "progress": [{"fingerprint": n, "bytes": b} for n, b in pending["progress"]],
            "tmp": [{"folder": n, "bytes": b} for n, b in pending["tmp"]],
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    _print_table(store.root, entries, pending)


@app.command("gc", cls=Command)
def gc(
    files: list[str] = typer.Argument(
        None, metavar="FILE", help="Recipes whose current plans stay cached.", show_default=False
    ),
    remove_all: bool = typer.Option(False, "--all", help="Remove everything in the cache."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only print what would be removed."),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        metavar="PATH=VALUE",
        help="Override a setting: PATH=VALUE; repeatable.",
        show_default=False,
    ),
    cache: str = typer.Option(".kdcache", "--cache", metavar="DIR", help=CACHE_HELP),
    color: str = color_option(),
) -> None:
    """Remove what the current plans of FILE... do not use (or everything with --all), and
    temporary leftovers of interrupted runs."""
    from kdlang.runtime.cache import ArtifactCache

    set_color(color)

    if remove_all == bool(files):
        usage_error("give the recipes whose outputs to keep, or --all (not both)")
    from kdlang.plan.lock import CacheBusy, cache_lock

    keep = None if remove_all else _planned_fingerprints(files, overrides, cache)
    store = ArtifactCache(cache)
    try:
        if not Path(cache).is_dir():
            removed = []  # nothing to clean, and no folder to make for a lock
        else:
            with cache_lock(cache):  # never while a run writes it
                removed = store.gc(keep, dry_run=dry_run)
    except CacheBusy as busy:
        sys.stderr.write(f"error: {busy}; gc would remove what that run is writing\n")
        raise SystemExit(1) from None
    verb = "would remove" if dry_run else "removed"
    for entry in removed:
        what = " ".join(x for x in (entry["op"], entry["name"]) if x)
        sys.stdout.write(
            f"{verb} {entry['kind']:<8} {entry['fingerprint'][:12]:<12} "
            f"{human_bytes(entry['bytes']):>9}  {what}\n"
        )
    freed = sum(entry["bytes"] for entry in removed)
    kept = ""
    if keep is not None:
        count = sum(store.is_cached(fingerprint) for fingerprint in keep)
        kept = f"; {count} artifact{'s' * (count != 1)} kept"
    sys.stdout.write(
        f"{'would free' if dry_run else 'freed'} {human_bytes(freed)} "
        f"in {len(removed)} folder{'s' * (len(removed) != 1)}{kept}\n"
    )


def _planned_fingerprints(files: list[str], overrides: list[str], cache: str) -> set[str]:
    from kdlang.check import check_files, load_checked
    from kdlang.cli.common import read_source
    from kdlang.plan import build_plan
    from kdlang.syntax.diagnostics import DiagnosticError

    keep: set[str] = set()
    for file in files:
        read_source(file)
        try:
            program, _ = load_checked(file, overrides)
        except DiagnosticError:
            # Without a valid plan nothing can be told apart: remove nothing.
            diagnostics, sources = check_files([file], overrides)
            print_diagnostics(diagnostics, sources, "text")
            raise typer.Exit(EXIT_ERRORS) from None
        keep |= {node.fingerprint for node in build_plan(program, cache).nodes}
    return keep


def _recipes_by_fingerprint(root: Path) -> dict[str, set[str]]:
    """Fingerprint -> recipes whose index records it as a node's last output."""
    users: dict[str, set[str]] = {}
    folder = root / "index"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        for entry in index.values():
            if isinstance(entry, dict) and "fingerprint" in entry:
                users.setdefault(entry["fingerprint"], set()).add(path.stem)
    return users


def _age(created: str | None) -> float | None:
    import calendar

    if not created:
        return None
    try:
        stamp = calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None
    return max(0.0, time.time() - stamp)


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover


def _print_table(root: Path, entries: list[dict], pending: dict) -> None:
    from rich.table import Table

    from kdlang.cli.common import console as make_console

    console = make_console()
    table = Table(title=f"cache {root}: {len(entries)} artifacts")
    for column in ("fingerprint", "op", "name", "rows", "size", "age", "recipes"):
        table.add_column(column, justify="right" if column in ("rows", "size", "age") else "left")
    for e in entries:
        table.add_row(
            e["fingerprint"][:12],
            e["op"] or "",
            e["name"] or "",
            "" if e["rows"] is None else str(e["rows"]),
            human_bytes(e["bytes"]),
            human_age(e["age_seconds"]),
            ", ".join(e["recipes"]),
        )
    console.print(table)
    total = sum(e["bytes"] for e in entries)
    lines = [f"artifacts: {human_bytes(total)}"]
    for sub, what in (("progress", "resumable progress"), ("tmp", "temporary leftovers")):
        if pending[sub]:
            size = sum(b for _, b in pending[sub])
            lines.append(f"{what}: {len(pending[sub])} folders, {human_bytes(size)}")
    console.print("; ".join(lines))
