"""``kdlang run [FILE]``: execute a recipe, reusing every cached stage. Without FILE, the embedded
quickstart recipe runs (offline, on CPU, in minutes).

``--launcher torchrun|accelerate --nproc N`` starts N processes of the same command under that
launcher (``python -m torch.distributed.run --standalone`` or ``accelerate launch``) and passes
its exit status through; each process then runs the recipe as one rank of the group (see
docs/training.md, "Several GPUs"). Started by a launcher, only rank 0 prints progress and the
summary.

``--format json`` prints the run's summary (the content of ``runs/<recipe>/report.json``) as one
JSON document on stdout and nothing else there: progress, node lines and what libraries print
go to stderr. ``-q`` shows only failures and the report's path; ``-v`` adds, under each node's
line, its fingerprint and output folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import typer

from kdlang.cli.common import (
    EXIT_ERRORS,
    EXIT_USAGE,
    check_format,
    color_option,
    default_recipe,
    print_diagnostics,
    read_source,
    set_color,
)
from kdlang.plan.lock import HELD_BY_PARENT

LAUNCHERS = ("torchrun", "accelerate")
DEVICES = ("cpu", "cuda", "auto")
FORMATS = ("text", "json")


def run(
    file: str = typer.Argument(
        None, metavar="FILE", help="The recipe. Default: the embedded quickstart."
    ),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        metavar="PATH=VALUE",
        help="Override a setting: PATH=VALUE; repeatable.",
        show_default=False,
    ),
    only: list[str] = typer.Option(
        [],
        "--only",
        metavar="NODE",
        help="Run only this node and what it needs (repeatable).",
        show_default=False,
    ),
    force: list[str] = typer.Option(
        [],
        "--force",
        metavar="NODE",
        help="Run this node even if cached (repeatable).",
        show_default=False,
    ),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="cpu, cuda or auto."),
    workdir: str = typer.Option(
        ".", "--workdir", metavar="DIR", help="Where runs/ (reports) and the cache live."
    ),
    cache: str = typer.Option(
        None, "--cache", metavar="DIR", help="The cache folder (default: WORKDIR/.kdcache)."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="If another run holds the cache, wait for it instead of stopping."
    ),
    launcher: str = typer.Option(
        None,
        "--launcher",
        metavar="LAUNCHER",
        help="Start --nproc processes under torchrun or accelerate (default: one process).",
    ),
    nproc: int = typer.Option(
        None, "--nproc", metavar="N", help="Processes to start with --launcher (e.g. one per GPU)."
    ),
    nnodes: int = typer.Option(
        1, "--nnodes", metavar="N", help="Machines the run spans (the same command on each)."
    ),
    node_rank: int = typer.Option(
        None, "--node-rank", metavar="R", help="This machine's number, 0 to N-1 (with --nnodes)."
    ),
    rdzv_endpoint: str = typer.Option(
        None,
        "--rdzv-endpoint",
        metavar="HOST:PORT",
        help="Where node 0 meets the others (with --nnodes): its address and a free port.",
    ),
    fmt: str = typer.Option(
        "text",
        "--format",
        metavar="FORMAT",
        help="text, or json: the run's summary (report.json) as one JSON document on stdout.",
    ),
    quiet: bool = typer.Option(
        False, "-q", "--quiet", help="Show only failures and the report's path: no progress."
    ),
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Add each node's fingerprint and output folder."
    ),
    color: str = color_option(),
) -> None:
    """Run a recipe: every stage in order, cached stages reused, a report written."""
    check_format(fmt, FORMATS)
    set_color(color)
    if quiet and verbose:
        _usage("--quiet and --verbose cannot be combined")
    if device not in DEVICES:
        _usage(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    file = file or default_recipe()
    root = Path(workdir)
    given_cache, cache = cache, cache or str(root / ".kdcache")
    for option, folder in (("--workdir", root), ("--cache", Path(cache))):
        if folder.exists() and not folder.is_dir():
            _usage(f"{option} {folder} is a file, not a folder")
    nodes = Nodes.given(nnodes, node_rank, rdzv_endpoint, launcher)
    if launcher is not None or nproc is not None:
        command = launch_command(
            launcher, nproc, file, overrides, only, force, device, workdir, given_cache, nodes
        )
        passed = [("--format", fmt, "text"), ("--color", color, "auto")]  # (flag, value, default)
        command += [
            part for flag, value, default in passed if value != default for part in (flag, value)
        ]
        command += [*(["-q"] * quiet), *(["-v"] * verbose)]
        read_source(file)  # a missing recipe is a usage error here, not in every process
        if nodes.rank > 0:  # node 0's launcher holds the (shared) cache's lock for the group
            status = subprocess.call(command)
            raise typer.Exit(status if status >= 0 else 128 - status)
        with _locked(cache, wait):  # the group runs under this process's lock
            os.environ[HELD_BY_PARENT] = str(Path(cache).resolve())
            status = subprocess.call(command)
        raise typer.Exit(status if status >= 0 else 128 - status)  # killed by a signal: 128 + n

    from kdlang.check import check_files, load_checked
    from kdlang.plan import build_plan
    from kdlang.syntax.diagnostics import DiagnosticError

    main = _rank() == 0
    read_source(file)
    try:
        program, warnings = load_checked(file, overrides)
    except DiagnosticError:
        diagnostics, sources = check_files([file], overrides)
        if main:
            print_diagnostics(diagnostics, sources, fmt)
        raise typer.Exit(EXIT_ERRORS) from None
    if main and not quiet:  # an unset secret is an error below if a stage that will run needs it
        shown = [w for w in warnings if w.code != "KD0406"]
        print_diagnostics(shown, program.sources, "text")
    plan = build_plan(program, cache)
    unknown = [name for name in [*only, *force] if name not in {n.name for n in plan.nodes}]
    if unknown:
        _usage(
            f"no node named {', '.join(unknown)}; nodes: {', '.join(n.name for n in plan.nodes)}"
        )
    _require_secrets(plan, only, force, main)
    if main:  # rank 0 holds the lock for the group (a launcher already holds it for us)
        from kdlang.cli.run_view import run_with_progress

        with _locked(cache, wait):
            result = run_with_progress(
                plan, root, only, force, device, fmt=fmt, quiet=quiet, verbose=verbose
            )
    else:  # another rank of a launched group: the same work, nothing printed
        from kdlang.runtime.executor import run_plan

        _quiet_libraries()
        result = run_plan(plan, workdir=root, only=only or None, force=force, device=device)
    if os.environ.get("WORLD_SIZE", "1") != "1":
        from kdlang.runtime.distributed import shutdown

        shutdown()  # every rank leaves the group together, before the interpreter tears down
    if not result.ok:
        raise typer.Exit(EXIT_ERRORS)


@contextmanager
def _locked(cache: str, wait: bool) -> Iterator[None]:
    """The cache lock for the run, or a clear stop (exit 1) when another process holds it."""
    from kdlang.plan.lock import CacheBusy, cache_lock

    def waiting(busy: CacheBusy) -> None:
        sys.stderr.write(f"waiting: {busy}\n")

    try:
        with cache_lock(cache, wait=wait, on_wait=waiting):
            yield
    except CacheBusy as busy:
        sys.stderr.write(
            f"error: {busy}; two runs on one cache would repeat each other's work. "
            "Wait for it (--wait), or give this run its own --cache.\n"
        )
        raise typer.Exit(EXIT_ERRORS) from None


def _require_secrets(plan, only: list[str], force: list[str], main: bool) -> None:
    """Stop before the first stage when a node that will run reads an unset ``env(...)``."""
    from kdlang.check.environment import env_refs, unset
    from kdlang.plan import needed
    from kdlang.syntax.diagnostics import Collector

    selected = needed(plan, only) if only else {n.name for n in plan.nodes}
    running = [
        n for n in plan.nodes if n.name in selected and (n.status != "cached" or n.name in force)
    ]
    missing = unset(ref for n in running for ref in env_refs(n.node, plan.recipe))
    if not missing:
        return
    errors = Collector()
    for ref in missing:
        errors.error(
            "KD0406",
            f"environment variable {ref.env} is not set, and a stage that will run reads it",
            ref.span,
            help=f"set it before running: export {ref.env}=...",
        )
    if main:
        print_diagnostics(errors.diagnostics, plan.program.sources, "text")
    raise typer.Exit(EXIT_ERRORS)


def launch_command(
    launcher: str | None,
    nproc: int | None,
    file: str,
    overrides: list[str],
    only: list[str],
    force: list[str],
    device: str,
    workdir: str,
    cache: str | None,
    nodes: Nodes | None = None,
) -> list[str]:
    """The command line that runs ``kdlang run`` with these arguments in ``nproc`` processes
    under ``launcher``. Usage errors (exit 2) for an unknown launcher, a count below 1, one
    option without the other, or a launch from inside a launched process."""
    if launcher is None:
        _usage("--nproc needs --launcher (torchrun or accelerate)")
    if launcher not in LAUNCHERS:
        _usage(f"--launcher must be one of {', '.join(LAUNCHERS)}, not {launcher!r}")
    if nproc is None:
        nproc = 1
    if nproc < 1:
        _usage(f"--nproc must be at least 1, not {nproc}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _usage(
            "this process was already started by a launcher (WORLD_SIZE is set); drop --launcher"
        )
    args = ["run", str(Path(file).resolve()), "--device", device, "--workdir", workdir]
    for flag, values in (("--set", overrides), ("--only", only), ("--force", force)):
        for value in values:
            args += [flag, value]
    if cache is not None:
        args += ["--cache", cache]
    nodes = nodes or Nodes()
    if launcher == "torchrun" and nodes.count > 1:
        host, port = nodes.endpoint
        head = ["-m", "torch.distributed.run", "--nnodes", str(nodes.count)]
        head += ["--node_rank", str(nodes.rank), "--master_addr", host, "--master_port", port]
        head += ["--nproc_per_node", str(nproc)]
    elif launcher == "torchrun":
        head = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    elif nodes.count > 1:
        host, port = nodes.endpoint
        head = ["-m", "accelerate.commands.launch", "--num_processes", str(nproc * nodes.count)]
        head += ["--num_machines", str(nodes.count), "--machine_rank", str(nodes.rank)]
        head += ["--main_process_ip", host, "--main_process_port", port, "--multi_gpu"]
        head += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    else:
        # accelerate's --cpu runs one process (several CPU processes need MPI there); its
        # --multi_gpu starts torch.distributed processes, which run on CPU as well (Gloo).
        head = ["-m", "accelerate.commands.launch", "--num_processes", str(nproc)]
        head += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if nproc > 1:
            head += ["--multi_gpu", "--main_process_port", str(_free_port())]
        elif device == "cpu":
            head += ["--cpu"]
    return [sys.executable, *head, "-m", "kdlang", *args]


@dataclass(frozen=True)
class Nodes:
    """The machines a launched run spans: ``count`` of them, this one numbered ``rank``, meeting
    at node 0's ``endpoint`` (host, port). Node 0's processes hold ranks 0 .. nproc-1, so its
    launcher holds the cache lock for the group; the cache and workdir must be on a filesystem
    every node shares (the executor checks)."""

    count: int = 1
    rank: int = 0
    endpoint: tuple[str, str] = ("127.0.0.1", "29500")

    @classmethod
    def given(
        cls, count: int, rank: int | None, endpoint: str | None, launcher: str | None
    ) -> Nodes:
        if count < 1:
            _usage(f"--nnodes must be at least 1, not {count}")
        if count == 1:
            if rank not in (None, 0) or endpoint is not None:
                _usage("--node-rank and --rdzv-endpoint need --nnodes 2 or more")
            return cls()
        if launcher is None:
            _usage("--nnodes needs --launcher (torchrun or accelerate)")
        if rank is None or endpoint is None:
            _usage("--nnodes needs --node-rank R and --rdzv-endpoint HOST:PORT (node 0's address)")
        assert rank is not None and endpoint is not None
        if not 0 <= rank < count:
            _usage(f"--node-rank must be 0 to {count - 1}, not {rank}")
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            _usage(f"--rdzv-endpoint must be HOST:PORT, not {endpoint!r}")
        return cls(count, rank, (host.strip("[]"), port))


def _rank() -> int:
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def _quiet_libraries() -> None:
    """Rank 0 shows what the libraries say; the other ranks would only repeat it."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        from datasets.utils import logging as ds_logging

        ds_logging.set_verbosity_error()
        ds_logging.disable_progress_bar()
    except ImportError:
        pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _usage(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(EXIT_USAGE)
