"""The training engine end to end: ``kdlang run`` of the train-step shape against the plain
PyTorch peers measured in the same run, and kdlang's step timed alone.

    python benchmarks/train_e2e.py [--steps 12] [--peers .peers] [--out DIR]
                                   [--variants eager,compiled] [--step-bodies both]
                                   [--peer-scripts anchors_train_plus.py,anchors_train.py]
                                   [--small --device cpu]

The shape (``benchmarks/train_step.py``'s): a random-init Llama-3.2-1B-like student with fp32
master weights, a random-init Llama-3.2-3B-like teacher online in bf16, vocabulary 128,256,
4 rows x 2048 tokens a step, ``loss sft weight 0.2`` + ``loss forward_kl weight 1.0 temperature
2.0``, one GPU. Rows of the table:

- **peers**, the scripts a user would write instead, run as they are from ``--peers`` (copies of
  the peers' scripts): ``anchors_train_plus.py`` (torch.compile of both bodies + compiled KL on
  materialized logits; Liger's Llama kernels + fused_linear_jsd, eager and compiled bodies) and
  ``anchors_train.py`` (materialized logits with eager or compiled KL; Liger fused_linear_jsd;
  weaker than the first, so only with ``--peer-scripts``). Their tokens/s are the step's B x L
  tokens over its time, as they print them; a script stopped at ``--peer-timeout`` keeps the
  rows it printed.
- **kdlang step alone**: ``train_step.py --checkpointing off --bodies both``: the training
  loop's own step code on the fused-linear path, eager and with compiled decoder layers.
- **kdlang run**: ``kdlang run`` of a recipe on the same models (built offline as
  ``multi_gpu.py`` builds them, every row exactly 2048 tokens), one process, one per
  ``--variants`` entry: ``eager`` (``compile = false``) and ``compiled`` (``compile = true``).
  Tokens/s: B x L over the median step time after 2 warm-up steps (timings.jsonl), so that they
  compare with the peers'; the target tokens/s (what the loss learns from) beside it.

The table ends with kdlang run's best against the best peer, and against the step alone (the
loop's overhead). Results go to ``--out`` as ``train_e2e_<gpu>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from multi_gpu_assets import build_assets
from multi_gpu_launch import failure, finish, kdlang, python_env, read_run, start
from multi_gpu_runs import WARMUP, recipe_text
from source_tree import ROOT

VARIANTS = {"eager": "compile = false", "compiled": "compile = true"}
"""The settings each ``kdlang run`` variant adds to the train."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps of a run")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--peers", type=Path, default=ROOT / ".peers")
    parser.add_argument("--variants", default="eager,compiled")
    parser.add_argument(
        "--peer-scripts",
        default="anchors_train_plus.py",
        help="comma-separated peer scripts (anchors_train.py is the weaker set)",
    )
    parser.add_argument("--peer-timeout", type=float, default=420, help="seconds per peer script")
    parser.add_argument(
        "--step-bodies",
        choices=("eager", "compiled", "both", "none"),
        default="both",
        help="bodies of the step timed alone (none: not timed)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--small", action="store_true", help="tiny models, 128 tokens a row")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    args = parser.parse_args()
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    if args.small:
        args.seq = min(args.seq, 128)
    return args


def json_lines(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def run_peers(args, env) -> list[dict]:
    """Each peer script's rows (``name``, ``tokens/s``, ``peak_GiB`` or ``error``)."""
    rows = []
    for script in [s for s in args.peer_scripts.split(",") if s]:
        path = args.peers / script
        if not path.is_file():
            rows.append({"path": f"peer {script}", "error": f"not found in {args.peers}"})
            continue
        began = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, str(path)], env={**env, "OUT": ""}, capture_output=True,
                text=True, timeout=args.peer_timeout,
            )  # fmt: skip
            stdout, returncode, stderr = done.stdout, done.returncode, done.stderr
        except subprocess.TimeoutExpired as late:  # what it measured before the limit stays
            stdout = late.stdout.decode() if isinstance(late.stdout, bytes) else late.stdout or ""
            returncode, stderr = None, f"stopped after {args.peer_timeout:.0f} s"
        found = [r for r in json_lines(stdout) if "tokens/s" in r or "error" in r]
        for row in found:
            rows.append(
                {
                    "path": f"peer: {row['name']}",
                    "source": script,
                    "tokens_per_s": row.get("tokens/s"),
                    "step_ms": row.get("ms"),
                    "peak_gib": row.get("peak_GiB"),
                    **({"error": row["error"]} if "error" in row else {}),
                }
            )
        if returncode != 0:
            tail = (stderr or stdout).strip().splitlines()[-1:] or [""]
            rows.append({"path": f"peer {script}", "error": f"exit {returncode}: {tail[0]}"})
        print(f"  {script}: {len(found)} rows ({time.monotonic() - began:.0f} s)", flush=True)
    return rows


def run_step_alone(args, env) -> list[dict]:
    """``train_step.py``'s train-step rows on the fused-linear path, eager and compiled bodies."""
    out = Path(tempfile.mkdtemp(prefix="kdlang-step-"))
    command = [
        sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--checkpointing", "off",
        "--bodies", args.step_bodies, "--paths", "fused_linear", "--no-heads",
        "--batch", str(args.batch), "--seq", str(args.seq), "--out", str(out),
    ]  # fmt: skip
    command += ["--small"] if args.small else []
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
    rows = []
    for row in json_lines(done.stdout):
        if row.get("case", "").startswith("train step") and row.get("path") == "fused_linear":
            rows.append(
                {
                    "path": f"kdlang step alone, {row['case'].split('(')[1].rstrip(')')}",
                    "tokens_per_s": row.get("tokens_per_s"),
                    "step_ms": row["seconds"] * 1e3 if "seconds" in row else None,
                    "peak_gib": row.get("peak_gib"),
                    "first_step_s": row.get("first_step_seconds"),
                    **({"error": row["error"]} if "error" in row else {}),
                }
            )
    if done.returncode != 0:
        rows.append({"path": "kdlang step alone", "error": done.stderr.strip()[-300:]})
    shutil.rmtree(out, ignore_errors=True)
    return rows


def run_kdlang(args, env, work: Path, variant: str) -> dict:
    row = {"path": f"kdlang run, {variant} bodies", "settings": VARIANTS[variant]}
    recipe = work / "recipes" / f"{variant}.kd"
    recipe.parent.mkdir(exist_ok=True)
    text = recipe_text(
        f"train-e2e-{variant}", strategy="ddp", batch=args.batch, grad_accum=1,
        steps=args.steps, every=args.steps, seq=args.seq,
    )  # fmt: skip
    recipe.write_text(text.replace("  loss sft", f"  {VARIANTS[variant]}\n  loss sft"), "utf-8")
    checked = kdlang(env, work, "check", str(recipe))
    if checked.returncode != 0:
        row["error"] = (checked.stdout + checked.stderr).strip().splitlines()[0]
        return row
    workdir = work / "workdirs" / variant
    began = time.monotonic()
    process = start(env, recipe, workdir, 1, args.device, "run")
    status = finish(process, args.timeout)
    row["wall_s"] = round(time.monotonic() - began, 1)
    try:
        records, node = read_run(workdir)
    except (OSError, ValueError, KeyError, RuntimeError):
        row["error"] = failure(workdir, "run", status, args.timeout)[0]
        return row
    timed = records[WARMUP:] if len(records) > WARMUP else records
    seconds = statistics.median(r["seconds"] for r in timed)
    row.update(
        step_ms=seconds * 1e3,
        tokens_per_s=args.batch * args.seq / seconds,
        target_tokens_per_s=statistics.median(r["tokens"] / r["seconds"] for r in timed),
        peak_gib=max((r.get("gpu_memory_gib") or 0.0) for r in records) or None,
        first_step_s=records[0]["seconds"] if records else None,
        loss_path=node["stats"].get("loss_path", {}).get("path"),
    )
    return row


def table(document: dict) -> str:
    lines = [
        f"Device: {document['device']}; torch {document['torch']}. Batch {document['batch']} x "
        f"{document['seq']} tokens, forward KL T = 2 (+ sft 0.2 in kdlang's recipe); tokens/s = "
        "B x L over the median step.",
        "",
        "| path | tokens/s | step (ms) | peak GiB | first step (s) |",
        "|---|---|---|---|---|",
    ]

    def number(value, spec):
        return format(value, spec) if isinstance(value, int | float) else ""

    for row in document["rows"]:
        if "error" in row:
            lines.append(f"| {row['path']} | {row['error'][:160]} | | | |")
            continue
        lines.append(
            f"| {row['path']} | {number(row.get('tokens_per_s'), ',.0f')} | "
            f"{number(row.get('step_ms'), '.1f')} | {number(row.get('peak_gib'), '.2f')} | "
            f"{number(row.get('first_step_s'), '.1f')} |"
        )
    best = document.get("summary", {})
    if best:
        lines += ["", *(f"- {line}" for line in best.values())]
    return "\n".join(lines) + "\n"


def summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if "error" not in r and r.get("tokens_per_s")]
    peers = [r for r in ok if r["path"].startswith("peer")]
    runs = [r for r in ok if r["path"].startswith("kdlang run")]
    alone = [r for r in ok if r["path"].startswith("kdlang step alone")]
    found = {}
    if peers and runs:
        peer, run = (
            max(peers, key=lambda r: r["tokens_per_s"]),
            max(runs, key=lambda r: r["tokens_per_s"]),
        )
        found["vs_peer"] = (
            f"best kdlang run ({run['path']}) {run['tokens_per_s']:,.0f} tokens/s at "
            f"{run.get('peak_gib') or float('nan'):.2f} GiB = "
            f"{run['tokens_per_s'] / peer['tokens_per_s']:.2f}x the best peer ({peer['path']}, "
            f"{peer['tokens_per_s']:,.0f} at {peer.get('peak_gib') or float('nan'):.2f} GiB)"
        )
    for run in runs:
        same = [a for a in alone if a["path"].split(", ")[-1] == run["path"].split(", ")[-1]]
        if same:
            found[f"loop_{run['path']}"] = (
                f"{run['path']}: {run['tokens_per_s'] / same[0]['tokens_per_s']:.3f}x the same "
                "step timed alone"
            )
    return found


def main() -> None:
    args = parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here (--device cpu --small runs on the CPU)")
    work = Path(tempfile.mkdtemp(prefix="kdlang-train-e2e-"))
    try:
        env, source = python_env(work, args.device)
        spec = {"work": str(work), "seq": args.seq, "small": args.small, "device": args.device}
        spec |= {"seed": 0, "rows": args.batch * args.steps}
        builder = multiprocessing.get_context("spawn").Process(target=build_assets, args=(spec,))
        builder.start()
        builder.join()
        if builder.exitcode != 0:
            sys.exit(f"building the models and data failed (exit status {builder.exitcode})")
        assets = json.loads((work / "assets.json").read_text(encoding="utf-8"))
        rows = []
        for variant in args.variants:
            rows.append(run_kdlang(args, env, work, variant))
            done = rows[-1]
            said = done.get("error") or (
                f"{done['tokens_per_s']:,.0f} tokens/s, {done['step_ms']:.1f} ms a step, "
                f"peak {done.get('peak_gib') or float('nan'):.2f} GiB"
            )
            print(f"  kdlang run {variant}: {said}", flush=True)  # kept if the peers run late
        if args.step_bodies != "none":
            rows += run_step_alone(args, env)
            print("  step alone: done", flush=True)
        if args.device == "cuda":
            rows += run_peers(args, env)
        document = {
            "device": assets["device_name"],
            "torch": torch.__version__,
            "python": platform.python_version(),
            "kdlang_runtime": source,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "batch": args.batch,
            "seq": args.seq,
            "steps": args.steps,
            "small": args.small,
            "student": assets["student"],
            "teacher": assets["teacher"],
            "rows": rows,
        }
        document["summary"] = summary(rows)
        text = table(document)
        print("\n" + text, flush=True)
        words = assets["device_name"].split() or ["gpu"]
        slug = "cpu" if args.device == "cpu" else words[min(1, len(words) - 1)].lower()
        slug += "_small" if args.small else ""
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"train_e2e_{slug}.json").write_text(json.dumps(document, indent=1) + "\n")
        (args.out / f"train_e2e_{slug}.md").write_text(text, encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
