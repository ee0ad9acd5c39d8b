"""Distributed training on one machine, end to end through ``kdlang run``: throughput, scaling
and memory of ``ddp`` and ``fsdp``, and a run killed under N processes resumed under one.

    python benchmarks/multi_gpu.py [--gpus N] [--steps S] [--batch-per-gpu B] [--seq L]
                                   [--out DIR] [--small] [--device cuda|cpu] [--keep]
                                   [--timeout SECONDS] [--gradient-checkpointing]

Everything is built offline in a work folder (a temporary one; ``--keep`` keeps it): a
word-level tokenizer of 128,256 entries shared by a random-init Llama-3.2-1B-like student
(hidden 2048, 16 layers, 32/8 heads, MLP 8192, tied embeddings) and a random-init
Llama-3.2-3B-like teacher (hidden 3072, 28 layers, 24/8 heads, MLP 8192), both saved in bf16
(the loop trains fp32 master weights of the student; the teacher runs online in bf16), and a
JSONL dataset whose every row tokenizes to exactly L tokens: 64 prompt words, then target
words and the EOS. ``--small`` shrinks the models as ``train_step.py --small`` does (hidden/16,
2 layers, vocabulary/16) and L to 128.

Each run is ``kdlang run RECIPE --launcher torchrun --nproc N --device D --workdir W`` (plain
``kdlang run`` for one process) in its own work folder, with ``loss sft weight 0.2`` and
``loss forward_kl weight 1.0 temperature 2.0``, B rows per process and micro-batch:

- ``ddp`` on 1 process (global batch B), ``ddp`` and ``fsdp`` on N (global batch N·B): tokens/s
  (the target tokens of a step over its time, median after 2 warm-up steps), per GPU, scaling
  efficiency (per-GPU tokens/s at N over tokens/s at 1), and rank 0's peak GPU memory;
- resume: one recipe (``fsdp``, global batch N·B, ``grad_accum = N``, ``checkpoint_every = k``,
  ``max_steps = 2k``) runs uninterrupted on N processes; in another folder it runs on N
  processes until checkpoint k is committed, is SIGKILLed (every process), and ``kdlang run``
  resumes it in one process, which then holds the whole global batch in N micro-batches of B
  rows (what a rank of the ``ddp`` runs holds). Steps k..2k-1 are compared with the
  uninterrupted run (max |Δloss|, max relative Δgrad_norm) and every step must be recorded once.

Defaults: every visible GPU (2 processes on CPU), 10 steps, B = 4, L = 2048, 30 minutes at most
per run (``--timeout``). With N = 1 only the 1-process rows and a 1 → 1 resume run.
``--small --device cpu`` runs the same on a CPU (Gloo, one thread per process). A failed run's
error goes in the table (the end of its output below it) and the others go on. Results go to
``--out`` as ``multi_gpu_<gpu>_x<N>[_small].json`` (with each step's loss, gradient norm, time
and memory) and ``.md``.

The ``kdlang`` run is the one importable from outside this checkout when it is this checkout's
(an editable install); otherwise a folder of links mirroring the install mapping
(``runtime/`` → ``kdlang.runtime``, ``grammar/`` → ``kdlang.grammar``) is put first on the
``PYTHONPATH`` every process inherits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import shapes
from shapes import STUDENT, TEACHER
from source_tree import ROOT, link_package

sys.path.insert(0, str(ROOT))  # for tests.runtime.distributed.support
from tests.runtime.distributed.support import kill

PROMPT_WORDS = 64
WARMUP = 2
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
UNK, BOS, EOS, PAD = "<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
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


# -- models, tokenizer and data -----------------------------------------------------------------


def llama_config(shape: dict, vocab: int, small: bool, seq: int, specials: dict):
    return shapes.llama_config(
        shape,
        vocab,
        small=small,
        max_position_embeddings=max(8192, seq),
        bos_token_id=specials[BOS],
        eos_token_id=specials[EOS],
        pad_token_id=specials[PAD],
    )


def build_assets(spec: dict) -> None:
    """Write the tokenizer, the two models and the dataset into ``spec["work"]`` and what was
    built into ``assets.json`` (run in a process of its own, so that its GPU memory is freed
    before the runs)."""
    import numpy as np
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging

    logging.disable_progress_bar()
    work, seq, small = Path(spec["work"]), spec["seq"], spec["small"]
    vocab = shapes.vocab(small)
    words = [f"w{i}" for i in range(vocab - 4)]
    table = {token: i for i, token in enumerate([UNK, BOS, EOS, PAD, *words])}
    core = Tokenizer(models.WordLevel(table, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token=UNK, eos_token=EOS, pad_token=PAD
    )

    device = torch.device("cuda" if spec["device"] == "cuda" else "cpu")
    info = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "vocab": vocab,
    }
    for index, (name, shape) in enumerate((("student", STUDENT), ("teacher", TEACHER))):
        config = llama_config(shape, vocab, small, seq, table)
        torch.manual_seed(spec["seed"] + index)
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with device:
                model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(default)
        folder = work / "models" / name
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        info[name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "hidden": config.hidden_size,
            "layers": config.num_hidden_layers,
        }
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # Rows of random words: the plain prompt (no special tokens), then the target and its EOS.
    prompt_words = min(PROMPT_WORDS, seq // 2)
    generator = np.random.default_rng(spec["seed"])
    picks = generator.integers(0, len(words), size=(spec["rows"], seq - 1))
    rows = [
        {
            "prompt": " ".join(words[i] for i in row[:prompt_words]),
            "target": " ".join(words[i] for i in row[prompt_words:]),
        }
        for row in picks
    ]
    data = work / "data" / "rows.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    # As the training loop will read them: loaded from the model folder, the prompt with the
    # tokenizer's usual special tokens, the target without, EOS appended.
    loaded = AutoTokenizer.from_pretrained(work / "models" / "student")
    prompts = loaded([r["prompt"] for r in rows], add_special_tokens=True)["input_ids"]
    targets = loaded([r["target"] for r in rows], add_special_tokens=False)["input_ids"]
    lengths = {len(p) + len(t) + 1 for p, t in zip(prompts, targets, strict=True)}
    for ok, problem in (
        (len(loaded) == vocab, f"the tokenizer has {len(loaded)} entries, not {vocab}"),
        (loaded.eos_token_id == table[EOS] and loaded.pad_token_id == table[PAD], "eos/pad"),
        (not getattr(loaded, "chat_template", None), "a chat template: prompts must stay plain"),
        (lengths == {seq}, f"rows tokenize to {sorted(lengths)} tokens, not {seq}"),
        (all(table[UNK] not in p + t for p, t in zip(prompts, targets, strict=True)), "<unk>"),
    ):
        if not ok:
            raise RuntimeError(f"the tokenizer or the data is wrong: {problem}")
    info.update(rows=len(rows), prompt_tokens=prompt_words, target_tokens=seq - prompt_words)
    (work / "assets.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")


# -- recipes and runs ---------------------------------------------------------------------------


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
    """The train node of the run's report and its ``metrics.jsonl`` records."""
    (report,) = (workdir / "runs").glob("*/report.json")
    document = json.loads(report.read_text(encoding="utf-8"))
    node = next(n for n in document["nodes"] if n["name"] == "distill")
    if node["status"] not in ("ran", "cached") or not node["output"]:
        raise RuntimeError(f"the train node {node['status']}: {node.get('error')}")
    folder = Path(node["output"])
    folder = folder if folder.is_absolute() else workdir / folder
    lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines], node


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


# -- the report ---------------------------------------------------------------------------------


def cell(text: str, width: int = 240) -> str:
    line = " ".join(text.split()).replace("|", "\\|")
    return line if len(line) <= width else line[:width] + " ..."


def table(document: dict) -> str:
    rows, unit, n = document["runs"], document["unit"], document["gpus"]
    b, seq = document["batch_per_gpu"], document["seq"]
    lines = [
        f"Device: {document['device']} x {n}, torch {document['torch']}. Random-init Llama "
        f"student ({size(document['student'])}) and online teacher ({size(document['teacher'])}), "
        f"vocabulary {document['vocab']:,}; loss sft 0.2 + forward_kl 1.0 at T = 2. Rows of "
        f"{seq} tokens ({document['target_tokens']} of them target tokens), {b} rows per {unit} "
        f"and step (global batch: {b} x processes), one micro-batch"
        + (", gradient_checkpointing on. " if document.get("gradient_checkpointing") else ". ")
        + (
            f"The resume recipe has grad_accum = {n}: one process runs a step in micro-batches "
            f"of {b} rows, {n} processes in micro-batches of {-(-b // n)}. "
            if n > 1
            else ""
        )
        + "Tokens/s: "
        f"target tokens of a step over its time, median over the steps after {WARMUP} warm-up "
        f"steps (the resumed run: over its own steps); peak GiB: rank 0's.",
        "",
        f"| run | processes | strategy | global batch | grad_accum | tokens/s | tokens/s per "
        f"{unit} | scaling efficiency | peak GiB per {unit} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        head = (
            f"| {row['run']} | {row['processes']} | {row['strategy']} | {row['global_batch']} "
            f"| {row['grad_accum']} |"
        )
        if "error" in row and "tokens_per_s" not in row:
            lines.append(f"{head} error: {cell(row['error'])} | | | |")
            continue
        efficiency = row.get("scaling_efficiency")
        peak = row.get("peak_gib")
        lines.append(
            f"{head} {row['tokens_per_s']:,.0f} | {row['tokens_per_s_per_gpu']:,.0f} | "
            f"{'' if efficiency is None else f'{efficiency:.2f}'} | "
            f"{'n/a' if peak is None else f'{peak:.2f}'} |"
        )
    lines.append("")
    memory = document.get("fsdp_vs_ddp_peak")
    if memory:
        lines.append(
            f"FSDP vs DDP peak memory per {unit}, {n} processes: {memory['fsdp']:.2f} vs "
            f"{memory['ddp']:.2f} GiB ({memory['ratio']:.2f}x)."
        )
    lines.append(resume_line(document["resume"], unit))
    for row in rows:
        if "warning" in row:
            lines += ["", f"Warning, {row['run']}: {row['warning']}."]
    failed = [row for row in rows if row.get("error_tail")]
    if failed:
        lines += ["", "The end of the output of each run that exited with an error:"]
    for row in failed:
        lines += ["", f"{row['run']}:", "", "```", row["error_tail"], "```"]
    return "\n".join(lines) + "\n"


def size(model: dict) -> str:
    count = model["parameters"]
    scaled = f"{count / 1e9:.2f}B" if count >= 1e8 else f"{count / 1e6:.1f}M"
    return f"{scaled} parameters, hidden {model['hidden']}, {model['layers']} layers"


def resume_line(resume: dict, unit: str) -> str:
    n, k, steps = resume["from_processes"], resume["checkpoint"], resume["max_steps"]
    head = f"Resume {n} -> 1 (fsdp, checkpoint_every {k}, max_steps {steps}): "
    if "error" in resume:
        return head + f"error: {cell(resume['error'])}"
    once = "yes" if resume["every_step_once"] else f"no ({resume['steps_recorded']})"
    return head + (
        f"SIGKILLed after ckpt-{k} with {resume.get('steps_logged_at_kill')} steps logged, "
        f"resumed by 1 {unit} from step {resume['resumed_from_step']}; steps {k}..{steps - 1} "
        f"against the uninterrupted {n}-process run: max |Δloss| = "
        f"{resume['max_abs_dloss']:.2e}, max relative Δgrad_norm = "
        f"{resume['max_rel_dgrad_norm']:.2e}; every step recorded once: {once}."
    )


# -- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=None, help="N (default: every GPU; 2 on CPU)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps of a run")
    parser.add_argument("--batch-per-gpu", type=int, default=4, help="rows per process")
    parser.add_argument("--seq", type=int, default=2048, help="tokens per row")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--small", action="store_true", help="tiny models, 128 tokens per row")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="every run's train recomputes the student's layers in backward (outputs *_checkpointing)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    args = parser.parse_args()
    if args.small:
        args.seq = min(args.seq, 128)
    if args.seq < 2 * 8 or args.steps < 1 or args.batch_per_gpu < 1:
        parser.error("--seq must be at least 16, --steps and --batch-per-gpu at least 1")
    return args


def main() -> None:
    args = parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here (--device cpu runs on the CPU)")
    visible = torch.cuda.device_count() if args.device == "cuda" else None
    args.gpus = args.gpus or (visible if args.device == "cuda" else 2)
    if visible is not None and args.gpus > visible:
        sys.exit(f"--gpus {args.gpus}: only {visible} GPUs are visible")
    n, b = args.gpus, args.batch_per_gpu
    work = Path(tempfile.mkdtemp(prefix="kdlang-multi-gpu-"))
    print(f"work folder: {work}", flush=True)
    try:
        env, source = python_env(work, args.device)
        k = max(2, math.ceil(args.steps / 2))
        spec = {
            "work": str(work),
            "seq": args.seq,
            "small": args.small,
            "device": args.device,
            "seed": 0,
            "rows": n * b * max(args.steps, 2 * k),
        }
        began = time.monotonic()
        builder = multiprocessing.get_context("spawn").Process(target=build_assets, args=(spec,))
        builder.start()
        builder.join()
        if builder.exitcode != 0:
            sys.exit(f"building the models and data failed (exit status {builder.exitcode})")
        assets = json.loads((work / "assets.json").read_text(encoding="utf-8"))
        print(f"models and data built ({time.monotonic() - began:.0f} s)", flush=True)

        bench = Bench(args, env, work)
        scaling = [bench.throughput(1, "ddp")]
        if n > 1:
            scaling += [bench.throughput(n, "ddp"), bench.throughput(n, "fsdp")]
        reference, resumed, resume = bench.resume()
        rows = [*scaling, reference, resumed]

        single = scaling[0].get("tokens_per_s")
        for row in scaling:
            if single and "tokens_per_s" in row:
                row["scaling_efficiency"] = row["tokens_per_s_per_gpu"] / single
        peaks = {r["strategy"]: r.get("peak_gib") for r in scaling[1:]}
        document = {
            "device": assets["device_name"],
            "gpus": n,
            "gpus_visible": visible,
            "unit": bench.unit,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "kdlang_runtime": source,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "small": args.small,
            "gradient_checkpointing": args.gradient_checkpointing,
            "seq": args.seq,
            "batch_per_gpu": b,
            "steps": args.steps,
            "warmup_steps": WARMUP,
            "vocab": assets["vocab"],
            "rows": assets["rows"],
            "target_tokens": assets["target_tokens"],
            "student": assets["student"],
            "teacher": assets["teacher"],
            "runs": rows,
            "resume": resume,
        }
        if n > 1 and peaks.get("ddp") and peaks.get("fsdp"):
            document["fsdp_vs_ddp_peak"] = {
                "ddp": peaks["ddp"],
                "fsdp": peaks["fsdp"],
                "ratio": peaks["fsdp"] / peaks["ddp"],
            }
        text = table(document)
        print("\n" + text, flush=True)
        words = assets["device_name"].split() or ["gpu"]
        gpu = "cpu" if args.device == "cpu" else words[min(1, len(words) - 1)].lower()
        slug = f"{gpu}_x{n}" + ("_small" if args.small else "")
        slug += "_checkpointing" if args.gradient_checkpointing else ""
        args.out.mkdir(parents=True, exist_ok=True)
        for row in rows:  # each step's main values stay
            records = row.pop("records", [])
            row["per_step"] = [{key: r.get(key) for key in STEP_KEYS} for r in records]
        (args.out / f"multi_gpu_{slug}.json").write_text(
            json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8"
        )
        (args.out / f"multi_gpu_{slug}.md").write_text(text, encoding="utf-8")
        print(f"saved {args.out / f'multi_gpu_{slug}.json'} and .md", flush=True)
    finally:
        if args.keep:
            print(f"kept the work folder: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
