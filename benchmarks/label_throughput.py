"""Throughput of a ``label`` stage on the ``openai`` teacher, end to end through the executor.

Unlike ``teacher_concurrency.py`` (the teacher's ``generate`` alone), this runs a whole recipe:
plan, a ``label`` stage that renders prompts, sends requests in chunks, appends every finished
row to its progress log (synced), writes the Arrow artifact and commits it. The local
OpenAI-compatible server (tests/fixtures/openai_server.py) answers each request after
``--latency`` seconds and runs in its own process, as a real server would. The table gives the
label stage's wall time (median of ``--repeat`` runs, each on an empty cache), rows per second
and the speed-up over concurrency 1.

    python benchmarks/label_throughput.py [--rows 200] [--latency 0.05] [--levels 1 16]
                                          [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.fixtures

BASE_URL_ENV = "KD_BENCH_BASE_URL"


def serve(latency: float, urls: multiprocessing.Queue, done: multiprocessing.Event) -> None:
    """Child process: run the server until ``done`` is set."""
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.openai_server import FakeOpenAIServer

    with FakeOpenAIServer(latency=latency) as server:
        urls.put(server.url)
        done.wait()


def write_recipe(folder: Path, rows: int, concurrency: int) -> Path:
    with (folder / "questions.jsonl").open("w") as out:
        for i in range(rows):
            out.write(json.dumps({"question": f"What is {i} times {i + 1}?"}) + "\n")
    recipe = folder / "bench.kd"
    recipe.write_text(
        f"""recipe "label-throughput" {{ seed = 1 }}
model api = openai("bench", base_url = env("{BASE_URL_ENV}"), concurrency = {concurrency})
dataset questions = jsonl("questions.jsonl")
prompt ask = "Q: {{{{ question }}}}\\nA:"
stage answers = label(questions) {{ teacher = api  prompt = ask  temperature = 0.7  max_tokens = 32 }}
""",
        encoding="utf-8",
    )
    return recipe


def measure(rows: int, concurrency: int) -> tuple[float, dict]:
    """Seconds the label stage took on an empty cache, and its teacher usage."""
    from kdlang.runtime.executor import run_plan

    from kdlang.check import load_checked
    from kdlang.plan import build_plan

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        program, _ = load_checked(str(write_recipe(work, rows, concurrency)))
        run = run_plan(build_plan(program, str(work / ".kdcache")), workdir=work, device="cpu")
        (label,) = [r for r in run.results if r.name == "answers"]
        if label.status != "ran" or label.manifest.get("rows") != rows:
            raise RuntimeError(f"benchmark run failed: {label.error}")
        return label.seconds, label.stats["teacher"]


def peak_in_flight(url: str) -> int:
    with urllib.request.urlopen(f"{url}/stats") as reply:
        return json.load(reply)["max_in_flight"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="server seconds per request")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    urls, done = context.Queue(), context.Event()
    server = context.Process(target=serve, args=(args.latency, urls, done), daemon=True)
    server.start()
    try:
        url = urls.get(timeout=60)
        os.environ[BASE_URL_ENV] = url
        measure(8, 4)  # warm-up: imports, first connections
        table = []
        for level in args.levels:
            times = [measure(args.rows, level)[0] for _ in range(args.repeat)]
            table.append((level, statistics.median(times), peak_in_flight(url)))
    finally:
        done.set()
        server.join(timeout=10)
    base = next((seconds for level, seconds, _ in table if level == 1), table[0][1])
    print(
        f"label stage, openai teacher: {args.rows} rows, {args.latency * 1000:.0f} ms server "
        f"latency, median of {args.repeat} runs"
    )
    print("| concurrency | wall (s) | rows/s | speed-up |")
    print("|---:|---:|---:|---:|")
    for level, seconds, _ in table:
        print(f"| {level} | {seconds:.2f} | {args.rows / seconds:.1f} | {base / seconds:.1f}x |")
    print(f"server peak in flight: {table[-1][2]}")


if __name__ == "__main__":
    main()
