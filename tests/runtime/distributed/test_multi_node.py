"""Several machines: ``kdlang run --launcher torchrun --nnodes 2 --node-rank R --rdzv-endpoint
HOST:PORT`` on each. Here two "nodes" are two launchers on loopback (Gloo, CPU), sharing the
workdir as machines share a filesystem: every step equals one process. A node that does not see
the cache stops with a clear error, on every rank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kdlang.cli.run_cmd import Nodes, launch_command
from tests.runtime.distributed.support import ROOT
from tests.runtime.stages.support import cli
from tests.runtime.train.support import metrics, models, node, run_recipe, write_recipe

BODY = """
dataset qs = inline([
  {q: "What is 2 + 3?", a: "5"},
  {q: "What is 7 times 6?", a: "42"},
  {q: "What is 1 + 1?", a: "2"},
  {q: "Write a short poem about the sea.", a: "The wind and the light."},
])
prompt ask = "Q: {{ q }}\\nA:"
train distill {
  student = student  teacher = teacher  data = qs  prompt = ask  target = a
  max_steps = 3  batch = 4  lr = 1e-3
  loss sft weight 0.5
  loss forward_kl weight 1.0 temperature 2.0
}
"""


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _nodes(recipe: Path, port: int, caches: tuple[str | None, str | None] = (None, None)):
    """Start node 0 and node 1 of a two-machine run; returns both finished processes."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    environment.pop("WORLD_SIZE", None)
    started = []
    for rank in (0, 1):
        command = [
            sys.executable, "-m", "kdlang", "run", str(recipe), "--workdir", str(recipe.parent),
            "--device", "cpu", "--launcher", "torchrun", "--nproc", "1", "--nnodes", "2",
            "--node-rank", str(rank), "--rdzv-endpoint", f"127.0.0.1:{port}",
        ]  # fmt: skip
        if caches[rank] is not None:
            command += ["--cache", caches[rank]]
        started.append(
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return [(p, *p.communicate(timeout=240)) for p in started]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_nodes_train_as_one_process(tmp_path, tiny_pair):
    single = run_recipe(write_recipe(tmp_path / "single", models(tiny_pair) + BODY))
    recipe = write_recipe(tmp_path / "multi", models(tiny_pair) + BODY)
    for process, _, err in _nodes(recipe, _port()):
        assert process.returncode == 0, err[-3000:]
    report = json.loads((recipe.parent / "runs" / "t" / "report.json").read_text())
    assert node(report, "distill")["stats"]["processes"] == 2
    expected, found = metrics(single, "distill"), metrics(report, "distill")
    assert [r["step"] for r in found] == [0, 1, 2]
    for a, b in zip(found, expected, strict=True):
        assert a["tokens"] == b["tokens"]
        for key in ("loss", "sft", "forward_kl", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["step"], key)


@pytest.mark.timeout(300)
def test_a_node_that_does_not_see_the_cache_stops_every_rank_with_a_clear_error(tmp_path):
    recipe = write_recipe(tmp_path, 'dataset qs = inline([{q: "a"}])\n')
    caches = (str(tmp_path / "cache-a"), str(tmp_path / "cache-b"))
    outcomes = _nodes(recipe, _port(), caches)
    for process, _, _ in outcomes:
        assert process.returncode != 0
    _, _, err0 = outcomes[0]
    assert "is not shared by every process (rank 1 cannot see rank 0's files)" in err0
    assert "internal error" not in err0  # (torchrun adds its own report of the exit)
    assert not list(Path(caches[0]).glob(".processes-*"))  # the probe is gone


def test_the_launch_command_of_a_node(tmp_path):
    nodes = Nodes(2, 1, ("10.0.0.1", "29400"))
    command = launch_command("torchrun", 4, "r.kd", [], [], [], "cuda", "w", None, nodes)
    assert command[:14] == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", "1",
        "--master_addr", "10.0.0.1", "--master_port", "29400", "--nproc_per_node", "4", "-m",
    ]  # fmt: skip
    command = launch_command("accelerate", 4, "r.kd", [], [], [], "cuda", "w", None, nodes)
    for flag, value in (
        ("--num_processes", "8"),
        ("--num_machines", "2"),
        ("--machine_rank", "1"),
        ("--main_process_ip", "10.0.0.1"),
        ("--main_process_port", "29400"),
    ):
        assert command[command.index(flag) + 1] == value
    assert "--multi_gpu" in command


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "h:1"],
            "--nnodes needs --launcher",
        ),
        (
            ["--launcher", "torchrun", "--nnodes", "2"],
            "--nnodes needs --node-rank R and --rdzv-endpoint",
        ),
        (
            [
                "--launcher",
                "torchrun",
                "--nnodes",
                "2",
                "--node-rank",
                "2",
                "--rdzv-endpoint",
                "h:1",
            ],
            "--node-rank must be 0 to 1, not 2",
        ),
        (
            ["--launcher", "torchrun", "--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "h"],
            "--rdzv-endpoint must be HOST:PORT",
        ),
        (["--node-rank", "1"], "--node-rank and --rdzv-endpoint need --nnodes 2 or more"),
        (["--launcher", "torchrun", "--nnodes", "0"], "--nnodes must be at least 1"),
    ],
)
def test_node_options_are_checked(tmp_path, args, message):
    recipe = write_recipe(tmp_path, 'dataset qs = inline([{q: "a"}])\n')
    result = cli("run", str(recipe), "--workdir", str(tmp_path), *args)
    assert result.exit_code == 2
    assert message in result.output
