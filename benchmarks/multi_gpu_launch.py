"""Starting ``kdlang`` for ``multi_gpu.py`` and reading what a run left: the environment every
process inherits, ``kdlang run`` in a process group of its own (killed as a whole on a timeout
or an interruption), the one-line reason of a failed run, and the train node's records.

The ``kdlang`` run is the one importable from outside this checkout when it is this checkout's
(an editable install); otherwise a folder of links mirroring the install mapping
(``runtime/`` → ``kdlang.runtime``, ``grammar/`` → ``kdlang.grammar``) is put first on the
``PYTHONPATH`` every process inherits.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from source_tree import ROOT, link_package

sys.path.insert(0, str(ROOT))  # for tests.runtime.distributed.support
from tests.runtime.distributed.support import kill

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


# -- importing kdlang in every process ----------------------------------------------------------


PROBE = (
    "import kdlang, kdlang.cli, kdlang.runtime, kdlang.grammar\n"
    "from importlib import resources\n"
    "resources.files('kdlang.grammar').joinpath('kd.lark').read_text()\n"
    "print(kdlang.__version__)\n"
    "for module in (kdlang, kdlang.cli, kdlang.runtime, kdlang.grammar):\n"
    "    print(module.__file__)\n"
)


def python_env(work: Path, device: str) -> tuple[dict[str, str], str]:
    """The environment of every ``kdlang`` process, and where ``kdlang.runtime`` comes from."""
    env = {**os.environ, **OFFLINE}
    if device == "cpu":
        env["OMP_NUM_THREADS"] = "1"
    found = _probe(env, work)
    if found is not None:
        return env, found
    shim = link_package(work / "python")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))
    found = _probe(env, work)
    if found is None:
        check = subprocess.run(
            [sys.executable, "-c", PROBE], cwd=work, env=env, capture_output=True, text=True
        )
        sys.exit(f"cannot import kdlang from this checkout:\n{check.stderr[-2000:]}")
    return env, found


def _probe(env: dict[str, str], cwd: Path) -> str | None:
    """Where ``kdlang.runtime`` comes from, when kdlang, its CLI, runtime and grammar all import
    from this checkout in a process started with ``env`` in ``cwd``; else ``None``."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True
    )
    files = done.stdout.strip().splitlines()[1:] if done.returncode == 0 else []
    if len(files) != 4 or not all(Path(f).resolve().is_relative_to(ROOT) for f in files):
        return None
    return files[2]


# -- runs ---------------------------------------------------------------------------------------


def kdlang(env, cwd: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kdlang", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        **kwargs,
    )


def start(env, recipe: Path, workdir: Path, nproc: int, device: str, log: str):
    """``kdlang run`` (under torchrun for several processes) in a process group of its own;
    its output goes to ``workdir/<log>.out`` and ``.err``."""
    command = [sys.executable, "-m", "kdlang", "run", str(recipe)]
    command += ["--workdir", str(workdir), "--device", device]
    if nproc > 1:
        command += ["--launcher", "torchrun", "--nproc", str(nproc)]
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / f"{log}.out").open("wb") as out, (workdir / f"{log}.err").open("wb") as err:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=out, stderr=err, start_new_session=True
        )
    process.command = command
    return process


def finish(process, timeout: float) -> int | None:
    """Wait for the run; ``None`` when it ran past ``timeout`` (it is then killed). Interrupted,
    the run is killed too."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(process)
        return None
    except BaseException:
        kill(process)
        raise


def failure(workdir: Path, log: str, status: int | None, timeout: float) -> tuple[str, str]:
    """``(one line, the end of its output)`` of a failed run: the error its report gives a
    node, else the last exception its output names. The output ends before the launcher's own
    account of the failure (its line ``failed (exitcode: ...)`` kept)."""
    text = ""
    for suffix in ("err", "out"):
        path = workdir / f"{log}.{suffix}"
        text = text or (path.read_text("utf-8", "replace").strip() if path.exists() else "")
    lines = text.splitlines()
    launcher = [i for i, line in enumerate(lines) if "failed (exitcode:" in line]
    lines = lines[: launcher[-1] + 1] if launcher else lines
    tail = "\n".join(lines[-30:])
    head = f"timed out after {timeout:.0f} s" if status is None else f"exit status {status}"
    reason = None
    for report in (workdir / "runs").glob("*/report.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            nodes = json.loads(report.read_text(encoding="utf-8"))["nodes"]
            errors = [f"{n['name']}: {' '.join(n['error'].split())}" for n in nodes if n["error"]]
            reason = reason or (errors[0] if errors else None)
    if reason is None:
        pattern = r"([\w.]+(Error|Exception)|error|terminate called)\b"
        named = [line.strip() for line in lines if re.match(pattern, line.strip())]
        named += [line.split("] ", 1)[-1].split(" of binary")[0] for line in lines[-1:] if launcher]
        reason = named[0] if len(named) == 1 else " ... ".join(named[-2:]) if named else None
    return (f"{head}: {reason}" if reason else head), tail


def read_run(workdir: Path) -> tuple[list[dict], dict]:
    """The train node of the run's report and its ``metrics.jsonl`` records (with each step's
    ``timings.jsonl`` values)."""
    (report,) = (workdir / "runs").glob("*/report.json")
    document = json.loads(report.read_text(encoding="utf-8"))
    node = next(n for n in document["nodes"] if n["name"] == "distill")
    if node["status"] not in ("ran", "cached") or not node["output"]:
        raise RuntimeError(f"the train node {node['status']}: {node.get('error')}")
    folder = Path(node["output"])
    folder = folder if folder.is_absolute() else workdir / folder
    lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    timings = folder / "timings.jsonl"  # each step's seconds and GPU memory, kept apart
    timed = [json.loads(line) for line in timings.read_text(encoding="utf-8").splitlines()]
    by_step = {r["step"]: r for r in timed} if timings.is_file() else {}
    records = [json.loads(line) for line in lines if line.strip()]
    return [{**by_step.get(r["step"], {}), **r} for r in records], node
