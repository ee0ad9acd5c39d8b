"""MiniLLM's training steps: rollouts, then clipped policy-gradient passes over each.

A train with ``loss minillm`` runs :meth:`MiniLLM.fit` instead of the loop's data steps (the
set-up and checkpoints are the loop's). Optimizer step s is pass ``j = s mod P`` over rollout
batch ``k = s div P`` (``P = ppo_epochs``):

1. at ``j = 0`` the step's prompts (those the data order gives step k, this process's share)
   are answered by :func:`.rollout.sample_rollouts` (``teacher_mix``, ``sample_temperature``,
   ``max_new_tokens``); both models then score the rollout in eval mode: the policy's
   log-probabilities at the sampling temperature (π_old), the importance weights p_S /
   mixture, the rewards at the loss's temperature, the returns and their whitened advantages
   (``runtime/losses/minillm.py``). The rollout is written to ``rollouts/`` in the progress
   folder before its first pass, so a run resumed in the middle of a rollout's passes learns
   from the same rollout; one killed while sampling samples it again from the same weights
   and seeds, hence the same tokens;
2. every pass: weight · (long-term + single-step) / tokens of the rollout, plus ``lm_weight``
   · cross-entropy on ``batch`` rows of ``lm_data`` (their own order) / their tokens, over
   ``grad_accum`` micro-batches; gradients summed over processes, clipped, AdamW.

Each step's record has the term and its parts, the rollout's reward and return means, the
clip fraction, the ratios' mean, least and largest value, the mean importance weight and the
sampled length, besides the loop's (lr, grad norm, tokens).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import RunError
from ..losses import minillm as ml
from ..losses.divergence_sums import divergence_sum
from ..losses.sft import sft_sum
from . import checkpoint
from .examples import IGNORE, Batch, DataOrder, Example, collate, encode, micro_batches, truncate
from .models import base_model
from .objective import forward
from .rollout import ROLLOUTS, Rollout, combined_digest, per_row, sample_rollouts, spread


class LMOrder(DataOrder):
    """The order in which steps read the rows of ``lm_data``: a stream of its own."""

    def permutation(self, epoch: int) -> list[int]:
        order = list(range(self.rows))
        random.Random(f"kdlang-lm:{self.seed}:{epoch}").shuffle(order)
        return order


def gathered_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float):
    """log softmax(logits / T) at each label (0 where the label is ignored), in float32."""
    logprobs = F.log_softmax(logits.float() / temperature, dim=-1)
    picked = logprobs.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return picked * (labels != IGNORE)


class MiniLLM:
    """The MiniLLM side of a train: its settings, its loss line and the ``lm_data`` rows."""

    def __init__(self, train: Any, lm: list[Example], seed: int):
        self.train = train
        self.line = next(line for line in _lines(train) if line.name == "minillm")
        self.lm = lm
        self.lm_order = LMOrder(len(lm), train.batch, seed) if lm else None
        self.current: Rollout | None = None

    # -- the rollout of a step -----------------------------------------------------------------

    def rollout_path(self, job, index: int) -> Path:
        return job.folder / ROLLOUTS / f"{index:08d}-rank{job.dist.rank}.pt"

    def rollout(self, job, tools, index: int) -> Rollout:
        """Rollout ``index`` of this process: in memory, from its file, or sampled now."""
        if self.current is not None and self.current.index == index:
            return self.current
        path = self.rollout_path(job, index)
        if path.is_file():
            self.current = Rollout.load(path)
        elif index * self.train.ppo_epochs < tools.start:
            raise RunError(f"the rollout {index} the checkpoint continues is missing ({path})")
        else:
            self.current = self.sample(job, tools, index)
            self.current.save(path)
        return self.current

    def sample(self, job, tools, index: int) -> Rollout:
        train, dist = self.train, job.dist
        rows = dist.shard(tools.order.step_rows(index))
        prompts = [(r, job.examples[r].for_sampling().prompt) for r in rows]
        from ..teachers.hf import _eos_ids

        student = base_model(tools.models.student)
        with tools.autocast():
            drawn = sample_rollouts(
                student,
                job.models.teacher,
                prompts,
                seed=job.seed,
                rollout=index,
                alpha=train.teacher_mix,
                temperature=train.sample_temperature,
                max_new_tokens=train.max_new_tokens,
                eos_ids=_eos_ids(student, job.tokenizer),
                width=job.objective.width,
            )
        examples = []
        for (row, prompt), tokens in zip(prompts, drawn, strict=True):
            prompt, target = truncate(prompt, tokens, train.max_length)
            examples.append(Example(prompt, target, row=row))
        loss = self.line.loss.at_step(index * train.ppo_epochs, job.total_steps)
        return self.score(job, tools, index, examples, loss)

    @torch.no_grad()
    def score(self, job, tools, index: int, examples: list[Example], loss) -> Rollout:
        """π_old, weights, rewards and advantages of the sampled rows (module docstring)."""
        train, dist, device = self.train, job.dist, job.device
        student = tools.models.student
        student.eval()
        olds, weights, rewards, masks = [], [], [], []
        for start in range(0, len(examples), max(1, job.sample_batch)):
            chunk = examples[start : start + max(1, job.sample_batch)]
            batch = collate(chunk, job.pad_id).to(device)
            with tools.autocast():
                s_logits, t_logits = self._logits(job, tools, batch, grad=False)
            labels, mask = batch.labels, (batch.labels != IGNORE).float()
            old = gathered_logprobs(s_logits, labels, train.sample_temperature)
            t_old = gathered_logprobs(t_logits, labels, train.sample_temperature)
            w = ml.importance_weights(old, t_old, train.teacher_mix) * mask
            s_lp = gathered_logprobs(s_logits, labels, loss.temperature)
            t_lp = gathered_logprobs(t_logits, labels, loss.temperature)
            r = ml.token_rewards(s_lp, t_lp, mask)
            olds += per_row(chunk, old)
            weights += per_row(chunk, w)
            rewards += per_row(chunk, r)
            masks += [torch.ones(len(e.target)) for e in chunk]
        student.train()
        returns = [
            ml.returns(
                r[None],
                m[None],
                gamma=loss.gamma,
                advantage=loss.advantage,
                length_norm=loss.length_norm,
            )[0]
            for r, m in zip(rewards, masks, strict=True)
        ]
        flat_returns, flat_mask = _flat(returns), _flat(masks)
        total, squares, count = (dist.sum(v, device) for v in ml.moments(flat_returns, flat_mask))
        advantages = returns
        if loss.whiten:
            advantages = [
                ml.whiten(a, m, (total, squares, count))
                for a, m in zip(returns, masks, strict=True)
            ]
        tokens = max(count, 1.0)
        stats = {
            "reward": dist.sum(float(_flat(rewards).double().sum()), device) / tokens,
            "return": total / tokens,
            "importance_weight": dist.sum(float(_flat(weights).double().sum()), device) / tokens,
            "sample_length": tokens / max(dist.sum(len(examples), device), 1.0),
            "rollout_tokens": count,
        }
        rollout = Rollout(index, examples, olds, weights, advantages, stats)
        rollout.stats["rollout_digest"] = combined_digest(dist.gather(rollout.row_digests()))
        return rollout

    def _logits(self, job, tools, batch: Batch, *, grad: bool):
        student_logits, _ = forward(tools.models.student, batch, logits=True, states=False)
        with torch.no_grad():
            teacher = job.models.teacher
            t_batch = batch.to(next(teacher.parameters()).device)
            teacher_logits, _ = forward(teacher, t_batch, logits=True, states=False)
        teacher_logits = teacher_logits.to(student_logits.device)
        width = job.objective.width
        if width is not None:
            student_logits, teacher_logits = (
                student_logits[..., :width],
                teacher_logits[..., :width],
            )
        if not grad:
            student_logits = student_logits.detach()
        return student_logits, teacher_logits

    # -- one pass over a rollout ---------------------------------------------------------------

    def step_loss(self, job, tools, step: int, rollout: Rollout) -> dict[str, float]:
        """Forward and backward of optimizer step ``step`` over ``rollout`` (and the LM rows);
        returns the step's record entries (summed over processes)."""
        train, dist, device = self.train, job.dist, job.device
        loss = self.line.loss.at_step(step, job.total_steps)
        tokens = dist.sum(sum(len(e.target) for e in rollout.examples), device)
        n = max(tokens, 1.0)
        sums = {"long_term": 0.0, "single_step": 0.0, "clipped": 0.0, "ratio": 0.0}
        low, high = float("inf"), float("-inf")
        order = list(range(len(rollout.examples)))
        for micro in micro_batches(order, train.grad_accum) if order else []:
            chunk = [rollout.examples[i] for i in micro]
            batch = collate(chunk, job.pad_id).to(device)
            with tools.autocast():
                s_logits, t_logits = self._logits(job, tools, batch, grad=True)
                mask = (batch.labels != IGNORE).float()
                term = torch.zeros((), device=device)
                if loss.long_term:
                    logprobs = gathered_logprobs(s_logits, batch.labels, train.sample_temperature)
                    part = ml.clipped_surrogate(
                        logprobs,
                        spread(chunk, [rollout.old[i] for i in micro], batch),
                        spread(chunk, [rollout.weights[i] for i in micro], batch),
                        spread(chunk, [rollout.advantages[i] for i in micro], batch),
                        mask,
                        loss.clip_eps,
                    )
                    term = term + part.total
                    sums["long_term"] += float(part.total.detach())
                    sums["clipped"] += part.clipped
                    sums["ratio"] += part.ratio_sum
                    low, high = min(low, part.ratio_min), max(high, part.ratio_max)
                if loss.single_step:
                    single = divergence_sum(
                        s_logits,
                        batch.labels,
                        kind="reverse_kl",
                        temperature=loss.temperature,
                        teacher_logits=t_logits,
                        backend=job.objective.backend,
                    )
                    term = term + single
                    sums["single_step"] += float(single.detach())
            (term * (loss.weight / n)).backward()
        out = {key: dist.sum(value, device) for key, value in sums.items()}
        record = {
            "minillm": (out["long_term"] + out["single_step"]) / n,
            "minillm/long_term": out["long_term"] / n,
            "minillm/single_step": out["single_step"] / n,
        }
        if loss.long_term:
            lows, highs = dist.gather(low), dist.gather(high)
            record.update(
                clip_fraction=out["clipped"] / n,
                ratio_mean=out["ratio"] / n,
                ratio_min=min(lows) if min(lows) != float("inf") else 1.0,
                ratio_max=max(highs) if max(highs) != float("-inf") else 1.0,
            )
        record["loss"] = loss.weight * record["minillm"]
        record["weight/minillm"] = loss.weight
        record["temperature/minillm"] = loss.temperature
        record["tokens"] = int(tokens)
        if self.lm_order is not None:
            lm = self.lm_loss(job, tools, step)
            record["lm"] = lm
            record["loss"] += self.train.lm_weight * lm
        return record

    def lm_loss(self, job, tools, step: int) -> float:
        """Cross-entropy on this step's ``lm_data`` rows, backward included; their mean."""
        assert self.lm_order is not None
        dist, device = job.dist, job.device
        rows = dist.shard(self.lm_order.step_rows(step))
        examples = [self.lm[r] for r in rows]
        n = max(dist.sum(sum(e.tokens for e in examples), device), 1.0)
        total = 0.0
        for micro in micro_batches(examples, self.train.grad_accum) if examples else []:
            batch = collate(micro, job.pad_id).to(device)
            with tools.autocast():
                logits, _ = forward(tools.models.student, batch, logits=True, states=False)
                value = sft_sum(logits, batch.labels)
            (value * (self.train.lm_weight / n)).backward()
            total += float(value.detach())
        return dist.sum(total, device) / n

    # -- the steps -----------------------------------------------------------------------------

    def fit(self, job, tools) -> None:
        """Steps ``tools.start`` .. ``job.total_steps`` (module docstring)."""
        from .loop import _clip, trainable_weights, write_window

        if job.sharded:
            raise RunError("`loss minillm` does not run on a student sharded by fsdp")
        train, dist = self.train, job.dist
        for step in range(tools.start, job.total_steps):
            began = time.perf_counter()
            if job.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(job.device)
            lr = train.lr * train.lr_schedule.factor(step, job.total_steps)
            for group in tools.adamw.param_groups:
                group["lr"] = lr
            index, ppo_pass = divmod(step, train.ppo_epochs)
            rollout = self.rollout(job, tools, index)
            tools.models.student.train()
            record = {"step": step, **self.step_loss(job, tools, step, rollout)}
            dist.sum_gradients(tools.summed)
            grad_norm = _clip(tools.params, train.clip)
            tools.adamw.step()
            tools.adamw.zero_grad(set_to_none=True)
            record.update(
                {
                    **{k: v for k, v in rollout.stats.items() if k != "rollout_tokens"},
                    "rollout": index,
                    "ppo_pass": ppo_pass,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "on_policy": 1.0,
                    "on_policy_batch": True,
                    **tools.order.position(index),
                    "seconds": round(time.perf_counter() - began, 4),
                }
            )
            if job.device.type == "cuda":  # this process's peak during the step
                peak = torch.cuda.max_memory_allocated(job.device)
                record["gpu_memory_gib"] = round(peak / 2**30, 3)
            done = step + 1
            if getattr(job, "dev", None) is not None:
                from .evaluation import due, evaluate

                if due(train, done, job.total_steps):
                    record.update(evaluate(job, tools.models, step, tools.autocast))
            tools.window.append(record)
            saving = done % train.checkpoint_every == 0 and done < job.total_steps
            if done % train.log_every == 0 or done == job.total_steps or saving:
                write_window(job, tools.log, tools.board, tools.window)
            if saving:
                weights = trainable_weights(job, tools.holder, tools.adamw, tools.names)
                state = {"data": tools.order.position(done)}
                keep = getattr(train, "save_total_limit", None) or 1
                checkpoint.save(job.folder, done, state, weights, dist, keep=keep)
                self.prune(job, done // train.ppo_epochs)

    def prune(self, job, keep_from: int) -> None:
        """Remove this process's rollouts before ``keep_from`` (no checkpoint needs them)."""
        for path in sorted((job.folder / ROLLOUTS).glob(f"*-rank{job.dist.rank}.pt")):
            if int(path.name.split("-")[0]) < keep_from:
                path.unlink(missing_ok=True)


@dataclass
class Tools:
    """What the loop set up for the steps (see :func:`.loop.fit`)."""

    models: Any
    adamw: Any
    params: list
    summed: list
    holder: Any
    names: set
    autocast: Any
    order: DataOrder
    log: Any = None
    board: Any = None
    window: list = field(default_factory=list)
    start: int = 0

    def started(self, log, board, window: list, start: int) -> Tools:
        """These tools with the run's metrics log, trackers, pending records and first step."""
        self.log, self.board, self.window, self.start = log, board, window, start
        return self


def attach(job, ctx, rows_of) -> None:
    """Give ``job`` its MiniLLM side (``job.minillm``): the ``lm_data`` rows tokenized
    (``rows_of(folder)``: the rows of a data artifact)."""
    train = job.train
    lm: list[Example] = []
    if train.lm_data is not None:
        rows = rows_of(ctx.artifact(train.lm_data.name))
        for i, row in enumerate(rows):
            text = row.get(train.lm_text)
            if not isinstance(text, str):
                raise RunError(
                    f"row {i + 1} of `{train.lm_data.name}`: `{train.lm_text}` holds no text"
                )
            prompt, target = encode(job.tokenizer, "", text, chat=False)
            prompt, target = truncate(prompt, target, train.max_length)
            lm.append(Example(prompt, target, row=i))
        if not lm:
            raise RunError(f"`{train.lm_data.name}` has no rows for the language-modelling term")
    if job.models.teacher is None:
        raise RunError("`loss minillm` needs an online `hf` teacher")
    job.minillm = MiniLLM(train, lm, job.seed)


def _lines(train):
    from .objective import loss_lines

    return loss_lines(train.losses)


def _flat(values: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(values) if values else torch.zeros(0)
