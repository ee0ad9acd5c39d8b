"""One distillation training step on one GPU: the fused-linear loss path against materialized
logits with the torch loss.

    python benchmarks/train_step.py [--batch 4] [--seq 2048] [--steps 5] [--warmup 2]
                                    [--checkpointing both|off|on] [--bodies eager|compiled|both]
                                    [--paths fused_linear,materialized] [--no-heads]
                                    [--out DIR] [--small]

Student: a random-init Llama-3.2-1B-like model (hidden 2048, 16 layers, 32/8 heads, MLP 8192,
vocabulary 128,256, tied embeddings) with fp32 master weights, bf16 autocast and AdamW (fused on
CUDA), as the training loop runs it. Teacher: a random-init Llama-3.2-3B-like model (hidden 3072, 28 layers,
24/8 heads, MLP 8192), bf16, forward in ``torch.no_grad``. Loss: forward KL at T = 2 on every
position, through the training loop's own code (``Objective.micro_loss``):

- ``materialized``: both models compute their full ``[B·L, V]`` logits; the torch loss;
- ``fused_linear``: both models stop at their last hidden states; the lm_heads and the loss run
  chunk by chunk in the fused kernel, so the full logits never exist.

A step is forward, backward, gradient clipping and the AdamW update. The table gives tokens/s
(``batch × seq`` over the median step time) and the peak memory allocated during a step. It also
times the lm_heads + loss alone (given the two models' last hidden states), where the paths
differ, including the materialized logits with the fused divergence kernel instead of the torch
loss. ``--checkpointing on`` recomputes the student's layers in the backward pass (activation
checkpointing), which leaves more of the memory to the loss path. ``--small`` shrinks every
shape for a quick check (it also runs on CPU, where the fused path uses the torch reference).
``--bodies compiled`` compiles both models' decoder layers as a train with ``compile = true``
does (regional compilation, :mod:`kdlang.runtime.train.compile`) and times the steps again
(``first_step_seconds`` holds the compile time).

Results go to ``--out`` as ``train_step_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from shapes import STUDENT, TEACHER, llama_config, vocab
from source_tree import ROOT, use_checkout

TEMPERATURE = 2.0


@dataclass(frozen=True)
class ForwardKL:
    """``loss forward_kl weight 1 temperature 2`` as the objective reads it (the descriptor of
    the IR's ``ForwardKL``, settled), without the language side."""

    name: str = "forward_kl"
    learns_from: str = "tokens"
    teacher: str = "logits"
    on_policy: bool = True
    kernel_mode: str = "forward_kl"
    scheduled: tuple[str, ...] = ("weight", "temperature")
    weight: float = 1.0
    temperature: float = TEMPERATURE
    temperature_scale: bool = False
    topk_mass: str = "renormalize"
    reduction: str = "token_mean"

    def at_step(self, step: int, total_steps: int) -> ForwardKL:
        return self

    def kernel_options(self) -> dict[str, float]:
        return {}


def bootstrap() -> None:
    """Import ``kdlang.runtime`` from this checkout when kdlang is not installed. Only the
    runtime is imported, so the language side's dependencies need not be there."""
    use_checkout("kdlang.runtime.train.objective")


def build(args, device):
    import torch
    from transformers import LlamaForCausalLM

    size = vocab(args.small)
    student_config = llama_config(STUDENT, size, small=args.small)
    teacher_config = llama_config(TEACHER, size, small=args.small)
    torch.manual_seed(0)
    with torch.device(device):
        student = LlamaForCausalLM(student_config)
        torch.set_default_dtype(torch.bfloat16 if device.type == "cuda" else torch.float32)
        teacher = LlamaForCausalLM(teacher_config).eval().requires_grad_(False)
        torch.set_default_dtype(torch.float32)
    return student, teacher


def batch_of(args, vocab, device):
    import torch
    from kdlang.runtime.train.examples import Batch

    generator = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=generator).to(device)
    labels = ids[:, 1:].clone()  # every position is a target
    mask = torch.ones_like(ids)
    return Batch(ids, mask, labels, labels)


def make_step(path, student, teacher, batch, device, checkpointing):
    """A closure running one training step on ``path``; returns the loss."""
    import torch
    from kdlang.runtime.train import models as md
    from kdlang.runtime.train.objective import Models, Objective, StepLosses

    enable = (
        getattr(student, "activation_checkpointing_enable", None)
        or student.gradient_checkpointing_enable
    )
    disable = (
        getattr(student, "activation_checkpointing_disable", None)
        or student.gradient_checkpointing_disable
    )
    if checkpointing:
        enable({"use_reentrant": False})
    else:
        disable()
    backend = "torch" if path == "materialized" else "auto"
    objective = Objective(
        [ForwardKL()], total_steps=1, teacher="online", path=path, backend=backend
    )
    models = Models(
        student, student.get_output_embeddings(), teacher, teacher.get_output_embeddings()
    )
    settled = StepLosses(step=0, on_policy=0.0, lines=tuple(objective.lines))
    counts = {"tokens": batch.tokens, "kd_tokens": batch.tokens, "pairs": 0}
    settings = SimpleNamespace(lr=1e-6, weight_decay=0.0, betas=(0.9, 0.999))
    optimizer = md.optimizer([student], settings)  # the training loop's (fused on CUDA)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        student.train()
        with autocast:
            loss, _ = objective.micro_loss(models, settled, counts, tokens=batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step, optimizer


def measure(fn, warmup, repeat, device):
    """(median seconds, peak GiB allocated during the timed calls, last result)."""
    import torch

    result = None
    for _ in range(warmup):
        result = fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - began)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return statistics.median(times), peak, result


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def full_steps(args, student, teacher, batch, device, bodies="eager"):
    import torch

    rows = []
    modes = {"both": (False, True), "off": (False,), "on": (True,)}[args.checkpointing]
    for checkpointing in modes:
        for path in args.paths.split(","):
            step = optimizer = None
            entry = {"case": f"train step ({bodies} bodies)", "path": path}
            entry["checkpointing"] = checkpointing
            try:
                step, optimizer = make_step(path, student, teacher, batch, device, checkpointing)
                began = time.perf_counter()
                step()
                sync(device)
                entry["first_step_seconds"] = time.perf_counter() - began
                seconds, peak, loss = measure(step, args.warmup, args.steps, device)
                entry.update(seconds=seconds, peak_gib=peak, loss=float(loss))
                entry["tokens_per_s"] = batch.input_ids.numel() / seconds
            except torch.OutOfMemoryError:
                entry["error"] = "out of memory"
            del step, optimizer
            student.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            rows.append(entry)
            print(json.dumps(entry), flush=True)
    return rows


def head_and_loss(args, student, teacher, batch, device):
    """The lm_heads + loss alone, from the two models' last hidden states."""
    import torch
    from kdlang.runtime.losses.divergence_sums import divergence_sum, fused_divergence_sum

    with (
        torch.no_grad(),
        torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"),
    ):
        kwargs = {"input_ids": batch.input_ids, "output_hidden_states": True, "logits_to_keep": 1}
        h_s = student(**kwargs).hidden_states[-1][:, :-1].float().contiguous()
        h_t = teacher(**kwargs).hidden_states[-1][:, :-1].contiguous()
    head_s, head_t = student.get_output_embeddings(), teacher.get_output_embeddings()
    labels = batch.labels
    settings = {"kind": "forward_kl", "temperature": TEMPERATURE}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    hidden = h_s.requires_grad_(True)

    def materialized(backend):
        def run():
            with autocast:
                z_s, z_t = head_s(hidden), head_t(h_t)
                loss = divergence_sum(z_s, labels, teacher_logits=z_t, backend=backend, **settings)
            loss.backward()
            return loss.detach()

        return run

    def fused():
        with autocast:
            loss = fused_divergence_sum(hidden, head_s, h_t, head_t, labels, **settings)
        loss.backward()
        return loss.detach()

    cases = {"materialized (torch loss)": materialized("torch"), "fused_linear": fused}
    if device.type == "cuda":
        cases["materialized (fused divergence kernel)"] = materialized("triton")
    rows, losses = [], {}
    for name, fn in cases.items():
        entry = {"case": "lm_heads + loss", "path": name}
        try:
            seconds, peak, loss = measure(fn, args.warmup, args.steps * 2, device)
            losses[name] = float(loss)
            entry.update(seconds=seconds, peak_gib=peak, loss=float(loss))
            entry["tokens_per_s"] = labels.numel() / seconds
        except torch.OutOfMemoryError:
            entry["error"] = "out of memory"
        hidden.grad = None
        student.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(entry)
        print(json.dumps(entry), flush=True)
    reference = losses.get("materialized (torch loss)")
    for row in rows:
        if reference and "loss" in row:
            row["loss_rel_diff"] = abs(row["loss"] - reference) / abs(reference)
    return rows


def table(rows, device_name, args) -> str:
    lines = [
        f"Device: {device_name}. Batch {args.batch} x {args.seq} tokens, forward KL at T = 2, "
        "bf16 autocast; median of the timed steps.",
        "",
        "| case | path | student act. checkpointing | tokens/s | time (ms) | peak GiB "
        "| vs materialized |",
        "|---|---|---|---|---|---|---|",
    ]
    baseline = {
        (row["case"], row.get("checkpointing")): row
        for row in rows
        if row["path"] in ("materialized", "materialized (torch loss)")
    }
    for row in rows:
        ckpt = {None: "", False: "off", True: "on"}[row.get("checkpointing")]
        if "error" in row:
            lines.append(f"| {row['case']} | {row['path']} | {ckpt} | {row['error']} | | | |")
            continue
        base = baseline.get((row["case"], row.get("checkpointing")))
        versus = ""
        if base is not None and base is not row and "seconds" in base:
            versus = (
                f"{base['seconds'] / row['seconds']:.2f}x tokens/s, "
                f"{row['peak_gib'] / base['peak_gib']:.2f}x memory"
            )
        lines.append(
            f"| {row['case']} | {row['path']} | {ckpt} | {row['tokens_per_s']:,.0f} | "
            f"{row['seconds'] * 1e3:.1f} | {row['peak_gib']:.2f} | {versus} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--checkpointing", choices=("both", "off", "on"), default="both")
    parser.add_argument("--bodies", choices=("eager", "compiled", "both"), default="eager")
    parser.add_argument("--paths", default="fused_linear,materialized", help="loss paths stepped")
    parser.add_argument("--no-heads", action="store_true", help="skip the lm_heads + loss cases")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    bootstrap()
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    if args.small:
        args.seq = min(args.seq, 256)
    student, teacher = build(args, device)
    batch = batch_of(args, student.config.vocab_size, device)
    rows = [] if args.no_heads else head_and_loss(args, student, teacher, batch, device)
    if args.bodies in ("eager", "both"):
        rows += full_steps(args, student, teacher, batch, device)
    if args.bodies in ("compiled", "both"):
        from kdlang.runtime.train.compile import compile_layers

        compiled = compile_layers(student), compile_layers(teacher)
        print(json.dumps({"compiled_layers": compiled}), flush=True)
        rows += full_steps(args, student, teacher, batch, device, bodies="compiled")
    slug = "cpu" if device.type == "cpu" else name.split()[1].lower()
    slug += "_small" if args.small else ""
    args.out.mkdir(parents=True, exist_ok=True)
    document = {
        "device": name,
        "torch": torch.__version__,
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "warmup": args.warmup,
        "small": args.small,
        "rows": rows,
    }
    (args.out / f"train_step_{slug}.json").write_text(json.dumps(document, indent=1) + "\n")
    text = table(rows, name, args)
    (args.out / f"train_step_{slug}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
