"""The measured workloads of ``multi_gpu.py``: the recipe every run trains, the throughput runs
(``ddp`` on 1 process, ``ddp`` and ``fsdp`` on N) and the resume test (a run SIGKILLed on N
processes once checkpoint k is committed, resumed on one, compared step by step with an
uninterrupted run), each a row of measures for the report (:mod:`multi_gpu_report`).
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

from multi_gpu_launch import failure, finish, kdlang, kill, read_run, start

WARMUP = 2
"""Steps left out of the medians."""
STEP_KEYS = (
    "step",
    "loss",
    "sft",
    "forward_kl",
    "grad_norm",
    "tokens",
    "seconds",
    "gpu_memory_gib",
)
"""The values of each step that the saved results keep."""


def recipe_text(
    title: str, *, strategy, batch, grad_accum, steps, every, seq, checkpointing=False
) -> str:
    recompute = "\n  gradient_checkpointing = true" if checkpointing else ""
    return f"""recipe "{title}" {{
  seed = 0
}}

model student = hf("../models/student")
model teacher = hf("../models/teacher")
dataset rows = jsonl("../data/rows.jsonl", columns = ["prompt", "target"])
prompt ask = "{{{{ prompt }}}}"

train distill {{
  student = student  teacher = teacher  data = rows  prompt = ask  target = "target"
  max_steps = {steps}  batch = {batch}  grad_accum = {grad_accum}  max_length = {seq}
  lr = 1e-4  checkpoint_every = {every}  strategy = {strategy}{recompute}
  loss sft weight 0.2
  loss forward_kl weight 1.0 temperature 2.0
}}
"""


def measure(records: list[dict], nproc: int) -> dict:
    """Tokens/s (median over the steps after the warm-up), per GPU, and the peak memory."""
    timed = records[WARMUP:] if len(records) > WARMUP else records
    rate = statistics.median(r["tokens"] / r["seconds"] for r in timed)
    peaks = [r["gpu_memory_gib"] for r in records if "gpu_memory_gib" in r]
    return {
        "steps_recorded": len(records),
        "steps_timed": len(timed),
        "step_seconds": statistics.median(r["seconds"] for r in timed),
        "tokens_per_step": statistics.median(r["tokens"] for r in timed),
        "tokens_per_s": rate,
        "tokens_per_s_per_gpu": rate / nproc,
        "peak_gib": max(peaks) if peaks else None,
    }


class Bench:
    """The runs of one invocation: N processes (``--gpus``), B rows per process, the resume
    checkpoint k (half the steps, at least 2)."""

    def __init__(self, args, env, work: Path):
        self.args, self.env, self.work = args, env, work
        self.n, self.b = args.gpus, args.batch_per_gpu
        self.k = max(2, math.ceil(args.steps / 2))
        self.unit = "GPU" if args.device == "cuda" else "process"
        (work / "recipes").mkdir(exist_ok=True)

    def count(self, n: int) -> str:
        return f"{n} {self.unit}" + ("" if n == 1 else "es" if self.unit == "process" else "s")

    def recipe(self, name: str, title: str, row: dict, **settings) -> tuple[Path, str | None]:
        """Write ``recipes/<name>.kd`` and ``kdlang check`` it; an error text if it fails (its
        output goes to ``row["error_tail"]``)."""
        path = self.work / "recipes" / f"{name}.kd"
        text = recipe_text(
            title,
            seq=self.args.seq,
            checkpointing=self.args.gradient_checkpointing,
            **settings,
        )
        path.write_text(text, encoding="utf-8")
        checked = kdlang(self.env, self.work, "check", str(path))
        if checked.returncode == 0:
            return path, None
        output = (checked.stdout + checked.stderr).strip()
        row["error_tail"] = "\n".join(output.splitlines()[-30:])
        first = next((line for line in output.splitlines() if "error" in line), "")
        return path, f"kdlang check failed (exit status {checked.returncode}) {first.strip()}"

    def entry(self, key, label, nproc, strategy, batch, grad_accum, steps, every) -> dict:
        return {
            "key": key,
            "run": label,
            "processes": nproc,
            "strategy": strategy,
            "global_batch": batch,
            "grad_accum": grad_accum,
            "max_steps": steps,
            "checkpoint_every": every,
        }

    def throughput(self, nproc: int, strategy: str) -> dict:
        key, label = f"{strategy}{nproc}", f"{strategy}, {self.count(nproc)}"
        batch, steps = nproc * self.b, self.args.steps
        row = self.entry(key, label, nproc, strategy, batch, 1, steps, steps)
        recipe, error = self.recipe(
            key, f"multi-gpu-{key}", row, strategy=strategy, batch=batch, grad_accum=1,
            steps=steps, every=steps,
        )  # fmt: skip
        workdir = self.work / "workdirs" / key
        self.run(row, recipe, workdir, nproc, error)
        return row

    def run(self, row: dict, recipe: Path, workdir: Path, nproc: int, error=None, log="run"):
        """Run ``recipe`` to the end and fill ``row`` with its measures (or its error)."""
        began = time.monotonic()
        if error is None:
            process = start(self.env, recipe, workdir, nproc, self.args.device, log)
            row["command"] = " ".join(process.command)
            status = finish(process, self.args.timeout)
            try:
                if status is None:
                    raise RuntimeError("timed out")
                records, node = read_run(workdir)
                row.update(measure(records, nproc))
                row["loss_path"] = node["stats"].get("loss_path", {}).get("path")
                row["records"] = records
                row["node_stats"] = node["stats"]
                if status != 0:  # the train node finished; something failed after it
                    summary, row["error_tail"] = failure(workdir, log, status, 0)
                    row["warning"] = f"{summary}, after the train node had finished"
            except (OSError, ValueError, KeyError, RuntimeError) as problem:
                if status != 0:
                    error, row["error_tail"] = failure(workdir, log, status, self.args.timeout)
                else:
                    error = f"{type(problem).__name__}: {problem}"
        row["wall_s"] = round(time.monotonic() - began, 1)
        if error is not None:
            row["error"] = error
        said = error or (f"ok; {row['warning']}" if "warning" in row else "ok")
        print(f"  {row['run']}: {said} ({row['wall_s']:.0f} s)", flush=True)
        return row

    def resume(self) -> tuple[dict, dict, dict]:
        """The uninterrupted reference, the killed-and-resumed run, and their comparison."""
        n, k = self.n, self.k
        batch, steps = n * self.b, 2 * k
        settings = dict(strategy="fsdp", batch=batch, grad_accum=n, steps=steps, every=k)
        label = f"fsdp, {self.count(n)}, grad_accum {n}: resume reference"
        reference = self.entry("reference", label, n, "fsdp", batch, n, steps, k)
        recipe, error = self.recipe("resume", "multi-gpu-resume", reference, **settings)
        self.run(reference, recipe, self.work / "workdirs" / "reference", n, error)
        label = f"the same, killed on {self.count(n)}, resumed on 1"
        resumed = self.entry("resumed", label, 1, "fsdp", batch, n, steps, k)
        result = {"from_processes": n, "to_processes": 1, "checkpoint": k, "max_steps": steps}
        workdir = self.work / "workdirs" / "resume"
        if error is None:
            error = self.kill_at_checkpoint(recipe, workdir, resumed, result)
        if error is None:
            for report in (workdir / "runs").glob("*/report.json"):
                report.unlink()  # the killed run's, if it wrote one
            self.run(resumed, recipe, workdir, 1, log="resumed")
        else:
            resumed["error"] = error
            print(f"  {resumed['run']}: {error}", flush=True)
        if "records" in resumed:  # the resumed process's own steps only
            after = [r for r in resumed["records"] if r["step"] >= k]
            if after:
                resumed.update(measure(after, 1))
        result.update(compare(reference, resumed, k, steps))
        return reference, resumed, result

    def kill_at_checkpoint(self, recipe: Path, workdir: Path, row: dict, result: dict):
        """Run ``recipe`` on N processes until checkpoint k is committed, then SIGKILL it;
        returns an error text if that could not be done."""
        process = start(self.env, recipe, workdir, self.n, self.args.device, "killed")
        result["killed_command"] = " ".join(process.command)
        progress = workdir / ".kdcache" / "progress"
        deadline = time.monotonic() + self.args.timeout
        name = f"ckpt-{self.k:08d}"
        try:
            return self._watch(process, progress, name, deadline, workdir, row, result)
        except BaseException:
            kill(process)
            raise

    def _watch(self, process, progress, name, deadline, workdir, row, result):
        while True:
            found = [p for p in progress.glob(f"*/{name}") if p.is_dir()]
            if found:
                kill(process)
                metrics = found[0].parent / "metrics.jsonl"
                logged = len(metrics.read_bytes().splitlines()) if metrics.exists() else 0
                result["steps_logged_at_kill"] = logged
                result["checkpoint_folder"] = name
                print(f"  killed after {name} ({logged} steps logged)", flush=True)
                return None
            status = process.poll()
            if status is not None:
                summary, row["error_tail"] = failure(workdir, "killed", status, 0)
                return f"the run to kill ended before {name} was written ({summary})"
            if time.monotonic() > deadline:
                kill(process)
                return f"no {name} within {self.args.timeout} s"
            time.sleep(0.02)


def compare(reference: dict, resumed: dict, k: int, steps: int) -> dict:
    """Steps k..2k-1 of the resumed run against the uninterrupted one."""
    if "records" not in reference or "records" not in resumed:
        return {"error": resumed.get("error") or reference.get("error") or "no metrics"}
    recorded = [r["step"] for r in resumed["records"]]
    by_step = {r["step"]: r for r in reference["records"]}
    pairs = [(r, by_step.get(r["step"])) for r in resumed["records"] if r["step"] >= k]
    if any(b is None for _, b in pairs) or not pairs:
        return {"error": f"the reference lacks steps of the resumed run: {recorded}"}
    loss = max(abs(a["loss"] - b["loss"]) for a, b in pairs)
    norm = max(
        abs(a["grad_norm"] - b["grad_norm"]) / max(abs(b["grad_norm"]), 1e-12) for a, b in pairs
    )
    before = [(r, by_step.get(r["step"])) for r in resumed["records"] if r["step"] < k]
    return {
        "resumed_from_step": resumed["node_stats"].get("resumed_from_step"),
        "steps_recorded": recorded,
        "every_step_once": recorded == list(range(steps)),
        "compared_steps": [a["step"] for a, _ in pairs],
        "max_abs_dloss": loss,
        "max_rel_dgrad_norm": norm,
        "max_abs_dloss_before_kill": max(
            (abs(a["loss"] - b["loss"]) for a, b in before if b is not None), default=None
        ),
        "per_step": [
            {
                "step": a["step"],
                "loss": a["loss"],
                "reference_loss": b["loss"],
                "grad_norm": a["grad_norm"],
                "reference_grad_norm": b["grad_norm"],
            }
            for a, b in pairs
        ],
    }
