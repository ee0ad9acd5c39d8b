"""From a ``train`` node and its stage context to a loaded :class:`~.loop.Job`.

Loads the student (LoRA via peft when declared), decides where the teacher's distribution comes
from — the online ``teacher`` when the train names one and a term needs it, else the top-k
cached by a ``teacher_logits`` stage — checks that teacher and student share a vocabulary before
any step, tokenizes every row (prompt rendered from the template, the target ending with EOS,
cached target ids used as they were scored), picks the loss path as ``kdlang plan`` does, and
computes the ``dpo`` reference log-probs with the initial student.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.compute as pc
import torch

from kdlang.ir.sources import HFModel

from ..captured import TOKENS, align, read_data
from ..data import read_arrow
from ..errors import RunError
from ..logit_codec import CODEC, PACKED, packed_rows
from ..losses.dpo import sequence_logprobs
from . import models as md
from .evaluation import dev_rows
from .examples import (
    Example,
    Pair,
    collate_pairs,
    encode,
    truncate,
    with_eos,
)
from .loop import Job
from .objective import Models, Objective
from .packing import resolve_layout
from .replay import Replay
from .trackers import tracking_for

if TYPE_CHECKING:
    from kdlang.ir.training import Train
    from kdlang.plan import PlanNode

    from ..context import StageContext

TOPK_IDS, TOPK_LOGPROBS, TOPK_TARGETS = "topk_ids", "topk_logprobs", "topk_target_ids"


def build_job(train: Train, ctx: StageContext) -> Job:
    dist = ctx.dist
    seed = ctx.seed  # the train's own seed, else the recipe's, as the plan resolved it
    spec = ctx.model(train.student)
    assert isinstance(spec, HFModel)  # a student is an `hf` model (`kdlang check` says so)
    settings = ctx.model_settings(spec)
    device = _device(settings["device"], dist)
    tracking = tracking_for(train, ctx)  # a tracker's missing package stops it here
    init = ctx.path(train.span.file, train.init_from) if train.init_from else None
    shape = {"init": init, "pad_vocab_to": train.pad_vocab_to_multiple, "freeze": train.freeze}
    try:
        student, tokenizer = md.load_student(settings, spec.lora, device=device, seed=seed, **shape)
    except (OSError, ValueError) as error:  # a missing folder, an unknown hub id...
        raise RunError(f"cannot load the student `{train.student.name}`: {error}") from None
    chat = md.chat_enabled(tokenizer, spec.chat_template)
    student_head = md.head(student)

    rows, topk = read_data(ctx, train, tokenizer, read_table)  # `logits = topk(...)` decoded
    if not rows:
        raise RunError(f"`{train.data.name}` has no rows to train on")
    wants_teacher = any(loss.teacher is not None for loss in train.losses)
    online = train.teacher is not None and (wants_teacher or train.seq_kd)
    teacher_model = teacher_head = None
    if online and train.teacher is not None:
        teacher = ctx.teacher(train.teacher)
        if not getattr(teacher, "white_box", False):
            raise RunError(f"the online teacher `{train.teacher.name}` must be an `hf` model")
        md.check_same_vocab(tokenizer, teacher.tokenizer, train.student.name, train.teacher.name)
        teacher_model, teacher_head = teacher.model, md.head(teacher.model)
    elif wants_teacher:
        if topk is None:
            raise RunError(f"`{train.data.name}` holds no cached teacher log-probs (topk_ids)")
        _check_cache_vocab(ctx, train, tokenizer, topk, student_head.out_features)

    packing = resolve_layout(train, student, teacher_model)  # before any sharding or compile
    ctx.stats["packing"] = packing.stats()
    path, reason = md.loss_path(train, student_head.out_features)
    if path == "fused_linear" and not all(
        md.supports_fused(m) for m in (student, teacher_model) if m is not None
    ):
        path, reason = "materialized", "the model's head cannot run on hidden states alone"
    ctx.stats["loss_path"] = {"path": path, "reason": reason}

    template = ctx.template(train.prompt) if train.prompt is not None else None
    learns_from = {loss.learns_from for loss in train.losses}
    cached_on = _cached_on(ctx, train) if wants_teacher and not online else None
    examples, pairs = [], []
    mixed = _template_mix(ctx, train, chat, spec.chat_template_args, len(rows))
    for i, row in enumerate(rows):
        args = mixed[i] if mixed is not None else spec.chat_template_args
        if "tokens" in learns_from:
            examples.append(
                _example(i, row, topk, template, tokenizer, chat, train, args, cached_on)
            )
        if "pairs" in learns_from:
            pairs.append(_pair(i, row, template, tokenizer, chat, train, args))
    ctx.stats["rows_in"] = len(rows)
    ctx.stats["target_tokens"] = sum(e.tokens for e in examples)

    total = train.max_steps or train.epochs * max(1, math.ceil(len(rows) / train.batch))
    try:
        with torch.random.fork_rng(devices=[]):
            # Hidden-state projections start from the training seed: the same on every rank
            # and in every run, whatever ran before in the process.
            torch.manual_seed(seed)
            objective = Objective(
                train.losses,
                total_steps=total,
                on_policy=train.on_policy,
                teacher="online" if online else ("cached" if wants_teacher else None),
                path=path,
                width=md.shared_width(student_head, teacher_head, len(tokenizer)),
                layers=(
                    _config(student, "num_hidden_layers"),
                    _config(teacher_model, "num_hidden_layers"),
                ),
                widths=(_config(student, "hidden_size"), _config(teacher_model, "hidden_size")),
            )
    except ValueError as error:  # a hidden-state layer the model does not have
        raise RunError(f"`{ctx.node.name}`: {error}") from None
    folder = ctx.progress_dir()
    job = Job(
        train=train,
        objective=objective,
        models=Models(student, student_head, teacher_model, teacher_head),
        tokenizer=tokenizer,
        examples=examples,
        pairs=pairs,
        folder=folder,
        total_steps=total,
        seed=seed,
        device=device,
        online=online,
        sample_batch=spec.batch_size,
        dist=dist,
        strategy=train.strategy,
        reload=lambda: md.load_student(
            settings, spec.lora, device=torch.device("cpu"), seed=seed, **shape
        )[0],
        tracking=tracking,
        layout=packing,
    )
    if pairs:
        job.reference = reference_logprobs(job)
    if any(loss.name == "minillm" for loss in train.losses):  # rollouts, lm_data
        from .minillm import attach

        attach(job, ctx, lambda folder: read_table(folder)[0])
    if train.eval_data is not None:  # dev rows, tokenized as the training rows are
        dev, dev_topk = read_table(ctx.artifact(train.eval_data.name))
        args = spec.chat_template_args
        job.dev = dev_rows(
            train.eval_data.name,
            dev,
            lambda i, r: _example(
                i, r, dev_topk, template, tokenizer, chat, train, args, cached_on
            ),
            lambda i, r: _pair(i, r, template, tokenizer, chat, train, args),
            learns_from,
        )
        if job.dev.pairs:
            job.dev.reference = reference_logprobs(replace(job, pairs=job.dev.pairs))
    if train.replay is not None:
        job.replay = Replay.of(train.replay)
    return job


def read_table(folder: Path) -> tuple[list[dict], dict[str, list[np.ndarray]] | None]:
    """The rows of a data artifact without the top-k columns, and those columns (when present)
    as one ``[T, k]`` array per row (ids int32, log-probs float32, target ids ``[T]``)."""
    table = read_arrow(folder, decode=False)  # every shard memory-mapped
    large = (TOPK_IDS, TOPK_LOGPROBS, TOPK_TARGETS, PACKED, CODEC)
    rows = table.select([n for n in table.column_names if n not in large]).to_pylist()
    if PACKED in table.column_names:  # compressed: decoded batch by batch, when collated
        topk: dict[str, list] = dict(packed_rows(table))
    elif TOPK_IDS not in table.column_names:
        return rows, None
    else:
        topk = {
            TOPK_IDS: _nested(table.column(TOPK_IDS), np.int32),
            TOPK_LOGPROBS: _nested(table.column(TOPK_LOGPROBS), np.float32),
        }
    if TOPK_TARGETS in table.column_names:
        column = table.column(TOPK_TARGETS).combine_chunks()
        flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.int64)
        topk[TOPK_TARGETS] = np.split(flat, np.cumsum(pc.list_value_length(column).to_numpy())[:-1])
    return rows, topk


def _nested(column, dtype) -> list[np.ndarray]:
    """``list<list<x>>`` (fixed-size inner lists or not) → one ``[T, k]`` array per row."""
    column = column.combine_chunks()
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    inner = pc.list_flatten(column)
    values = pc.list_flatten(inner).to_numpy(zero_copy_only=False).astype(dtype)
    k = len(values) // max(1, len(inner))
    table = values.reshape(-1, k) if k else values.reshape(len(inner), 0)
    return np.split(table, np.cumsum(lengths)[:-1])


def _example(
    index, row, topk, template, tokenizer, chat, train, chat_args=None, cached_on=None
) -> Example:
    value = row.get(train.target)
    if isinstance(value, list):  # a conversation: its chat template renders every turn
        cache = topk if cached_on is not None else None
        return _conversation(index, value, tokenizer, chat, train, chat_args, cache, cached_on)
    if isinstance(value, dict):
        raise RunError(f"row {index + 1}: `{train.target}` holds a map, not text")
    if cached_on not in (None, "text"):
        raise RunError(
            f"row {index + 1}: the top-k of `{train.data.name}` was scored on conversations, "
            f"but `{train.target}` holds text"
        )
    prompt_text = template.render(index, **row) if template is not None else ""
    target_text = row.get(train.target) or ""
    prompt, target = encode(tokenizer, prompt_text, str(target_text), chat=chat, args=chat_args)
    ids = lps = None
    if topk is not None and TOPK_TARGETS in topk:
        # Learn exactly the tokens the teacher scored, so row t of the cache is token t.
        target = with_eos(topk[TOPK_TARGETS][index].tolist(), tokenizer.eos_token_id)
        ids, lps = topk[TOPK_IDS][index], topk[TOPK_LOGPROBS][index]
    elif topk is not None and TOKENS in topk:  # the teacher scored whole sequences
        ids, lps = align(index, prompt + target, len(prompt), topk)
    prompt, target = truncate(prompt, target, train.max_length)
    return Example(prompt, target, ids, lps, row=index)


def _conversation(index, turns, tokenizer, chat, train, chat_args, topk, cached_on) -> Example:
    """A conversation target (typed ``any`` where the checker could not see it: what
    ``kdlang check`` refuses for a ``messages`` column is refused here); ``topk``: the rows a
    ``teacher_logits`` stage cached on its ``cached_on`` tokens, when the train learns from them.
    A train that samples gets the turns up to the last user turn as what the student answers."""
    from .conversation import (
        ConversationError,
        cached_example,
        conversation_example,
        sampling_prompt,
    )

    if not chat:
        raise RunError(
            f"`{train.target}` holds conversations, but the student has no chat template to "
            "render them"
        )
    unsupported = [
        (train.prompt is not None, "a `prompt` (the conversation brings its user turns)"),
        (topk is not None and cached_on == "text", "a top-k cache of text targets"),
    ]
    for given, what in unsupported:
        if given:
            raise RunError(
                f"`{train.target}` holds conversations, which cannot be learned with {what}"
            )
    try:
        if topk is not None:
            example = cached_example(
                index,
                turns,
                tokenizer,
                train_on=train.train_on,
                cached_on=cached_on,
                max_length=train.max_length,
                args=chat_args,
                topk_ids=topk[TOPK_IDS][index],
                topk_logprobs=topk[TOPK_LOGPROBS][index],
                topk_targets=topk[TOPK_TARGETS][index],
            )
        else:
            example = conversation_example(
                index,
                turns,
                tokenizer,
                train_on=train.train_on,
                max_length=train.max_length,
                args=chat_args,
            )
        if train.on_policy != 0.0 or train.replay is not None or train.seq_kd:
            example.sample_prompt = sampling_prompt(tokenizer, turns, train.max_length, chat_args)
    except (ConversationError, KeyError, TypeError) as error:
        raise RunError(f"row {index + 1}, `{train.target}`: {error}") from None
    return example


def _pair(index, row, template, tokenizer, chat, train, chat_args=None) -> Pair:
    prompt_text = template.render(index, **row) if template is not None else ""
    chosen_text, rejected_text = str(row.get("chosen") or ""), str(row.get("rejected") or "")
    prompt, chosen = encode(tokenizer, prompt_text, chosen_text, chat=chat, args=chat_args)
    _, rejected = encode(tokenizer, prompt_text, rejected_text, chat=chat, args=chat_args)
    _, chosen = truncate(prompt, chosen, train.max_length)
    prompt, rejected = truncate(prompt, rejected, train.max_length)
    return Pair(prompt, chosen, rejected, row=index)


@torch.no_grad()
def reference_logprobs(job: Job, batch_size: int = 8) -> torch.Tensor:
    """``[rows, 2]``: log π_ref of each pair's chosen and rejected response, π_ref being the
    student before its first step (computed before any checkpoint is loaded)."""
    student = job.models.student
    was_training = student.training
    student.eval()
    autocast = md.precision(job.train.precision, job.device)
    out = []
    for start in range(0, len(job.pairs), batch_size):
        chunk = job.pairs[start : start + batch_size]
        batch = collate_pairs(chunk, job.pad_id).to(job.device)
        with autocast():
            logits = student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        scores = sequence_logprobs(logits[:, :-1], batch.labels).float().cpu()
        out.append(torch.stack([scores[: len(chunk)], scores[len(chunk) :]], dim=1))
    student.train(was_training)
    return torch.cat(out)


def _check_cache_vocab(ctx: StageContext, train: Train, tokenizer, topk, width: int) -> None:
    """The cached ids must be ids of the student's vocabulary: compare with the digest the
    ``teacher_logits`` stage recorded, and the largest id with the lm_head's width."""
    stage = _logits_stage(ctx, train.data.name)
    recorded = (ctx.manifest(stage.name) or {}).get("vocab_digest") if stage else None
    if stage is not None and recorded is not None and recorded != md.vocab_digest(tokenizer):
        raise RunError(
            f"the top-k cached by `{stage.name}` uses another vocabulary than the student "
            f"`{train.student.name}`; token-level losses need one tokenizer"
        )
    largest = max((int(a.max()) for a in topk[TOPK_IDS] if a.size), default=-1)
    if largest >= width:
        raise RunError(f"cached token id {largest} is outside the student's {width} logits")


def _template_mix(ctx: StageContext, train: Train, chat: bool, base, rows: int):
    """Each row's chat template arguments when the train mixes them (``chat_template_mix``),
    picked from (seed, row); the rows each entry got go to the stats. None without a mix."""
    if train.chat_template_mix is None:
        return None
    if not chat:
        raise RunError(
            f"`{ctx.node.name}` mixes chat template arguments, but the student has no chat "
            "template to pass them to"
        )
    from .conversation import template_mix_pick

    picks = [template_mix_pick(train.chat_template_mix, ctx.seed, i) for i in range(rows)]
    ctx.stats["chat_template_mix"] = [picks.count(e) for e in range(len(train.chat_template_mix))]
    return [{**(base or {}), **train.chat_template_mix[e].args} for e in picks]


def _cached_on(ctx: StageContext, train: Train) -> str | None:
    """Which tokens of a conversation the top-k a train reads was scored on: the
    ``teacher_logits`` stage's ``train_on`` when it scored conversations, ``"text"`` when it
    scored text targets (or the columns come from elsewhere)."""
    stage = _logits_stage(ctx, train.data.name)
    if stage is None:
        return "text"
    scored = ctx.manifest(stage.name) or {}
    return stage.node.train_on if scored.get("conversations") else "text"


def _logits_stage(ctx: StageContext, name: str) -> PlanNode | None:
    """The nearest ``teacher_logits`` node upstream of ``name`` (itself included)."""
    pending = [name]
    while pending:
        node = ctx.plan.node(pending.pop(0))
        if node.op == "teacher_logits":
            return node
        pending.extend(node.inputs)
    return None


def _device(setting: str, dist) -> torch.device:
    from ..teachers.hf import resolve_device

    device = resolve_device(setting)
    if device.type == "cuda" and dist.active and device.index is None:
        return torch.device("cuda", dist.local_rank)
    return device


def _config(model, field: str) -> int:
    if model is None:
        return 0
    config = md.base_model(model).config
    return int(getattr(config, field))
