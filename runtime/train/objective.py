"""What one optimizer step minimises: the recipe's ``loss`` lines with their scheduled settings.

    loss(step) = Σ_i w_i(step) · sum_i / count_i

``sum_i`` is loss i of :mod:`kdlang.runtime.losses` summed over the step's micro-batch and
``count_i`` the number of positions (pairs, for a loss learning from pairs) it counts in the
whole step, so summing micro-batches (and processes) gives the step's mean. A divergence with
``temperature_scale`` is multiplied by T²; its ``reduction`` picks count_i (``token_mean``: its
teacher positions; ``sum``: 1; ``topk_entries``: teacher positions × the cached k;
``batchmean`` and ``sequence_mean``: :mod:`.reductions`), and its
``topk_mass`` what a cached top-k teacher does with the mass its ids miss.

Each loss is its own descriptor (``kdlang.ir.training``): what it learns from (target tokens or
pairs), what of the teacher it compares with (its distribution, its hidden states), whether it
counts on an on-policy step, the kernel mode of a divergence and its kernel options. This
module reads those and lists no loss by name, so a new token-level divergence is its IR class,
its kernel entry and its reference formula alone.

:meth:`Objective.at_step` settles every loss at the 0-based optimizer step of ``total_steps``
(``loss.at_step``: each weight, temperature, β and α read from its schedule) and the on-policy
ratio λ; the micro-batch loss is computed from those typed values, and the step's metrics
(``weight/<key>``, ``temperature/<key>``, ..., ``on_policy``) are written from them, for the
record only.

On an on-policy step (GKD) the targets are the student's own samples: only the losses that
compare the student with the teacher on them apply (``loss.on_policy``: divergences, hidden
states); those that learn from the data (``sft``, ``dpo``) are skipped for that step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..losses import dpo, head, hidden, sft
from ..losses.divergence_sums import divergence_sum, fused_divergence_sum
from . import dpo_metrics, packing, reductions
from .examples import IGNORE, Batch

if TYPE_CHECKING:
    from kdlang.ir.losses import LossBase


@dataclass(frozen=True)
class LossLine:
    """One ``loss`` line of the recipe: ``loss`` is its IR loss (in an :class:`Objective`, as
    the recipe wrote it; in a :class:`StepLosses`, settled at the step) and ``key`` names it
    in the metrics (``forward_kl``, ``forward_kl#2``, ...)."""

    key: str
    loss: LossBase

    @property
    def name(self) -> str:
        return self.loss.name


def loss_lines(losses) -> list[LossLine]:
    """The ``loss`` lines with their metrics keys: the loss's name, ``#n`` from its second
    line of the same name on."""
    seen: dict[str, int] = {}
    out = []
    for loss in losses:
        seen[loss.name] = seen.get(loss.name, 0) + 1
        key = loss.name if seen[loss.name] == 1 else f"{loss.name}#{seen[loss.name]}"
        out.append(LossLine(key, loss))
    return out


@dataclass(frozen=True)
class StepLosses:
    """Every loss line settled at one optimizer step (typed values, no schedules left) and the
    on-policy ratio λ there: what the step's micro-batch losses are computed from."""

    step: int
    on_policy: float
    lines: tuple[LossLine, ...]

    @property
    def weights(self) -> dict[str, float]:
        """Each line's weight at this step, by key."""
        return {line.key: _number(line.loss.weight) for line in self.lines}

    def metrics(self) -> dict[str, float]:
        """The step's settled values for the record: ``on_policy`` and ``<setting>/<key>`` of
        each line's scheduled settings (``weight``, ``temperature``, ``beta``, ``alpha``)."""
        out = {"on_policy": self.on_policy}
        for line in self.lines:
            for setting in line.loss.scheduled:
                out[f"{setting}/{line.key}"] = getattr(line.loss, setting)
        return out


def layer_index(index: int, layers: int) -> int:
    """An index into ``hidden_states`` (0 = embeddings, ``layers`` = last layer; negative
    counts from the end), or ``ValueError``."""
    if not -(layers + 1) <= index <= layers:
        raise ValueError(f"layer {index} does not exist (the model has layers 0..{layers})")
    return index % (layers + 1)


@dataclass
class Models:
    """The networks a step runs: the student (maybe compiled or LoRA-wrapped), its lm_head, and
    the online teacher's model and lm_head (``None`` without an online teacher)."""

    student: nn.Module
    student_head: nn.Linear
    teacher: nn.Module | None = None
    teacher_head: nn.Linear | None = None
    head_call: Any = None
    """How losses that run the student's lm_head outside ``forward`` (the fused-linear path)
    are called: ``head_call(fn, *args)``, a forward method of a sharded student's root
    (:mod:`.fsdp`); ``None``: ``fn(*args)`` directly."""

    def with_head(self, fn, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.head_call is None:
            return fn(*args, **kwargs)
        return self.head_call(fn, *args, **kwargs)


class Objective:
    """The loss of a ``train`` block.

    ``teacher``: ``"online"`` (teacher forward in ``torch.no_grad``), ``"cached"`` (top-k from a
    ``teacher_logits`` stage) or ``None``. ``path``: ``"materialized"`` (full logits) or
    ``"fused_linear"`` (no full logits: divergences through the fused kernel, other head losses
    in checkpointed chunks). ``width``: the vocabulary rows both models share. ``layers`` and
    ``widths``: (student, teacher) layer counts and hidden widths, for hidden-state losses.
    """

    def __init__(
        self,
        losses,
        *,
        total_steps: int,
        on_policy: Any = 0.0,
        teacher: str | None = None,
        path: str = "materialized",
        width: int | None = None,
        layers: tuple[int, int] = (0, 0),
        widths: tuple[int, int] = (0, 0),
        backend: str = "auto",
    ):
        self.lines = loss_lines(losses)
        self.total_steps = total_steps
        self.on_policy = on_policy
        self.teacher = teacher
        self.path = path
        self.width = width
        self.backend = backend
        self.projections = nn.ModuleDict()
        self.layer_pairs: dict[str, list[tuple[int, int, str]]] = {}
        for line in self.lines:
            if line.loss.teacher != "hidden":
                continue
            pairs = []
            layers_of: Any = line.loss  # a hidden-state loss
            for number, (s, t) in enumerate(layers_of.layers):
                key = f"{line.key.replace('#', '_')}_{number}"
                self.projections[key] = hidden.Projection(*widths)
                pairs.append((layer_index(s, layers[0]), layer_index(t, layers[1]), key))
            self.layer_pairs[line.key] = pairs

    # -- what the step needs -------------------------------------------------------------------

    def needs(self, teacher: str) -> bool:
        """Whether a line compares with the teacher's ``teacher`` (``logits``, ``hidden``)."""
        return any(line.loss.teacher == teacher for line in self.lines)

    @property
    def uses_tokens(self) -> bool:
        return any(line.loss.learns_from == "tokens" for line in self.lines)

    @property
    def uses_pairs(self) -> bool:
        return any(line.loss.learns_from == "pairs" for line in self.lines)

    def applies(self, line: LossLine, on_policy: bool) -> bool:
        """Whether ``line`` counts on a step (on-policy steps skip the losses that learn from
        the data)."""
        return line.loss.on_policy or not on_policy

    def at_step(self, step: int) -> StepLosses:
        """Every line settled at ``step`` (``loss.at_step``), and λ there."""
        from kdlang.ir.values import at_step  # the only import of the language side here

        return StepLosses(
            step=step,
            on_policy=at_step(self.on_policy, step, self.total_steps),
            lines=tuple(
                LossLine(line.key, line.loss.at_step(step, self.total_steps)) for line in self.lines
            ),
        )

    # -- the loss of one micro-batch ----------------------------------------------------------

    def micro_loss(
        self,
        models: Models,
        step: StepLosses,
        counts: dict[str, int],
        tokens: Batch | None = None,
        pairs: Batch | None = None,
        reference: torch.Tensor | None = None,
        on_policy: bool = False,
        metrics: dict | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, parts)``: the micro-batch's share of the step loss, and each line's share
        of its step mean (detached) keyed by ``LossLine.key``. ``step``: the losses settled at
        the step (:meth:`at_step`). ``counts``: ``tokens`` (target positions), ``kd_tokens``
        (positions with a teacher distribution) and ``pairs`` of the whole step.
        ``reference``: the reference log-probs of ``pairs`` (``[2P]``). ``metrics``: where a
        ``dpo`` line adds its share of the step's rewards and log-probs (:mod:`.dpo_metrics`)."""
        lines = [line for line in step.lines if self.applies(line, on_policy)]
        parts: dict[str, torch.Tensor] = {}
        if tokens is not None and tokens.labels.numel() and self.uses_tokens:
            token_lines = [line for line in lines if line.loss.learns_from == "tokens"]
            parts.update(self._token_parts(models, token_lines, counts, tokens))
        pair_lines = [line for line in lines if line.loss.learns_from == "pairs"]
        if pairs is not None and pair_lines:
            policy = self._pair_logprobs(models.student, pairs)
            for line in pair_lines:
                if reference is None:
                    raise ValueError("pairs need their reference log-probs")
                settled: Any = line.loss
                value = dpo.dpo_sum(policy, reference, settled.beta)
                parts[line.key] = value / max(counts["pairs"], 1)
                if metrics is not None:  # records only, not the loss
                    dpo_metrics.add(
                        metrics, line.key, policy, reference, settled.beta, counts["pairs"]
                    )
        weights = step.weights
        loss = sum(
            (weights[key] * value for key, value in parts.items()),
            start=torch.zeros((), device=_device(models.student)),
        )
        return loss, {key: value.detach() for key, value in parts.items()}

    def _token_parts(self, models, lines: list[LossLine], counts, batch: Batch):
        fused = self.path == "fused_linear"
        states = self.needs("hidden")
        s_logits, s_states = forward(models.student, batch, logits=not fused, states=states)
        t_logits = t_states = None
        if self.teacher == "online" and any(line.loss.teacher for line in self.lines):
            with torch.no_grad():
                t_batch = batch.to(_device(models.teacher))
                t_logits, t_states = forward(
                    models.teacher, t_batch, logits=not fused, states=states
                )
        n_tokens, n_kd = max(counts["tokens"], 1), max(counts["kd_tokens"], 1)
        parts = {}
        for line in lines:
            loss: Any = line.loss  # settled: its settings are numbers
            if loss.teacher == "logits":
                value = self._divergence(
                    loss, models, batch, s_logits, s_states, t_logits, t_states
                )
                scale = loss.temperature**2 if loss.temperature_scale else 1.0
                parts[line.key] = value * scale / reductions.denominator(loss, counts, batch)
            elif loss.teacher == "hidden":
                counted = batch.kd_labels != IGNORE
                per_layer = [
                    hidden.hidden_sum(
                        loss.name,
                        s_states[s][:, :-1],
                        t_states[t][:, :-1].to(s_states[s].device),
                        counted,
                        self.projections[key],
                    )
                    for s, t, key in self.layer_pairs[line.key]
                ]
                parts[line.key] = torch.stack(per_layer).mean() / n_kd
            elif fused:  # the target tokens alone: cross-entropy
                value = models.with_head(
                    head.chunked_head_sum,
                    s_states[-1][:, :-1],
                    models.student_head,
                    batch.labels,
                    _sft_rows,
                )
                parts[line.key] = value / n_tokens
            else:
                parts[line.key] = sft.sft_sum(s_logits, batch.labels) / n_tokens
        return parts

    def _divergence(self, loss, models, batch, s_logits, s_states, t_logits, t_states):
        """Σ of the divergence ``loss`` (settled) over the micro-batch's teacher positions."""
        settings = {
            "kind": loss.kernel_mode,
            "temperature": loss.temperature,
            "backend": self.backend,
            **loss.kernel_options(),
        }
        fused_online = self.teacher == "online" and self.path == "fused_linear"
        settings.update(reductions.divergence_settings(loss, batch, gathered=fused_online))
        labels = batch.kd_labels
        width = self.width
        if self.teacher == "online":
            if self.path == "fused_linear":
                h_t = t_states[-1][:, :-1].to(s_states[-1].device)
                return models.with_head(
                    fused_divergence_sum,
                    s_states[-1][:, :-1],
                    models.student_head,
                    h_t,
                    models.teacher_head,
                    labels,
                    width=width,
                    **settings,
                )
            t_logits = t_logits.to(s_logits.device)
            if width is not None:
                s_logits, t_logits = s_logits[..., :width], t_logits[..., :width]
            return divergence_sum(s_logits, labels, teacher_logits=t_logits, **settings)
        settings["topk_mass"] = loss.topk_mass
        topk = (batch.topk_ids, batch.topk_logprobs)
        if self.path == "fused_linear":
            weights = settings.pop("position_weights", None)
            more = () if weights is None else (weights,)

            def rows(z, lab, ids, lps, *w):
                extra = {"position_weights": w[0]} if w else {}
                return divergence_sum(z, lab, teacher_topk=(ids, lps), **settings, **extra)

            return models.with_head(
                head.chunked_head_sum,
                s_states[-1][:, :-1],
                models.student_head,
                labels,
                rows,
                *topk,
                *more,
                width=width,
            )
        return divergence_sum(s_logits, labels, teacher_topk=topk, **settings)

    def _pair_logprobs(self, student: nn.Module, pairs: Batch) -> torch.Tensor:
        logits, _ = forward(student, pairs, logits=True, states=False)
        if pairs.position_ids is not None:
            return packing.sequence_logprobs(logits, pairs)
        return dpo.sequence_logprobs(logits, pairs.labels)


def _sft_rows(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return sft.sft_sum(logits, labels)


def forward(model: nn.Module, batch: Batch, *, logits: bool, states: bool):
    """``(logits[:, :-1] or None, hidden states or None)`` of ``model`` on ``batch``.

    ``states``: every layer's hidden states (``hidden_states``, 0 = embeddings). Without logits
    the head runs on the last position only (``logits_to_keep=1``) and the head's input comes
    back as the last hidden state (alone, unless ``states``), for the fused-linear path."""
    kwargs: dict[str, Any] = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if batch.position_ids is not None:  # packed (.packing): the positions delimit the sequences
        kwargs = {"input_ids": batch.input_ids, "position_ids": batch.position_ids}
        kwargs["use_cache"] = False  # a cache would turn transformers' packed masks off
    if states or not logits:
        kwargs["output_hidden_states"] = True
    if not logits:
        kwargs["logits_to_keep"] = 1
    out = model(**kwargs)
    hidden_states = out.hidden_states if "output_hidden_states" in kwargs else None
    if hidden_states is not None and not states:
        hidden_states = hidden_states[
            -1:
        ]  # drop the other layers' states (the teacher's can be freed)
    return (out.logits[:, :-1] if logits else None), hidden_states


def _number(value: Any) -> float:
    """A setting of a settled loss: a number (its schedule, if any, already read)."""
    return value


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
