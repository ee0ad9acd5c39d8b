"""Distributed training on one machine, end to end through ``kdlang run``: throughput, scaling
and memory of ``ddp`` and ``fsdp``, and a run killed under N processes resumed under one.

    python benchmarks/multi_gpu.py [--gpus N] [--steps S] [--batch-per-gpu B] [--seq L]
                                   [--out DIR] [--small] [--device cuda|cpu] [--keep]
                                   [--timeout SECONDS] [--gradient-checkpointing]

Everything is built offline in a work folder (a temporary one; ``--keep`` keeps it): a
word-level tokenizer of 128,256 entries shared by a random-init Llama-3.2-1B-like student
(hidden 2048, 16 layers, 32/8 heads, MLP 8192, tied embeddings) and a random-init
Llama-3.2-3B-like teacher (hidden 3072, 28 layers, 24/8 heads, MLP 8192), both saved in bf16
(the loop trains fp32 master weights of the student; the teacher runs online in bf16), and a
JSONL dataset whose every row tokenizes to exactly L tokens: 64 prompt words, then target
words and the EOS. ``--small`` shrinks the models as ``train_step.py --small`` does (hidden/16,
2 layers, vocabulary/16) and L to 128.

Each run is ``kdlang run RECIPE --launcher torchrun --nproc N --device D --workdir W`` (plain
``kdlang run`` for one process) in its own work folder, with ``loss sft weight 0.2`` and
``loss forward_kl weight 1.0 temperature 2.0``, B rows per process and micro-batch:

- ``ddp`` on 1 process (global batch B), ``ddp`` and ``fsdp`` on N (global batch N·B): tokens/s
  (the target tokens of a step over its time, median after 2 warm-up steps), per GPU, scaling
  efficiency (per-GPU tokens/s at N over tokens/s at 1), and rank 0's peak GPU memory;
- resume: one recipe (``fsdp``, global batch N·B, ``grad_accum = N``, ``checkpoint_every = k``,
  ``max_steps = 2k``) runs uninterrupted on N processes; in another folder it runs on N
  processes until checkpoint k is committed, is SIGKILLed (every process), and ``kdlang run``
  resumes it in one process, which then holds the whole global batch in N micro-batches of B
  rows (what a rank of the ``ddp`` runs holds). Steps k..2k-1 are compared with the
  uninterrupted run (max |Δloss|, max relative Δgrad_norm) and every step must be recorded once.

Defaults: every visible GPU (2 processes on CPU), 10 steps, B = 4, L = 2048, 30 minutes at most
per run (``--timeout``). With N = 1 only the 1-process rows and a 1 → 1 resume run.
``--small --device cpu`` runs the same on a CPU (Gloo, one thread per process). A failed run's
error goes in the table (the end of its output below it) and the others go on. Results go to
``--out`` as ``multi_gpu_<gpu>_x<N>[_small].json`` (with each step's loss, gradient norm, time
and memory) and ``.md``.

The ``kdlang`` run is the one importable from outside this checkout when it is this checkout's
(an editable install); otherwise a folder of links mirroring the install mapping
(``runtime/`` → ``kdlang.runtime``, ``grammar/`` → ``kdlang.grammar``) is put first on the
``PYTHONPATH`` every process inherits.

This file is the command; its parts sit next to it: ``multi_gpu_assets.py`` builds the models,
tokenizer and data, ``multi_gpu_launch.py`` starts ``kdlang`` and reads what a run left,
``multi_gpu_runs.py`` holds the recipe and the measured runs, ``multi_gpu_report.py`` the table.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from multi_gpu_assets import build_assets
from multi_gpu_launch import python_env
from multi_gpu_report import table
from multi_gpu_runs import STEP_KEYS, WARMUP, Bench
from source_tree import ROOT


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=None, help="N (default: every GPU; 2 on CPU)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps of a run")
    parser.add_argument("--batch-per-gpu", type=int, default=4, help="rows per process")
    parser.add_argument("--seq", type=int, default=2048, help="tokens per row")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--small", action="store_true", help="tiny models, 128 tokens per row")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="every run's train recomputes the student's layers in backward (outputs *_checkpointing)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    args = parser.parse_args()
    if args.small:
        args.seq = min(args.seq, 128)
    if args.seq < 2 * 8 or args.steps < 1 or args.batch_per_gpu < 1:
        parser.error("--seq must be at least 16, --steps and --batch-per-gpu at least 1")
    return args


def main() -> None:
    args = parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here (--device cpu runs on the CPU)")
    visible = torch.cuda.device_count() if args.device == "cuda" else None
    args.gpus = args.gpus or (visible if args.device == "cuda" else 2)
    if visible is not None and args.gpus > visible:
        sys.exit(f"--gpus {args.gpus}: only {visible} GPUs are visible")
    n, b = args.gpus, args.batch_per_gpu
    work = Path(tempfile.mkdtemp(prefix="kdlang-multi-gpu-"))
    print(f"work folder: {work}", flush=True)
    try:
        env, source = python_env(work, args.device)
        k = max(2, math.ceil(args.steps / 2))
        spec = {
            "work": str(work),
            "seq": args.seq,
            "small": args.small,
            "device": args.device,
            "seed": 0,
            "rows": n * b * max(args.steps, 2 * k),
        }
        began = time.monotonic()
        builder = multiprocessing.get_context("spawn").Process(target=build_assets, args=(spec,))
        builder.start()
        builder.join()
        if builder.exitcode != 0:
            sys.exit(f"building the models and data failed (exit status {builder.exitcode})")
        assets = json.loads((work / "assets.json").read_text(encoding="utf-8"))
        print(f"models and data built ({time.monotonic() - began:.0f} s)", flush=True)

        bench = Bench(args, env, work)
        scaling = [bench.throughput(1, "ddp")]
        if n > 1:
            scaling += [bench.throughput(n, "ddp"), bench.throughput(n, "fsdp")]
        reference, resumed, resume = bench.resume()
        rows = [*scaling, reference, resumed]

        single = scaling[0].get("tokens_per_s")
        for row in scaling:
            if single and "tokens_per_s" in row:
                row["scaling_efficiency"] = row["tokens_per_s_per_gpu"] / single
        peaks = {r["strategy"]: r.get("peak_gib") for r in scaling[1:]}
        document = {
            "device": assets["device_name"],
            "gpus": n,
            "gpus_visible": visible,
            "unit": bench.unit,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "kdlang_runtime": source,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "small": args.small,
            "gradient_checkpointing": args.gradient_checkpointing,
            "seq": args.seq,
            "batch_per_gpu": b,
            "steps": args.steps,
            "warmup_steps": WARMUP,
            "vocab": assets["vocab"],
            "rows": assets["rows"],
            "target_tokens": assets["target_tokens"],
            "student": assets["student"],
            "teacher": assets["teacher"],
            "runs": rows,
            "resume": resume,
        }
        if n > 1 and peaks.get("ddp") and peaks.get("fsdp"):
            document["fsdp_vs_ddp_peak"] = {
                "ddp": peaks["ddp"],
                "fsdp": peaks["fsdp"],
                "ratio": peaks["fsdp"] / peaks["ddp"],
            }
        text = table(document)
        print("\n" + text, flush=True)
        words = assets["device_name"].split() or ["gpu"]
        gpu = "cpu" if args.device == "cpu" else words[min(1, len(words) - 1)].lower()
        slug = f"{gpu}_x{n}" + ("_small" if args.small else "")
        slug += "_checkpointing" if args.gradient_checkpointing else ""
        args.out.mkdir(parents=True, exist_ok=True)
        for row in rows:  # each step's main values stay
            records = row.pop("records", [])
            row["per_step"] = [{key: r.get(key) for key in STEP_KEYS} for r in records]
        (args.out / f"multi_gpu_{slug}.json").write_text(
            json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8"
        )
        (args.out / f"multi_gpu_{slug}.md").write_text(text, encoding="utf-8")
        print(f"saved {args.out / f'multi_gpu_{slug}.json'} and .md", flush=True)
    finally:
        if args.keep:
            print(f"kept the work folder: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
