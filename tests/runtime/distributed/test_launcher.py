"""``kdlang run --launcher torchrun|accelerate --nproc N``: the command it starts, its usage
checks, the exit status passed through, and an ``accelerate launch`` run equal to one process
(the torchrun one: tests/runtime/train/test_distributed.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdlang.cli import run_cmd
from tests.runtime.distributed.support import ROOT, report
from tests.runtime.stages.support import cli, node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def recipe(tmp_path) -> Path:
    return write_recipe(tmp_path, 'dataset qs = inline([{q: "a"}])\n')


@pytest.fixture
def started(monkeypatch, tmp_path):
    """The command lines ``kdlang run`` would start; each "exits" with status 5. The launcher
    holds the cache lock for them, in the test's folder."""
    monkeypatch.chdir(tmp_path)
    commands: list[list[str]] = []

    def call(command):
        commands.append(command)
        return 5

    monkeypatch.setattr(run_cmd.subprocess, "call", call)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return commands


def test_torchrun_reruns_the_same_arguments_and_passes_the_status_through(recipe, started):
    result = cli(
        "run", str(recipe), "--launcher", "torchrun", "--nproc", "3", "--device", "cpu",
        "--set", "recipe.seed=3", "--only", "qs", "--force", "qs", "--workdir", "w",
        "--cache", "c",
    )  # fmt: skip
    assert result.exit_code == 5
    (command,) = started
    assert command == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "3",
        "-m", "kdlang", "run", str(recipe.resolve()), "--device", "cpu", "--workdir", "w",
        "--set", "recipe.seed=3", "--only", "qs", "--force", "qs", "--cache", "c",
    ]  # fmt: skip


def test_accelerate_starts_processes_with_multi_gpu_or_one_on_cpu(recipe, started):
    assert cli("run", str(recipe), "--launcher", "accelerate", "--nproc", "2").exit_code == 5
    assert cli("run", str(recipe), "--launcher", "accelerate", "--device", "cpu").exit_code == 5
    several, one = started
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes"]
    assert several[: len(launch) + 1] == [*launch, "2"]
    assert "--multi_gpu" in several and "--cpu" not in several
    port = several[several.index("--main_process_port") + 1]
    assert port.isdigit() and int(port) > 0
    assert several[several.index("-m", len(launch)) :] == [
        "-m", "kdlang", "run", str(recipe.resolve()), "--device", "auto", "--workdir", ".",
    ]  # fmt: skip
    assert one[: len(launch) + 1] == [*launch, "1"] and "--cpu" in one
    assert "--multi_gpu" not in one


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--launcher", "mpirun", "--nproc", "2"],
            "--launcher must be one of torchrun, accelerate",
        ),
        (["--nproc", "2"], "--nproc needs --launcher"),
        (["--launcher", "torchrun", "--nproc", "0"], "--nproc must be at least 1, not 0"),
        (["--device", "tpu"], "--device must be one of cpu, cuda, auto, not 'tpu'"),
    ],
)
def test_launcher_options_are_usage_checked(recipe, started, args, message):
    result = cli("run", str(recipe), *args)
    assert result.exit_code == 2
    assert f"error: {message}" in result.output
    assert "Traceback" not in result.output and started == []


def test_a_launcher_killed_by_a_signal_exits_128_plus_its_number(recipe, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the launcher's cache lock goes in the test's folder
    monkeypatch.setattr(run_cmd.subprocess, "call", lambda command: -9)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert cli("run", str(recipe), "--launcher", "torchrun").exit_code == 137


def test_a_launched_process_does_not_launch_again(recipe, started, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = cli("run", str(recipe), "--launcher", "torchrun", "--nproc", "2")
    assert result.exit_code == 2 and "already started by a launcher" in result.output
    assert started == []


def test_a_missing_recipe_is_a_usage_error_before_launching(tmp_path, started):
    result = cli("run", str(tmp_path / "none.kd"), "--launcher", "torchrun", "--nproc", "2")
    assert result.exit_code == 2 and "no such file" in result.output and started == []


@pytest.mark.slow
def test_accelerate_launch_of_two_processes_equals_one_process(tmp_path, tiny_pair):
    body = f"""
dataset qs = inline([{", ".join(f'{{q: "What is {i} plus {i + 2}?"}}' for i in range(7))}])
model teacher = hf("{tiny_pair.teacher}", batch_size = 2)
prompt ask = "Q: {{{{ q }}}}\\nA:"
stage answers = label(qs) {{ teacher = teacher  prompt = ask  temperature = 0.9  max_tokens = 6 }}
"""
    single = run_recipe(write_recipe(tmp_path / "one", body))
    recipe = write_recipe(tmp_path / "two", body)
    command = [
        sys.executable, "-m", "kdlang", "run", str(recipe), "--workdir", str(recipe.parent),
        "--device", "cpu", "--launcher", "accelerate", "--nproc", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    document = report(recipe)
    found = node(document, "answers")
    expected = node(single, "answers")
    assert found["stats"]["processes"] == 2 and "processes" not in expected["stats"]
    assert found["teacher"] == expected["teacher"] and found["teacher"]["requests"] == 7
    assert (Path(found["output"]) / "data.arrow").read_bytes() == (
        Path(expected["output"]) / "data.arrow"
    ).read_bytes()
