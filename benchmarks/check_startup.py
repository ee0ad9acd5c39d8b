"""How fast `kdlang check` answers, against the floor of importing its three libraries.

Runs each command N times in fresh interpreters (median wall time) and prints a table:
``python -c "import lark, pydantic, jinja2"`` (the floor: nothing of kdlang) and
``kdlang check RECIPE`` for each recipe given (default: every recipe in recipes/).

    python benchmarks/check_startup.py [-n 15] [recipes/cot_distill.kd ...]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def walls(commands: list[list[str]], runs: int) -> list[float]:
    """Median wall time of each command; the commands take turns, run after run, so that a
    change in the machine's load weighs on all of them alike."""
    times: list[list[float]] = [[] for _ in commands]
    for run in range(runs + 1):  # the first round warms the OS file cache and is dropped
        for index, command in enumerate(commands):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
            if run:
                times[index].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=15)
    parser.add_argument("recipes", nargs="*")
    args = parser.parse_args()
    recipes = args.recipes or sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "recipes").glob("*.kd")
    )
    kdlang = shutil.which("kdlang") or sys.exit("kdlang is not installed (pip install -e .)")
    commands = [[sys.executable, "-c", "import lark, pydantic, jinja2"]]
    commands += [[kdlang, "check", recipe] for recipe in recipes]
    measured = walls(commands, args.n)
    floor = measured[0]
    rows = [("import lark, pydantic, jinja2", floor)]
    rows += [
        (f"kdlang check {recipe}", seconds)
        for recipe, seconds in zip(recipes, measured[1:], strict=True)
    ]
    print(f"\nmedian of {args.n} runs, {sys.version.split()[0]}\n")
    print("| command | wall (ms) | ratio to floor |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1000:.0f} | {seconds / floor:.2f} |")


if __name__ == "__main__":
    main()
