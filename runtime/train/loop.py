"""The training loop, top to bottom.

For each optimizer step s (resuming at the last checkpoint's step):

1. settle the losses at s (:meth:`.Objective.at_step`: loss weights, temperatures, β, α, and
   λ) and set the learning rate to ``lr · lr_schedule.factor(s, total)``;
2. take the step's rows (a pure function of s: :class:`DataOrder`), this process's share of them;
   with probability λ(s) replace their targets by the student's own samples (GKD), or as the
   adaptive schedule draws them (fresh, replayed or the data's; :mod:`.replay`), or by the
   online teacher's (``seq_kd``);
3. count what the step's losses are averaged over (target positions, teacher positions, pairs),
   summed over processes;
4. for each micro-batch (``grad_accum`` parts of the rows, or as many as a token budget needs;
   packed or padded: :mod:`.packing`): forward (autocast), the composed loss, backward;
5. sum gradients over processes (``ddp``: ``DistributedDataParallel``'s all-reduces during the
   last micro-batch's backward; ``fsdp`` reduce-scatters them in the backward passes), clip
   their norm, AdamW step;
6. every ``eval_every`` steps and after the last, the objective on the dev rows
   (:mod:`.evaluation`, its values in the step's record, the adaptive schedule told);
7. append the step's record to ``metrics.jsonl`` and TensorBoard; every ``checkpoint_every``
   steps commit a checkpoint (weights, optimizer, RNG states, data position, replay buffer).

Everything random is either seeded by the step (data order, on-policy draws, samples) or part of
the checkpoint (the generators dropout uses), so a resumed run continues the same trajectory.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..distributed import Dist, replicate
from . import checkpoint, dpo_metrics, fsdp
from .compile import compile_layers, wants_compile
from .evaluation import DevRows, due, evaluate
from .examples import (
    DataOrder,
    Example,
    Pair,
    collate,
    collate_pairs,
    micro_batches,
)
from .metrics import METRICS, MetricsLog
from .models import (
    enable_gradient_checkpointing,
    load_trainable,
    optimizer,
    precision,
    trainable_state,
)
from .objective import Models, Objective
from .packing import Layout, micro_plan, pack, pack_pairs, row_sizes
from .replay import Replay, draw_step
from .trackers import Trackers, Tracking, open_trackers


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
    dev: DevRows | None = None
    """The dev rows evaluated on (``eval_data``), tokenized as the training rows."""
    replay: Replay | None = None
    """The adaptive off-policy schedule's state (``replay = adaptive(...)``)."""
    minillm: Any = None
    """MiniLLM's side of a train with ``loss minillm`` (:class:`.minillm.MiniLLM`)."""
    tracking: Tracking | None = None
    """Where the records go besides ``metrics.jsonl`` (``report_to``); None: TensorBoard."""
    layout: Layout = field(default_factory=lambda: Layout(False, None, "padded"))
    """Packed or padded micro-batches, split by a token budget or ``grad_accum`` (:mod:`.packing`)."""

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
        if job.replay is not None:
            job.replay.load(saved.state.get("replay"))
        if saved.rng is not None:
            checkpoint.set_rng_state(saved.rng)
        else:  # written by another number of processes
            checkpoint.seed_rng(job.seed, start, dist.rank)
    else:
        torch.manual_seed(job.seed + dist.rank)
    log = MetricsLog(job.folder / METRICS, start=start, write=dist.is_main)
    board = open_trackers(job.tracking, job.folder, start=start, write=dist.is_main)
    models = replace(job.models, head_call=fsdp.head_call(student) if job.sharded else None)
    if wants_compile(train.compile, job.device.type):  # each decoder layer a compiled region
        compile_layers(student)
        if models.teacher is not None:
            compile_layers(models.teacher)

    window: list[dict] = []  # records not yet written
    try:
        if job.minillm is not None:  # `loss minillm`: rollouts and clipped passes instead
            from .minillm import Tools

            tools = Tools(models, adamw, params, summed, holder, names, autocast, order)
            job.minillm.fit(job, tools.started(log, board, window, start))
            return log.records
        ddp = None
        if dist.active and not job.sharded:  # gradients summed by DistributedDataParallel
            unused = all(line.loss.teacher == "hidden" for line in objective.lines)
            ddp = replicate(student, job.device, unused=unused)
            models = replace(models, student=ddp)
            summed = [p for p in objective.projections.parameters() if p.requires_grad]
        for step in range(start, job.total_steps):
            began = time.perf_counter()
            if job.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(job.device)
            settled = objective.at_step(step)
            lr = train.lr * train.lr_schedule.factor(step, job.total_steps)
            for group in adamw.param_groups:
                group["lr"] = lr

            step_rows = order.step_rows(step)
            drawn = draw_step(job, student, step, settled.on_policy, step_rows, autocast)
            examples, rows, on_policy = drawn.examples, drawn.rows, drawn.on_policy
            pairs = [job.pairs[r] for r in rows] if job.pairs else []
            counts = step_counts(examples, pairs, job.online or on_policy, dist, job.device)

            student.train()
            parts = {
                line.key: 0.0 for line in objective.lines if objective.applies(line, on_policy)
            }
            pair_metrics = dpo_metrics.empty(objective, on_policy)  # records, not loss terms
            budget, packed = job.layout.budget, job.layout.packed
            sizes = row_sizes(examples, pairs, len(rows))
            micros = micro_plan(sizes, budget, packed, train.grad_accum)
            fillers = 0
            if job.sharded and budget is None:  # as many forward and backward passes on every rank
                most = -(-drawn.whole // dist.world)
                fillers = len(micro_batches(list(range(most)), train.grad_accum)) - len(micros)
            elif job.sharded:
                fillers = dist.most(len(micros), job.device) - len(micros)
            elif ddp is not None and not micros:  # every rank's last backward reduces
                fillers = 1
            passes = micros + [None] * fillers
            for index, micro in enumerate(passes):
                accumulate = ddp is not None and index < len(passes) - 1
                with ddp.no_sync() if accumulate else contextlib.nullcontext():
                    if micro is None:  # a filler: the step's first row, weighted 0
                        tokens, batch, reference = filler_inputs(job, step_rows, on_policy)
                    else:
                        tokens, batch, reference = micro_inputs(
                            job, micro, rows, examples, pairs, on_policy
                        )
                    with autocast():
                        loss, micro_parts = objective.micro_loss(
                            models, settled, counts, tokens, batch, reference, on_policy,
                            pair_metrics if micro is not None else None,
                        )  # fmt: skip
                    if micro is None:
                        if loss.requires_grad:
                            loss.mul(0.0).backward()
                        continue
                    if loss.requires_grad:  # a micro-batch with nothing to learn adds nothing
                        loss.backward()
                for key, value in micro_parts.items():
                    parts[key] += value.double()  # on the device: read once, after the step

            dist.sum_gradients(summed)
            grad_norm = fsdp.clip(params, train.clip) if job.sharded else _clip(params, train.clip)
            adamw.step()
            adamw.zero_grad(set_to_none=True)

            summed_values = dist.sum_values({**parts, **pair_metrics}, job.device)  # one all-reduce
            parts = {key: summed_values[key] for key in parts}
            weights = settled.weights
            record = {
                "step": step,
                "loss": sum(weights[key] * value for key, value in parts.items()),
                **parts,
                **{key: summed_values[key] for key in pair_metrics},
                **settled.metrics(),  # written from the settled losses, for the record only
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens": counts["tokens"],
                "on_policy_batch": on_policy,
                **({"batch_source": drawn.source} if job.replay is not None else {}),
                **order.position(step),
                "seconds": round(time.perf_counter() - began, 4),
            }
            if job.device.type == "cuda":  # this process's peak during the step
                record["gpu_memory_gib"] = round(
                    torch.cuda.max_memory_allocated(job.device) / 2**30, 3
                )
            done = step + 1
            if job.dev is not None and due(train, done, job.total_steps):
                record.update(evaluate(job, models, step, autocast))
                if job.replay is not None:
                    job.replay.observe(record["eval/loss"])
                    record["replay_threshold"] = job.replay.threshold
            window.append(record)
            saving = done % train.checkpoint_every == 0 and done < job.total_steps
            if done % train.log_every == 0 or done == job.total_steps or saving:
                write_window(job, log, board, window)
            if saving:
                weights = trainable_weights(job, holder, adamw, names)
                state = {"data": order.position(done)}
                if job.replay is not None:
                    state["replay"] = job.replay.state()
                keep = train.save_total_limit or 1
                checkpoint.save(job.folder, done, state, weights, dist, keep=keep)
    finally:
        log.close()
        board.close()
    return log.records


def write_window(job: Job, log: MetricsLog, board: Trackers, window: list[dict]) -> None:
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


def micro_inputs(job: Job, micro: list[int], rows, examples, pairs, on_policy: bool):
    """``(tokens, pairs, reference)`` of one micro-batch (positions ``micro`` of the step's
    rows) on the device; ``None`` for what the step does not use."""
    tokens = batch = reference = None
    glue, glue_pairs = (pack, pack_pairs) if job.layout.packed else (collate, collate_pairs)
    if examples:
        everywhere = job.online or on_policy
        tokens = glue([examples[i] for i in micro], job.pad_id, kd_everywhere=everywhere)
        tokens = tokens.to(job.device)
    if pairs:
        batch = glue_pairs([pairs[i] for i in micro], job.pad_id).to(job.device)
        picked = job.reference[[rows[i] for i in micro]].to(job.device)
        reference = torch.cat([picked[:, 0], picked[:, 1]])
    return tokens, batch, reference


def step_counts(examples, pairs, online: bool, dist: Dist, device) -> dict[str, int]:
    """What each loss of the step is averaged over, summed over processes: target positions,
    positions with a teacher distribution, pairs, sequences, and sequences with a teacher
    position (``reduction = batchmean``, ``sequence_mean``)."""
    tokens = sum(e.tokens for e in examples)
    per_row = [e.tokens if online else _cached_rows(e) for e in examples]
    counts = {
        "tokens": tokens,
        "kd_tokens": sum(per_row),
        "pairs": len(pairs),
        "sequences": len(examples),
        "kd_sequences": sum(1 for n in per_row if n > 0),
    }
    return {key: int(value) for key, value in dist.sum_values(counts, device).items()}


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
