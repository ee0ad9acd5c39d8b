"""The run report: ``runs/<recipe>/report.md`` for people and ``report.json`` for tools."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from kdlang import __version__


def write_report(run) -> Path:
    folder: Path = run.report_dir
    folder.mkdir(parents=True, exist_ok=True)
    nodes = [_node_entry(r) for r in run.results]
    evaluations = [
        {
            "name": r.name,
            "model": r.manifest.get("model"),
            "rows": r.manifest.get("rows"),
            "metrics": r.manifest.get("metrics", {}),
        }
        for r in run.results
        if r.op == "evaluate" and r.status in ("ran", "cached")
    ]
    pictures = []
    for r in run.results:
        for picture in r.manifest.get("pictures", []):
            source = Path(r.output) / picture
            if source.is_file():
                target = folder / f"{r.name}-{Path(picture).name}"
                shutil.copyfile(source, target)
                pictures.append({"node": r.name, "file": target.name})
    document = {
        "kdlang": __version__,
        "recipe": run.plan.recipe.title,
        "file": run.plan.recipe.file,
        "seed": run.plan.recipe.seed,
        "ok": run.ok,
        "nodes": nodes,
        "evaluations": evaluations,
        "during_training": _during_training(run.results),
        "pictures": pictures,
    }
    (folder / "report.json").write_text(
        json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8"
    )
    (folder / "report.md").write_text(_markdown(document), encoding="utf-8")
    return folder


def _during_training(results) -> list[dict[str, Any]]:
    """The last evaluation on dev rows (``eval_data``) of each train that ran, from its
    metrics."""
    from .train.evaluation import last_evaluation
    from .train.metrics import METRICS, read_metrics

    out = []
    for r in results:
        if r.op == "train" and r.status in ("ran", "cached") and r.output:
            last = last_evaluation(read_metrics(Path(r.output) / METRICS))
            if last:
                step = last.pop("step")
                out.append({"train": r.name, "step": step, "values": last})
    return out


def _node_entry(result) -> dict[str, Any]:
    stats = dict(result.stats or result.manifest.get("stats", {}))
    return {
        "name": result.name,
        "op": result.op,
        "status": result.status,
        "seconds": round(result.seconds, 2),
        "rows_in": stats.get("rows_in"),
        "rows_out": result.manifest.get("rows"),
        "teacher": stats.get("teacher"),
        "dropped": stats.get("dropped"),
        "stats": stats,
        "fingerprint": result.fingerprint,
        "output": result.output,
        "error": result.error,
        "note": result.note,
    }


def _markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# Run report: {doc['recipe']}",
        "",
        f"Recipe `{doc['file']}`, seed {doc['seed']}, kdlang {doc['kdlang']}.",
        "",
    ]
    if doc["evaluations"]:
        metric_names = sorted({m for e in doc["evaluations"] for m in e["metrics"]})
        lines += [
            "## Evaluation",
            "",
            "| eval | model | rows | " + " | ".join(metric_names) + " |",
            "|---|---|---|" + "---|" * len(metric_names),
        ]
        for e in doc["evaluations"]:
            values = [_fmt(e["metrics"].get(m)) for m in metric_names]
            lines.append(
                f"| {e['name']} | {e['model']} | {e['rows']} | " + " | ".join(values) + " |"
            )
        lines.append("")
    if doc.get("during_training"):
        lines += ["## Evaluation during training", "", "| train | after step | metric | value |"]
        lines.append("|---|---|---|---|")
        for e in doc["during_training"]:
            lines += [
                f"| {e['train']} | {e['step'] + 1} | {k} | {_fmt(v)} |"
                for k, v in e["values"].items()
            ]
        lines.append("")
    for picture in doc["pictures"]:
        lines += [f"![{picture['node']}]({picture['file']})", ""]
    lines += [
        "## Stages",
        "",
        "| stage | op | status | rows in | rows out | time (s) | teacher | dropped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for node in doc["nodes"]:
        teacher = node["teacher"] or {}
        teacher_text = ", ".join(f"{k} {v}" for k, v in teacher.items() if v) if teacher else ""
        # A filter's rules are named by their text, which may hold a `|` (a regex): escaped
        dropped = ", ".join(f"{k}: {v}" for k, v in (node["dropped"] or {}).items())
        dropped = dropped.replace("|", "\\|")
        why = node["error"] or node.get("note")
        status = node["status"] + (f" ({why})" if why else "")
        lines.append(
            f"| {node['name']} | {node['op']} | {status} | {_fmt(node['rows_in'])} | {_fmt(node['rows_out'])} "
            f"| {node['seconds']} | {teacher_text} | {dropped} |"
        )
    nulls = [(n, (n["stats"] or {}).get("null_cells")) for n in doc["nodes"]]
    nulls = [(n, counts) for n, counts in nulls if counts]
    if nulls:
        lines += ["", "## Missing values", ""]
        for n, counts in nulls:
            cells = ", ".join(f"`{c}` in {k} of {n['rows_in']}" for c, k in sorted(counts.items()))
            lines.append(f"- `{n['name']}`: missing or null {cells} rows")
    lines += ["", "## Outputs", ""]
    lines += [f"- `{n['name']}`: {n['output']}" for n in doc["nodes"] if n["output"]]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
