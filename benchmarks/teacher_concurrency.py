"""Throughput of the ``openai`` teacher's ``generate`` against a server with fixed latency.

A local OpenAI-compatible server (tests/fixtures/openai_server.py) answers every request after
``--latency`` seconds; ``generate`` sends ``--requests`` chat requests at each concurrency and
the table reports wall time, requests per second and the speed-up over concurrency 1. With
latency-bound calls the ideal speed-up is the concurrency itself; the gap is client overhead.
The server runs in its own process, as a real one would, so it does not share the client's GIL.

    python benchmarks/teacher_concurrency.py [--requests 200] [--latency 0.05] [--levels 1 4 16]
                                             [--repeat 3]

Each level runs ``--repeat`` times on a fresh teacher (its client is created inside
``generate``, as in real use); the table shows the median wall time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fixtures

from kdlang.runtime.teachers import GenerationRequest
from kdlang.runtime.teachers.openai import OpenAITeacher

ROOT = Path(__file__).resolve().parents[1]


def serve(latency: float, urls: multiprocessing.Queue, done: multiprocessing.Event) -> None:
    """Child process: run the server until ``done`` is set."""
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.openai_server import FakeOpenAIServer

    with FakeOpenAIServer(latency=latency) as server:
        urls.put(server.url)
        done.wait()


def measure(concurrency: int, requests: int, latency: float) -> tuple[float, int]:
    """Wall seconds for one ``generate`` of ``requests`` requests on a fresh server, and the
    server's peak number of requests in flight."""
    context = multiprocessing.get_context("spawn")
    urls, done = context.Queue(), context.Event()
    process = context.Process(target=serve, args=(latency, urls, done), daemon=True)
    process.start()
    try:
        url = urls.get(timeout=60)
        batch = [GenerationRequest(f"question {i}", seed=i, max_tokens=32) for i in range(requests)]
        teacher = OpenAITeacher("bench", base_url=url, concurrency=concurrency)
        start = time.perf_counter()
        results = teacher.generate(batch)
        elapsed = time.perf_counter() - start
        with urllib.request.urlopen(f"{url}/stats") as reply:
            peak = json.load(reply)["max_in_flight"]
    finally:
        done.set()
        process.join(timeout=10)
    if len(results) != requests or teacher.stats.failures:
        raise RuntimeError("benchmark run lost requests")
    return elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="server seconds per request")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    measure(2, 4, 0.0)  # warm-up: imports and first connections
    rows = []
    for level in args.levels:
        runs = sorted(measure(level, args.requests, args.latency) for _ in range(args.repeat))
        rows.append((level, *runs[len(runs) // 2]))
    base = next((elapsed for level, elapsed, _ in rows if level == 1), rows[0][1])
    print(
        f"openai teacher: {args.requests} requests, {args.latency * 1000:.0f} ms server latency, "
        f"median of {args.repeat}"
    )
    print("| concurrency | peak in flight | wall (s) | requests/s | speed-up |")
    print("|---:|---:|---:|---:|---:|")
    for level, elapsed, peak in rows:
        print(
            f"| {level} | {peak} | {elapsed:.2f} | {args.requests / elapsed:.1f} "
            f"| {base / elapsed:.1f}x |"
        )


if __name__ == "__main__":
    main()
