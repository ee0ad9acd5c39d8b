"""The report of ``multi_gpu.py``: its Markdown table of the runs (one row per run, the error of
a failed one in place of its measures), the memory and resume lines, and the end of the output
of each run that failed.
"""

from __future__ import annotations

from multi_gpu_runs import WARMUP


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
