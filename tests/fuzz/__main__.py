"""A long fuzz run: ``python -m tests.fuzz --cases 200000 [--seed 1] [--out findings]``.

Prints a table of outcomes per mutation and writes each finding's bytes to ``--out`` (named by
the case, so ``tests.fuzz.cases.case(name)`` rebuilds it)."""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

from tests.fuzz.cases import cases
from tests.fuzz.harness import run_case


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz")
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"))
    args = parser.parse_args()
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    slowest = 0.0
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for name, data in cases(args.seed, args.cases, args.start):
            outcome = run_case(name, data, Path(folder))
            mutation = name.split(":")[-1].split("@")[0]
            table[mutation][outcome.kind] += 1
            slowest = max(slowest, outcome.seconds)
            if outcome.kind == "finding":
                args.out.mkdir(parents=True, exist_ok=True)
                safe = name.replace(":", "_").replace("/", "_")
                (args.out / f"{safe}.kd").write_bytes(data)
                (args.out / f"{safe}.txt").write_text(outcome.detail, encoding="utf-8")
                print(f"finding {name}: {outcome.detail.splitlines()[0]}", flush=True)
    print(f"\n{args.cases} cases in {time.perf_counter() - began:.0f} s, slowest {slowest:.2f} s\n")
    print(f"| {'mutation':<10} | {'clean':>7} | {'diagnostics':>11} | {'findings':>8} |")
    print(f"|{'-' * 12}|{'-' * 9}|{'-' * 13}|{'-' * 10}|")
    for mutation in sorted(table):
        counts = table[mutation]
        print(
            f"| {mutation:<10} | {counts['clean']:>7} | {counts['diagnostics']:>11} "
            f"| {counts['finding']:>8} |"
        )


if __name__ == "__main__":
    main()
