"""What one optimizer step minimises: the recipe's ``loss`` lines with their scheduled settings.

    loss(step) = Σ_i w_i(step) · term_i / count_i

``term_i`` is the sum of :mod:`.terms` over the step's micro-batch and ``count_i`` the number of
positions (pairs for ``dpo``) it counts in the whole step, so summing micro-batches (and
processes) gives the step's mean. Every weight, temperature, β, α and the on-policy ratio λ is
read through :func:`kdlang.ir.values.at_step` at the 0-based optimizer step of ``total_steps``;
:meth:`Objective.values` returns them all, so the loop logs each one every step. A divergence
with ``temperature_scale`` is multiplied by T².

On an on-policy step (GKD) the targets are the student's own samples: only the terms that
compare the student with the teacher on them (divergences, hidden states) apply; ``sft`` and
``dpo`` learn from the data and are skipped for that step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import terms
from .examples import IGNORE, Batch

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tvd", "skew_kl", "skew_rkl")
HIDDEN = ("hidden_mse", "hidden_cosine")


@dataclass
class Term:
    """One ``loss`` line: ``key`` names it in metrics (``forward_kl``, ``forward_kl#2``, ...)."""

    key: str
    loss: Any

    @property
    def name(self) -> str:
        return self.loss.name


def make_terms(losses) -> list[Term]:
    seen: dict[str, int] = {}
    out = []
    for loss in losses:
        seen[loss.name] = seen.get(loss.name, 0) + 1
        key = loss.name if seen[loss.name] == 1 else f"{loss.name}#{seen[loss.name]}"
        out.append(Term(key, loss))
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
    """How terms that run the student's lm_head outside ``forward`` (the fused-linear path) are
    called: ``head_call(fn, *args)``, a forward method of a sharded student's root
    (:mod:`.fsdp`); ``None``: ``fn(*args)`` directly."""

    def with_head(self, fn, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.head_call is None:
            return fn(*args, **kwargs)
        return self.head_call(fn, *args, **kwargs)


class Objective:
    """The loss of a ``train`` block.

    ``teacher``: ``"online"`` (teacher forward in ``torch.no_grad``), ``"cached"`` (top-k from a
    ``teacher_logits`` stage) or ``None``. ``path``: ``"materialized"`` (full logits) or
    ``"fused_linear"`` (no full logits: divergences through the fused kernel, other head terms
    in checkpointed chunks). ``width``: the vocabulary rows both models share. ``layers`` and
    ``widths``: (student, teacher) layer counts and hidden widths, for hidden-state terms.
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
        self.terms = make_terms(losses)
        self.total_steps = total_steps
        self.on_policy = on_policy
        self.teacher = teacher
        self.path = path
        self.width = width
        self.backend = backend
        self.projections = nn.ModuleDict()
        self.layer_pairs: dict[str, list[tuple[int, int, str]]] = {}
        for term in self.terms:
            if term.name not in HIDDEN:
                continue
            pairs = []
            for number, (s, t) in enumerate(term.loss.layers):
                key = f"{term.key.replace('#', '_')}_{number}"
                self.projections[key] = terms.Projection(*widths)
                pairs.append((layer_index(s, layers[0]), layer_index(t, layers[1]), key))
            self.layer_pairs[term.key] = pairs

    # -- what the step needs -------------------------------------------------------------------

    def uses(self, *names: str) -> bool:
        return any(t.name in names for t in self.terms)

    @property
    def uses_tokens(self) -> bool:
        return any(t.name != "dpo" for t in self.terms)

    @property
    def uses_pairs(self) -> bool:
        return self.uses("dpo")

    def applies(self, term: Term, on_policy: bool) -> bool:
        """Whether ``term`` counts on a step (on-policy steps skip ``sft`` and ``dpo``)."""
        return not (on_policy and term.name in ("sft", "dpo"))

    def values(self, step: int) -> dict[str, float]:
        """Every scheduled value at ``step``: ``weight/<key>``, ``temperature/<key>``,
        ``beta/<key>`` (jsd, dpo), ``alpha/<key>`` (skews) and ``on_policy``."""
        from kdlang.ir.values import at_step  # the only use of the language side here

        out = {"on_policy": at_step(self.on_policy, step, self.total_steps)}
        for term in self.terms:
            loss = term.loss
            out[f"weight/{term.key}"] = at_step(loss.weight, step, self.total_steps)
            if term.name in DIVERGENCES:
                out[f"temperature/{term.key}"] = at_step(loss.temperature, step, self.total_steps)
            if term.name in ("jsd", "dpo"):
                out[f"beta/{term.key}"] = at_step(loss.beta, step, self.total_steps)
            if term.name in ("skew_kl", "skew_rkl"):
                out[f"alpha/{term.key}"] = at_step(loss.alpha, step, self.total_steps)
        return out

    # -- the loss of one micro-batch ----------------------------------------------------------

    def micro_loss(
        self,
        models: Models,
        values: dict[str, float],
        counts: dict[str, int],
        tokens: Batch | None = None,
        pairs: Batch | None = None,
        reference: torch.Tensor | None = None,
        on_policy: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, parts)``: the micro-batch's share of the step loss, and each term's share
        of its step mean (detached) keyed by ``Term.key``. ``counts``: ``tokens`` (target
        positions), ``kd_tokens`` (positions with a teacher distribution) and ``pairs`` of the
        whole step. ``reference``: the reference log-probs of ``pairs`` (``[2P]``)."""
        parts: dict[str, torch.Tensor] = {}
        if tokens is not None and tokens.labels.numel() and self.uses_tokens:
            parts.update(self._token_terms(models, values, counts, tokens, on_policy))
        if pairs is not None and self.uses_pairs and not on_policy:
            policy = self._pair_logprobs(models.student, pairs)
            for term in self.terms:
                if term.name == "dpo":
                    beta = values[f"beta/{term.key}"]
                    parts[term.key] = terms.dpo_sum(policy, reference, beta) / max(
                        counts["pairs"], 1
                    )
        loss = sum(
            (values[f"weight/{key}"] * value for key, value in parts.items()),
            start=torch.zeros((), device=_device(models.student)),
        )
        return loss, {key: value.detach() for key, value in parts.items()}

    def _token_terms(self, models, values, counts, batch: Batch, on_policy: bool):
        fused = self.path == "fused_linear"
        hidden = self.uses(*HIDDEN)
        s_logits, s_states = forward(models.student, batch, logits=not fused, states=hidden)
        t_logits = t_states = None
        if self.teacher == "online" and (self.uses(*DIVERGENCES) or hidden):
            with torch.no_grad():
                t_batch = batch.to(_device(models.teacher))
                t_logits, t_states = forward(
                    models.teacher, t_batch, logits=not fused, states=hidden
                )
        labels, kd_labels = batch.labels, batch.kd_labels
        n_tokens, n_kd = max(counts["tokens"], 1), max(counts["kd_tokens"], 1)
        parts = {}
        for term in self.terms:
            name = term.name
            if name == "sft" and not on_policy:
                if fused:
                    parts[term.key] = models.with_head(
                        terms.chunked_head_sum,
                        s_states[-1][:, :-1],
                        models.student_head,
                        labels,
                        _sft_rows,
                    )
                else:
                    parts[term.key] = terms.sft_sum(s_logits, labels)
                parts[term.key] = parts[term.key] / n_tokens
            elif name in DIVERGENCES:
                value = self._divergence(
                    term, values, models, batch, s_logits, s_states, t_logits, t_states
                )
                temperature = values[f"temperature/{term.key}"]
                scale = temperature**2 if term.loss.temperature_scale else 1.0
                parts[term.key] = value * scale / n_kd
            elif name in HIDDEN:
                counted = kd_labels != IGNORE
                per_layer = [
                    terms.hidden_sum(
                        name,
                        s_states[s][:, :-1],
                        t_states[t][:, :-1].to(s_states[s].device),
                        counted,
                        self.projections[key],
                    )
                    for s, t, key in self.layer_pairs[term.key]
                ]
                parts[term.key] = torch.stack(per_layer).mean() / n_kd
        return parts

    def _divergence(self, term, values, models, batch, s_logits, s_states, t_logits, t_states):
        settings = {
            "kind": term.name,
            "temperature": values[f"temperature/{term.key}"],
            "beta": values.get(f"beta/{term.key}", 0.5),
            "alpha": values.get(f"alpha/{term.key}", 0.1),
            "backend": self.backend,
        }
        labels = batch.kd_labels
        width = self.width
        if self.teacher == "online":
            if self.path == "fused_linear":
                h_t = t_states[-1][:, :-1].to(s_states[-1].device)
                return models.with_head(
                    terms.fused_divergence_sum,
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
            return terms.divergence_sum(s_logits, labels, teacher_logits=t_logits, **settings)
        topk = (batch.topk_ids, batch.topk_logprobs)
        if self.path == "fused_linear":

            def rows(z, lab, ids, lps):
                return terms.divergence_sum(z, lab, teacher_topk=(ids, lps), **settings)

            return models.with_head(
                terms.chunked_head_sum,
                s_states[-1][:, :-1],
                models.student_head,
                labels,
                rows,
                *topk,
                width=width,
            )
        return terms.divergence_sum(s_logits, labels, teacher_topk=topk, **settings)

    def _pair_logprobs(self, student: nn.Module, pairs: Batch) -> torch.Tensor:
        logits, _ = forward(student, pairs, logits=True, states=False)
        return terms.sequence_logprobs(logits, pairs.labels)


def _sft_rows(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return terms.sft_sum(logits, labels)


def forward(model: nn.Module, batch: Batch, *, logits: bool, states: bool):
    """``(logits[:, :-1] or None, hidden states or None)`` of ``model`` on ``batch``.

    ``states``: every layer's hidden states (``hidden_states``, 0 = embeddings). Without logits
    the head runs on the last position only (``logits_to_keep=1``) and the head's input comes
    back as the last hidden state (alone, unless ``states``), for the fused-linear path."""
    kwargs: dict[str, Any] = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if states or not logits:
        kwargs["output_hidden_states"] = True
    if not logits:
        kwargs["logits_to_keep"] = 1
    out = model(**kwargs)
    hidden = out.hidden_states if "output_hidden_states" in kwargs else None
    if hidden is not None and not states:
        hidden = hidden[-1:]  # drop the other layers' states (the teacher's can be freed)
    return (out.logits[:, :-1] if logits else None), hidden


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
