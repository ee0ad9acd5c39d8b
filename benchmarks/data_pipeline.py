"""The data path at scale: kdlang against the same pipeline written with ``datasets``.

Writes a seeded jsonl of instruction/output rows (exact duplicates and near-duplicates among
them) into a temporary folder, then runs, each in its own process, one after the other:

- kdlang: ``kdlang run`` of a recipe ``dataset -> map -> filter (regex + length + exact dedup
  + MinHash dedup) -> select``;
- datasets: ``load_dataset("json")``, ``.map``, ``.filter`` with Python lambdas (the same regex
  and length test, exact dedup through a set, ``datasketch`` MinHash LSH in a ``.filter``),
  ``.select`` of the same share of rows, written out with ``save_to_disk``.

For each: wall time, input rows per second, the rows kept, and the peak resident memory of the
process and its children (sampled every 50 ms with psutil, summed over the process tree).
Prints a table and writes it to ``benchmarks/results/data_pipeline_cpu.md``.

    python benchmarks/data_pipeline.py [--rows 2000000] [--seed 0] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "data_pipeline_cpu.md"

THRESHOLD = 0.8
KEEP_SHARE = 0.9
LENGTHS = (40, 2000)

RECIPE = f"""
recipe "data-pipeline" {{
  seed = 0
}}

dataset raw = jsonl("data.jsonl")

stage joined = map(raw) {{
  text  = instruction + "\\n" + output
  chars = len(output)
}}

stage clean = filter(joined) {{
  keep matches(output, r"^[A-Z][a-z]+ ") and chars in {LENGTHS[0]}..{LENGTHS[1]}
  dedup text by exact
  dedup instruction by minhash(threshold = {THRESHOLD})
}}

stage chosen = select(clean) {{
  n = {round(KEEP_SHARE * 100)}%
}}
"""

PEER = textwrap.dedent(
    f"""
    import random, re, sys
    from datasets import load_dataset
    from datasketch import MinHash, MinHashLSH

    folder = sys.argv[1]
    ds = load_dataset("json", data_files=folder + "/data.jsonl", split="train",
                      cache_dir=folder + "/hf-cache")
    ds = ds.map(lambda r: {{"text": r["instruction"] + "\\n" + r["output"],
                            "chars": len(r["output"])}})
    starts = re.compile(r"^[A-Z][a-z]+ ", re.M)
    ds = ds.filter(lambda r: starts.search(r["output"]) is not None
                   and {LENGTHS[0]} <= r["chars"] <= {LENGTHS[1]})
    seen = set()

    def first(row):
        key = " ".join(row["text"].split())
        if key in seen:
            return False
        seen.add(key)
        return True

    ds = ds.filter(first)
    word = re.compile(r"\\w+")
    lsh = MinHashLSH(threshold={THRESHOLD}, num_perm=128)

    def novel(row, index):
        words = word.findall(row["instruction"].lower())
        grams = {{" ".join(words[i:i + 5]) for i in range(len(words) - 4)}} or {{" ".join(words)}}
        signature = MinHash(num_perm=128, seed=0)
        signature.update_batch([g.encode("utf-8") for g in grams])
        if lsh.query(signature):
            return False
        lsh.insert(str(index), signature)
        return True

    ds = ds.filter(novel, with_indices=True)
    count = round({KEEP_SHARE} * len(ds))
    ds = ds.select(sorted(random.Random(0).sample(range(len(ds)), count)))
    ds.save_to_disk(folder + "/peer-out")
    print(len(ds))
    """
)

TOPICS = [
    "sorting",
    "graphs",
    "tides",
    "volcanoes",
    "tariffs",
    "proteins",
    "sonnets",
    "compilers",
    "rivers",
    "glaciers",
]
VERBS = [
    "explain",
    "describe",
    "compare",
    "summarise",
    "outline",
    "evaluate",
    "define",
    "illustrate",
]
WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "it",
    "for",
    "on",
    "with",
    "as",
    "was",
    "by",
    "this",
    "be",
    "are",
    "from",
    "at",
    "or",
    "an",
    "have",
    "not",
    "which",
    "one",
    "all",
    "were",
    "when",
    "we",
    "there",
    "can",
    "been",
    "has",
    "more",
    "if",
    "will",
    "would",
    "so",
    "what",
    "about",
    "out",
    "up",
    "into",
    "than",
    "them",
    "these",
    "some",
    "could",
    "time",
    "only",
    "new",
    "other",
    "first",
    "any",
    "may",
    "like",
    "then",
    "now",
    "such",
    "system",
    "process",
    "energy",
    "water",
    "model",
    "data",
    "value",
    "rate",
    "change",
    "result",
    "method",
    "study",
    "answer",
    "light",
    "force",
    "signal",
    "layer",
    "error",
    "market",
    "price",
    "heat",
    "flow",
    "cell",
    "note",
    "step",
    "case",
    "point",
    "form",
    "café",
    "naïve",
    "über",
]


def generate(path: Path, rows: int, seed: int) -> int:
    """Write ``rows`` rows; about one in eight repeats an earlier row exactly (white space
    changed), one in eight repeats one with a word of its output changed."""
    rng = random.Random(seed)
    recent: list[dict] = []
    with path.open("w", encoding="utf-8") as out:
        for index in range(rows):
            roll = rng.random()
            if recent and roll < 0.125:
                base = rng.choice(recent)
                row = {"instruction": base["instruction"], "output": base["output"] + "  "}
            elif recent and roll < 0.25:
                base = rng.choice(recent)
                words = base["output"].split()
                words[rng.randrange(len(words))] = rng.choice(WORDS)
                row = {"instruction": base["instruction"], "output": " ".join(words)}
            else:
                topic, verb = rng.choice(TOPICS), rng.choice(VERBS)
                detail = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12)))
                body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
                opener = rng.choice(["Here", "First", "Consider", "lower", "In"])
                row = {
                    "instruction": f"{verb.title()} {topic}: {detail} (case {index}).",
                    "output": f"{opener} {body}.",
                }
            row["id"] = index
            if len(recent) < 5000:
                recent.append(row)
            else:
                recent[rng.randrange(5000)] = row
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path.stat().st_size


def measure(command: list[str], cwd: Path) -> dict:
    """Wall time, exit status, output and the peak RSS of the process tree of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    name = Path(command[1]).stem if command[1] != "-m" else command[2]
    out, err = cwd / f"{name}.stdout", cwd / f"{name}.stderr"  # files: a full pipe would stall it
    start = time.perf_counter()
    with out.open("w") as stdout_file, err.open("w") as stderr_file:
        process = psutil.Popen(command, cwd=cwd, stdout=stdout_file, stderr=stderr_file)
        peak = 0
        while process.poll() is None:
            total = 0
            try:
                for member in [process, *process.children(recursive=True)]:
                    total += member.memory_info().rss
            except psutil.NoSuchProcess:
                pass
            peak = max(peak, total)
            time.sleep(0.05)
    wall = time.perf_counter() - start
    stdout, stderr = out.read_text(), err.read_text()
    load = os.getloadavg()[1]  # the 5-minute load average as it ended
    if process.returncode != 0:
        raise SystemExit(f"{command[:3]} failed:\n{stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "peak": peak, "load": load, "stdout": stdout}


def kdlang_rows(folder: Path) -> int:
    report = next((folder / "runs").glob("*/report.json"))
    nodes = json.loads(report.read_text(encoding="utf-8"))["nodes"]
    return next(n for n in nodes if n["name"] == "chosen")["rows_out"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kd-data-") as tmp:
        folder = Path(tmp)
        size = generate(folder / "data.jsonl", args.rows, args.seed)
        (folder / "recipe.kd").write_text(RECIPE, encoding="utf-8")
        (folder / "peer.py").write_text(PEER, encoding="utf-8")
        env_python = sys.executable
        kd = measure(
            [env_python, "-m", "kdlang", "run", "recipe.kd", "--workdir", ".", "--device", "cpu"],
            folder,
        )
        kd["rows"] = kdlang_rows(folder)
        peer = measure([env_python, "peer.py", str(folder)], folder)
        peer["rows"] = int(peer["stdout"].strip().splitlines()[-1])
    table = report(args, size, kd, peer)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n", encoding="utf-8")


def report(args, size: int, kd: dict, peer: dict) -> str:
    lines = [
        "# Data pipeline on CPU: kdlang against `datasets`",
        "",
        f"{args.rows:,} jsonl rows ({size / 1e6:.0f} MB, seed {args.seed}) through map -> filter "
        f"(regex + length + exact dedup + MinHash dedup at {THRESHOLD}) -> select {KEEP_SHARE:.0%}; "
        f"{psutil.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, each pipeline in its own process, one after the other.",
        "",
        "| pipeline | wall s | input rows/s (wall) | CPU s | input rows/CPU s | rows kept | peak RSS GB "
        "| load (5 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in (("kdlang run", kd), ("datasets + datasketch", peer)):
        lines.append(
            f"| {name} | {result['wall']:.1f} | {args.rows / result['wall']:,.0f} | "
            f"{result['cpu']:.1f} | {args.rows / result['cpu']:,.0f} | "
            f"{result['rows']:,} | {result['peak'] / 1e9:.2f} | {result['load']:.1f} |"
        )
    lines += [
        "",
        f"kdlang / datasets throughput: {peer['wall'] / kd['wall']:.2f}x by wall time, "
        f"{peer['cpu'] / kd['cpu']:.2f}x by CPU time (user + system, of the process and its "
        "children). Peak RSS: the process and its children, summed, sampled every 50 ms.",
        "Load: the machine's 5-minute load average as each pipeline ended (other work on its "
        f"{psutil.cpu_count()} CPUs slows the wall time; the CPU time less).",
        "",
        f"Command: `python benchmarks/data_pipeline.py --rows {args.rows} --seed {args.seed}`",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
