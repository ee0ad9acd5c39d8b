"""The training loop, top to bottom.

For each optimizer step s (resuming at the last checkpoint's step):

1. settle the losses at s (:meth:`.Objective.at_step`: loss weights, temperatures, β, α, and
   λ) and set the learning rate to ``lr · lr_schedule.factor(s, total)``;
2. take the step's rows (a pure function of s: :class:`DataOrder`), this process's share of them;
   with probability λ(s) replace their targets by the student's own samples (GKD);
3. count what the step's losses are averaged over (target positions, teacher positions, pairs),
   summed over processes;
4. for each of ``grad_accum`` micro-batches: forward (autocast), the composed loss, backward;
5. sum gradients over processes (``ddp``; ``fsdp`` reduce-scatters them in the backward passes),
   clip their norm, AdamW step;
6. append the step's record to ``metrics.jsonl`` and TensorBoard; every ``checkpoint_every``
   steps commit a checkpoint (weights, optimizer, RNG states, data position).

Everything random is either seeded by the step (data order, on-policy draws, samples) or part of
the checkpoint (the generators dropout uses), so a resumed run continues the same trajectory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from ..distributed import Dist
from . import checkpoint, fsdp
from .examples import (
    DataOrder,
    Example,
    Pair,
    collate,
    collate_pairs,
    micro_batches,
    truncate,
)
from .metrics import METRICS, Board, MetricsLog
from .models import (
    enable_gradient_checkpointing,
    load_trainable,
    optimizer,
    precision,
    trainable_state,
)
from .objective import Models, Objective
from .onpolicy import is_on_policy, sample_targets


@dataclass
class Job:
    """Everything a run of the loop needs, already loaded. ``train`` is the IR ``train`` node
    (its settings); ``examples`` and ``pairs`` are indexed by data row (either may be empty);
    ``reference``: ``[rows, 2]`` log-probs of each pair's chosen and rejected response under
    the initial student (``dpo``); ``folder``: where checkpoints and live metrics go;
    ``online``: the teacher runs online (every target position has a teacher distribution)."""

    train: object
    objective: Objective
    models: Models
    tokenizer: object
    examples: list[Example]
    folder: Path
    total_steps: int
    seed: int
    device: torch.device
    pairs: list[Pair] = field(default_factory=list)
    reference: torch.Tensor | None = None
    online: bool = False
    sample_batch: int = 16
    dist: Dist = field(default_factory=Dist)
    on_log: Callable[[list[dict]], None] | None = None
    """Called with the records of each ``log_every`` window as they are written."""
    resumed_from: int = 0
    strategy: str = "ddp"
    reload: Callable[[], nn.Module] | None = None
    """A fresh, unsharded student (its initial weights): where ``fsdp``'s trained weights are
    gathered to be saved."""

    @property
    def sharded(self) -> bool:
        """The student is sharded over the processes (``fsdp`` with more than one)."""
        return self.strategy == "fsdp" and self.dist.active

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id or 0


def fit(job: Job) -> list[dict]:
    """Train from the last checkpoint (or the start) to ``total_steps``; returns the records of
    every step."""
    train, objective, dist = job.train, job.objective, job.dist
    student = job.models.student
    if train.gradient_checkpointing:  # before sharding: FSDP wraps the checkpointed layers
        enable_gradient_checkpointing(student)
    if job.sharded:
        fsdp.shard(student, job.device, dist.world)
    trainable = {"student": student, "projections": objective.projections}
    objective.projections.to(job.device)
    holder = nn.ModuleDict(trainable)  # names parameters as checkpoints do: student.*, ...
    names = {name for name, p in holder.named_parameters() if p.requires_grad}
    params = [p for m in trainable.values() for p in m.parameters() if p.requires_grad]
    # Gradients summed by hand: all of them (ddp), or the replicated projections' (fsdp).
    summed = [p for p in objective.projections.parameters() if p.requires_grad]
    summed = summed if job.sharded else params
    adamw = optimizer(list(trainable.values()), train)
    autocast = precision(train.precision, job.device)
    order = DataOrder(max(len(job.examples), len(job.pairs)), train.batch, job.seed)

    start = 0
    saved = checkpoint.load_latest(job.folder, dist.rank, dist.world)
    if saved is not None:
        if job.sharded:
            weights = saved.weights() if dist.is_main else {}
            fsdp.load_full_state(
                holder,
                adamw,
                weights.get("trainable", {}),
                weights.get("optimizer"),
                names,
                dist.is_main,
            )
        else:
            weights = saved.weights()
            load_trainable(trainable, weights["trainable"])
            set_optimizer_state(holder, adamw, weights["optimizer"])
        start = job.resumed_from = saved.step
        if saved.rng is not None:
            checkpoint.set_rng_state(saved.rng)
        else:  # written by another number of processes
            checkpoint.seed_rng(job.seed, start, dist.rank)
    else:
        torch.manual_seed(job.seed + dist.rank)
    log = MetricsLog(job.folder / METRICS, start=start, write=dist.is_main)
    board = Board(job.folder / "tensorboard", start=start, write=dist.is_main)
    models = replace(job.models, head_call=fsdp.head_call(student) if job.sharded else None)
    if train.compile:
        models = replace(models, student=torch.compile(student))

    window: list[dict] = []  # records not yet written
    try:
        for step in range(start, job.total_steps):
            began = time.perf_counter()
            if job.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(job.device)
            settled = objective.at_step(step)
            lr = train.lr * train.lr_schedule.factor(step, job.total_steps)
            for group in adamw.param_groups:
                group["lr"] = lr

            step_rows = order.step_rows(step)
            rows = dist.shard(step_rows)
            examples = [job.examples[r] for r in rows] if job.examples else []
            pairs = [job.pairs[r] for r in rows] if job.pairs else []
            on_policy = is_on_policy(job.seed, step, settled.on_policy)
            if on_policy and job.sharded and job.examples:
                # Every rank decodes the whole step (the same forwards on every rank), then
                # keeps its share.
                everyone = [job.examples[r] for r in step_rows]
                with autocast():
                    examples = dist.shard(student_samples(job, student, everyone, step))
            elif on_policy and examples:
                with autocast():
                    examples = student_samples(job, student, examples, step)
            counts = step_counts(examples, pairs, job.online or on_policy, dist, job.device)

            student.train()
            parts = {
                line.key: 0.0 for line in objective.lines if objective.applies(line, on_policy)
            }
            micros = micro_batches(list(range(len(rows))), train.grad_accum)
            fillers = 0
            if job.sharded:  # as many forward and backward passes on every rank
                most = -(-len(step_rows) // dist.world)
                fillers = len(micro_batches(list(range(most)), train.grad_accum)) - len(micros)
            for micro in micros + [None] * fillers:
                if micro is None:  # a filler: the step's first row, weighted 0
                    tokens, batch, reference = filler_inputs(job, step_rows, on_policy)
                else:
                    tokens, batch, reference = micro_inputs(
                        job, micro, rows, examples, pairs, on_policy
                    )
                with autocast():
                    loss, micro_parts = objective.micro_loss(
                        models, settled, counts, tokens, batch, reference, on_policy
                    )
                if micro is None:
                    if loss.requires_grad:
                        loss.mul(0.0).backward()
                    continue
                if loss.requires_grad:  # a micro-batch with nothing to learn adds nothing
                    loss.backward()
                for key, value in micro_parts.items():
                    parts[key] += float(value)

            dist.sum_gradients(summed)
            grad_norm = fsdp.clip(params, train.clip) if job.sharded else _clip(params, train.clip)
            adamw.step()
            adamw.zero_grad(set_to_none=True)

            parts = {key: dist.sum(value, job.device) for key, value in parts.items()}
            weights = settled.weights
            record = {
                "step": step,
                "loss": sum(weights[key] * value for key, value in parts.items()),
                **parts,
                **settled.metrics(),  # written from the settled losses, for the record only
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens": counts["tokens"],
                "on_policy_batch": on_policy,
                **order.position(step),
                "seconds": round(time.perf_counter() - began, 4),
            }
            if job.device.type == "cuda":  # this process's peak during the step
                record["gpu_memory_gib"] = round(
                    torch.cuda.max_memory_allocated(job.device) / 2**30, 3
                )
            window.append(record)
            done = step + 1
            saving = done % train.checkpoint_every == 0 and done < job.total_steps
            if done % train.log_every == 0 or done == job.total_steps or saving:
                write_window(job, log, board, window)
            if saving:
                weights = trainable_weights(job, holder, adamw, names)
                checkpoint.save(job.folder, done, {"data": order.position(done)}, weights, dist)
    finally:
        log.close()
        board.close()
    return log.records


def write_window(job: Job, log: MetricsLog, board: Board, window: list[dict]) -> None:
    """Write the records of the steps since the last write (every ``log_every`` steps, before
    each checkpoint and at the end) to ``metrics.jsonl`` and TensorBoard, and show them."""
    log.extend(window)
    for record in window:
        board.add(record)
    if job.on_log is not None:
        job.on_log(window)
    window.clear()


def trainable_weights(job: Job, holder: nn.Module, adamw, names: set[str]) -> dict | None:
    """``{"trainable": ..., "optimizer": ...}``, full and named, on rank 0 (``None`` on the
    others). Collective under ``fsdp``."""
    if job.sharded:
        weights, state = fsdp.full_state(holder, adamw, names)
        return {"trainable": weights, "optimizer": state} if job.dist.is_main else None
    if not job.dist.is_main:
        return None
    trainable = {name: module for name, module in holder.items()}
    return {"trainable": trainable_state(trainable), "optimizer": optimizer_state(holder, adamw)}


def optimizer_state(holder: nn.Module, adamw) -> dict:
    """The optimizer's state keyed by parameter name (the format ``fsdp`` checkpoints have)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(holder, adamw)


def set_optimizer_state(holder: nn.Module, adamw, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(holder, adamw, state)


def filler_inputs(job: Job, step_rows: list[int], on_policy: bool):
    """Inputs of a filler micro-batch (``fsdp``: a rank with fewer rows than another): the
    step's first row, whose loss is then weighted 0."""
    row = step_rows[:1]
    examples = [job.examples[r] for r in row] if job.examples else []
    pairs = [job.pairs[r] for r in row] if job.pairs else []
    return micro_inputs(job, [0], row, examples, pairs, on_policy)


def student_samples(job: Job, student: nn.Module, examples: list[Example], step: int):
    """The step's examples with targets sampled from the student (then truncated)."""
    train = job.train
    sampled = sample_targets(
        student,
        job.tokenizer,
        [e.for_sampling() for e in examples],
        seed=job.seed,
        step=step,
        temperature=train.sample_temperature,
        top_p=train.sample_top_p,
        max_new_tokens=train.max_new_tokens,
        batch_size=job.sample_batch,
    )
    return [e.with_target(truncate(e.prompt, e.target, train.max_length)[1]) for e in sampled]


def micro_inputs(job: Job, micro: list[int], rows, examples, pairs, on_policy: bool):
    """``(tokens, pairs, reference)`` of one micro-batch (positions ``micro`` of the step's
    rows) on the device; ``None`` for what the step does not use."""
    tokens = batch = reference = None
    if examples:
        everywhere = job.online or on_policy
        tokens = collate([examples[i] for i in micro], job.pad_id, kd_everywhere=everywhere)
        tokens = tokens.to(job.device)
    if pairs:
        batch = collate_pairs([pairs[i] for i in micro], job.pad_id).to(job.device)
        picked = job.reference[[rows[i] for i in micro]].to(job.device)
        reference = torch.cat([picked[:, 0], picked[:, 1]])
    return tokens, batch, reference


def step_counts(examples, pairs, online: bool, dist: Dist, device) -> dict[str, int]:
    """What each loss of the step is averaged over, summed over processes: target positions,
    positions with a teacher distribution, and pairs."""
    tokens = sum(e.tokens for e in examples)
    kd = tokens if online else sum(_cached_rows(e) for e in examples)
    return {
        "tokens": int(dist.sum(tokens, device)),
        "kd_tokens": int(dist.sum(kd, device)),
        "pairs": int(dist.sum(len(pairs), device)),
    }


def _cached_rows(example: Example) -> int:
    if example.topk_ids is None:
        return 0
    return min(example.tokens, example.topk_ids.shape[0])


def _clip(params: list[nn.Parameter], limit: float | None) -> float:
    """Clip the global gradient norm to ``limit`` (if set); returns the norm before clipping."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if limit is None:
        norms = torch.stack([p.grad.detach().float().norm() for p in grads])
        return float(norms.norm())
    return float(torch.nn.utils.clip_grad_norm_(grads, limit))
