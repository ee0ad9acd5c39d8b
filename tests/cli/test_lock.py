"""The cache lock: one process writes a cache at a time. A second `kdlang run` stops clearly (or
waits with `--wait`), `cache gc` refuses while a run holds it, and a killed holder leaves no
stale lock (the operating system releases it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform == "win32", reason="the lock is POSIX flock"),
]

RECIPE = """recipe "locks" { seed = 1 }
dataset words = inline([{q: "a"}, {q: "bb"}, {q: "ccc"}])
stage long = filter(words) { keep len(q) > 1 }
"""
HOLD = (
    "import sys, time\n"
    "from kdlang.plan.lock import cache_lock\n"
    "with cache_lock(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(100)\n"
)


def kdlang(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kdlang", *args], cwd=cwd, capture_output=True, text=True, timeout=90
    )


def hold(cache: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(cache)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "held\n"
    return holder


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "r.kd").write_text(RECIPE, encoding="utf-8")
    return tmp_path


def test_a_second_run_and_gc_stop_while_the_cache_is_held_and_go_on_once_the_holder_is_killed(
    project,
):
    assert kdlang("run", "r.kd", cwd=project).returncode == 0
    cache = project / ".kdcache"
    artifacts = sorted((cache / "artifacts").iterdir())
    assert len(artifacts) == 2
    holder = hold(cache)
    try:
        second = kdlang("run", "r.kd", "--force", "long", cwd=project)
        assert second.returncode == 1
        assert f"error: process {holder.pid} " in second.stderr
        assert "holds the cache" in second.stderr and "--wait" in second.stderr
        assert "Traceback" not in second.stderr

        gc = kdlang("cache", "gc", "--all", "--cache", str(cache), cwd=project)
        assert gc.returncode == 1
        assert "gc would remove what that run is writing" in gc.stderr
        assert sorted((cache / "artifacts").iterdir()) == artifacts  # nothing removed
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert kdlang("run", "r.kd", "--force", "long", cwd=project).returncode == 0
    assert kdlang("cache", "gc", "--all", "--cache", str(cache), cwd=project).returncode == 0
    assert not list((cache / "artifacts").iterdir())


def test_a_run_with_wait_waits_for_the_holder(project):
    cache = project / ".kdcache"
    holder = hold(cache)
    waiting = subprocess.Popen(
        [sys.executable, "-m", "kdlang", "run", "r.kd", "--wait"],
        cwd=project,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = waiting.stderr.readline()
        assert line.startswith(f"waiting: process {holder.pid} ")
        assert waiting.poll() is None  # still waiting, nothing ran
        assert not (cache / "artifacts").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert waiting.wait(timeout=90) == 0
    assert len(list((cache / "artifacts").iterdir())) == 2


def test_the_lock_records_no_option_values(project, monkeypatch):
    from kdlang.plan import lock

    monkeypatch.setattr(
        sys, "argv", ["kdlang", "run", "--set", "teacher.api_key=sk-planted-1234", "/x/r.kd"]
    )
    with lock.cache_lock(project / "c"):
        text = (project / "c" / "lock").read_text(encoding="utf-8")
    assert '"command": "kdlang run r.kd"' in text
    assert "sk-planted" not in text and f'"pid": {os.getpid()}' in text


@pytest.mark.parametrize("option", ["--workdir", "--cache"])
def test_a_workdir_or_cache_that_is_a_file_is_a_usage_error(project, option):
    (project / "afile").write_text("mine\n", encoding="utf-8")
    result = kdlang("run", "r.kd", option, "afile", cwd=project)
    assert result.returncode == 2
    assert result.stderr == f"error: {option} afile is a file, not a folder\n"
    assert (project / "afile").read_text(encoding="utf-8") == "mine\n"
