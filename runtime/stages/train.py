"""``train NAME { student = .. data = .. loss ... }``: train the student; the loop itself is
:mod:`kdlang.runtime.train.loop`.

The artifact holds ``model/`` (the trained student, ``save_pretrained`` with its tokenizer, LoRA
merged in), ``adapter/`` for a LoRA student, ``metrics.jsonl`` (one record per step),
``tensorboard/`` and ``loss_curves.png`` (listed in the manifest's ``pictures``, so the run
report shows it). Checkpoints and live metrics are kept in the stage's progress folder while
it runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import nn

from kdlang.plan import PlanNode

from ..context import StageContext
from ..train import checkpoint
from ..train.fsdp import full_state
from ..train.job import build_job
from ..train.loop import fit
from ..train.metrics import METRICS, PICTURE, TIMINGS, plot_curves
from ..train.models import load_trainable, save_student


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    train = node.node
    job = build_job(train, ctx)
    ctx.start(job.total_steps, f"{node.name} (train)")
    shown = [0]

    def advance(window: list[dict]) -> None:  # a resumed run starts past its first steps
        last = window[-1]["step"] + 1
        loss = sum(r["loss"] for r in window) / len(window)
        ctx.advance(last - shown[0], status=f"loss {loss:.4g}")
        shown[0] = last

    job.on_log = advance
    records = fit(job)
    if job.resumed_from:
        ctx.stats["resumed_from_step"] = job.resumed_from
    job.dist.barrier()
    student = job.models.student
    if job.sharded:  # gather the trained weights into an unsharded student on rank 0
        names = {f"student.{n}" for n, p in student.named_parameters() if p.requires_grad}
        weights, _ = full_state(nn.ModuleDict({"student": student}), None, names)
        if job.dist.is_main:
            student = job.reload()
            load_trainable({"student": student}, weights)
    if not job.dist.is_main:  # rank 0 writes the artifact; the executor waits for every rank
        return {}
    written = save_student(student, job.tokenizer, out)
    shutil.copyfile(job.folder / METRICS, out / METRICS)
    shutil.copyfile(job.folder / TIMINGS, out / TIMINGS)
    if (job.folder / "tensorboard").is_dir():
        shutil.copytree(job.folder / "tensorboard", out / "tensorboard")
    plot_curves(records, [t.key for t in job.objective.lines], out / PICTURE)
    if train.save_total_limit is not None:  # kept checkpoints outlive the run's progress
        ctx.stats["checkpoints"] = checkpoint.keep_in(job.folder, out)
    last = records[-1] if records else {}
    return {
        "rows": len(job.examples) or len(job.pairs),
        "steps": job.total_steps,
        "student": train.student.name,
        "lora": "adapter" in written,
        "loss_path": job.objective.path,
        "final": {k: last[k] for k in ["loss", *(t.key for t in job.objective.lines)] if k in last},
        "pictures": [PICTURE],
    }
