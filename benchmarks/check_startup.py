"""How fast `kdlang check` answers, against the floor of importing its three libraries.

Runs each command N times in fresh interpreters (median wall time) and prints a table:
``python -c "import lark, pydantic, jinja2"`` (the floor: nothing of kdlang) and
``kdlang check RECIPE`` for each recipe given (default: every recipe in recipes/). A first row,
``python -c pass``, shows what starting the interpreter costs (site and the ``.pth`` hooks of
the installed packages): every command pays it, the floor included.

    python benchmarks/check_startup.py [-n 15] [recipes/cot_distill.kd ...]

Both sides run on the interpreter running this script. ``kdlang check`` runs what the console
script runs (``kdlang.cli.main``) on this checkout's package, not through a launcher that could
add its own start-up (a pyenv shim is a shell script) or resolve to another copy of kdlang. The
floor's libraries come byte-compiled from their installation; kdlang's modules are byte-compiled
first too, as installing a package does, since with ``PYTHONDONTWRITEBYTECODE`` set an editable
checkout would otherwise be compiled from source on every run
(``--from-source`` measures that case).
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ENTRY_POINT = "import sys\nfrom kdlang.cli import main\nsys.argv[0] = 'kdlang'\nsys.exit(main())"
"""What the ``kdlang`` console script does; run with ``-c`` from the checkout's root, so the
package imported is this checkout's."""


def walls(commands: list[list[str]], runs: int, env: dict[str, str]) -> list[list[float]]:
    """Wall times of each command; the commands take turns, run after run, so that a change in
    the machine's load weighs on all of them alike."""
    times: list[list[float]] = [[] for _ in commands]
    for run in range(runs + 1):  # the first round warms the OS file cache and is dropped
        for index, command in enumerate(commands):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=ROOT, env=env)
            if run:
                times[index].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=15)
    parser.add_argument(
        "--from-source",
        action="store_true",
        help="Remove kdlang's byte code and write none: every run compiles kdlang from source.",
    )
    parser.add_argument("recipes", nargs="*")
    args = parser.parse_args()
    recipes = args.recipes or sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "recipes").glob("*.kd")
    )
    env = dict(os.environ)
    if args.from_source:
        for cache in (ROOT / "kdlang").rglob("__pycache__"):
            shutil.rmtree(cache)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        compileall.compile_dir(ROOT / "kdlang", quiet=1)
    python = sys.executable
    rows = [
        ("python -c pass (interpreter start-up)", [python, "-c", "pass"]),
        ("import lark, pydantic, jinja2", [python, "-c", "import lark, pydantic, jinja2"]),
        *((f"kdlang check {r}", [python, "-c", ENTRY_POINT, "check", r]) for r in recipes),
    ]
    load_before = os.getloadavg()[0]
    measured = walls([command for _, command in rows], args.n, env)
    load_after = os.getloadavg()[0]
    floor = statistics.median(measured[1])
    print(
        f"\nmedian of {args.n} runs, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {load_before:.2f} before and {load_after:.2f} after"
        + (", kdlang compiled from source on every run" if args.from_source else "")
        + "\n"
    )
    print("| command | wall (ms) | fastest (ms) | ratio to floor |")
    print("|---|---|---|---|")
    for (name, _), times in zip(rows, measured, strict=True):
        median = statistics.median(times)
        print(f"| {name} | {median * 1000:.0f} | {min(times) * 1000:.0f} | {median / floor:.2f} |")


if __name__ == "__main__":
    main()
