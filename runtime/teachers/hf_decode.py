"""Batched, seeded decoding for white-box teachers: our own loop over the model with a KV cache.

Why not ``model.generate``: its sampler draws from one global RNG stream for the whole batch,
so a sequence's text depends on its neighbours and on its position in the batch. Here every
sequence owns a CPU ``torch.Generator`` seeded from its request's seed (``seed + sample
index``) and draws exactly one uniform number per generated token; the token is picked by
inverse-CDF sampling over the nucleus. A sequence's text therefore depends only on its own
prompt, seed and settings — and on its batch neighbours only through floating-point effects of
left padding on the logits. Uniforms come from CPU generators, so the random stream is the same
on every device.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .base import FinishReason, Generation, TopK


@dataclass
class SequenceSpec:
    """One sequence to decode: a prompt's ids and its sampling settings."""

    prompt_ids: list[int]
    seed: int
    temperature: float
    top_p: float
    max_tokens: int
    stop: Sequence[str] = ()
    top_logprobs: int = 0


@dataclass
class _Track:
    spec: SequenceSpec
    generator: torch.Generator
    tokens: list[int] = field(default_factory=list)
    finish: FinishReason | None = None
    stop_at: int | None = None  # character index where a stop string begins
    searched: int = 0  # characters of text already searched for stop strings
    top_ids: list[torch.Tensor] = field(default_factory=list)
    top_lps: list[torch.Tensor] = field(default_factory=list)
    chosen_lps: list[float] = field(default_factory=list)


def sample_next(
    logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, uniforms: torch.Tensor
) -> torch.Tensor:
    """Pick one token per row of ``logits`` ``[B, V]``.

    Rows with ``temperature == 0`` take the argmax. Other rows sample from
    ``softmax(logits / temperature)`` restricted to the nucleus — the smallest prefix of tokens,
    by descending probability (ties in id order), whose mass reaches ``top_p`` — by inverse CDF
    with ``uniforms[b] ∈ [0, 1)``. Returns int64 ids ``[B]``.
    """
    logits = logits.float()
    greedy = logits.argmax(dim=-1)
    if not bool((temperature > 0).any()):
        return greedy  # all-greedy batches (judges, T = 0 labels) skip the sort
    safe_t = torch.where(temperature > 0, temperature, torch.ones_like(temperature))
    probs = torch.softmax(logits / safe_t[:, None], dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    before = sorted_p.double().cumsum(dim=-1) - sorted_p.double()
    keep = before < top_p.double()[:, None]  # the most likely token is always kept
    kept = torch.where(keep, sorted_p.double(), torch.zeros_like(before))
    cdf = kept.cumsum(dim=-1)
    draw = uniforms.double()[:, None] * cdf[:, -1:]
    pos = torch.searchsorted(cdf, draw, right=True).squeeze(-1)
    pos = torch.minimum(pos, keep.sum(dim=-1) - 1)
    sampled = order.gather(-1, pos[:, None]).squeeze(-1)
    return torch.where(temperature > 0, sampled, greedy)


def forward_keywords(model: Any) -> tuple[str, bool]:
    """(name of the KV-cache argument, whether ``logits_to_keep`` is accepted)."""
    params = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    return cache_kw, "logits_to_keep" in params


def _returned_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad ``rows`` into ``(input_ids, attention_mask)``, both int64 ``[B, L]``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        if row:
            ids[b, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[b, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding: 0 at each row's first real token."""
    return (mask.cumsum(dim=-1) - 1).clamp_min(0)


@torch.no_grad()
def decode_batch(
    model: Any,
    tokenizer: Any,
    specs: Sequence[SequenceSpec],
    *,
    eos_ids: set[int],
    pad_id: int,
) -> list[Generation]:
    """Decode every spec in one left-padded batch; one :class:`Generation` per spec."""
    device = next(model.parameters()).device
    cache_kw, has_keep = forward_keywords(model)
    tracks = [_Track(s, torch.Generator().manual_seed(s.seed)) for s in specs]
    temperature = torch.tensor([s.temperature for s in specs], device=device)
    top_p = torch.tensor([s.top_p for s in specs], device=device)
    ids, mask = left_pad([s.prompt_ids for s in specs], pad_id, device)
    pos = positions(mask)
    extra = {"logits_to_keep": 1} if has_keep else {}
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **extra)
    for _ in range(max(s.max_tokens for s in specs)):
        logits = out.logits[:, -1, :].float()
        uniforms = torch.stack([torch.rand((), generator=t.generator) for t in tracks])
        chosen = sample_next(logits, temperature, top_p, uniforms.to(device))
        want_lp = any(t.spec.top_logprobs for t in tracks if t.finish is None)
        logp = torch.log_softmax(logits, dim=-1) if want_lp else None
        chosen_cpu = chosen.tolist()
        for b, track in enumerate(tracks):
            if track.finish is None:
                _advance(
                    track, chosen_cpu[b], logp[b] if logp is not None else None, tokenizer, eos_ids
                )
            else:
                chosen_cpu[b] = pad_id
        if all(t.finish is not None for t in tracks):
            break
        step = torch.tensor(chosen_cpu, dtype=torch.long, device=device)[:, None]
        mask = torch.cat([mask, torch.ones_like(step)], dim=-1)
        pos = pos[:, -1:] + 1
        out = model(
            input_ids=step,
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            **{cache_kw: _returned_cache(out)},
        )
    return [_finish(t, tokenizer, eos_ids) for t in tracks]


def _advance(
    track: _Track, token: int, logp: torch.Tensor | None, tokenizer: Any, eos_ids: set[int]
) -> None:
    track.tokens.append(token)
    spec = track.spec
    if logp is not None and spec.top_logprobs:
        values, indices = logp.topk(spec.top_logprobs)
        track.top_lps.append(values.cpu())
        track.top_ids.append(indices.to(torch.int32).cpu())
        track.chosen_lps.append(float(logp[token]))
    if token in eos_ids:
        track.finish = "stop"
        return
    if spec.stop:
        text = tokenizer.decode(track.tokens, skip_special_tokens=True)
        longest = max(len(s) for s in spec.stop)
        start = max(0, track.searched - longest + 1)
        hits = [i for i in (text.find(s, start) for s in spec.stop) if i >= 0]
        track.searched = len(text)
        if hits:
            track.finish, track.stop_at = "stop", min(hits)
            return
    if len(track.tokens) >= spec.max_tokens:
        track.finish = "length"


def _finish(track: _Track, tokenizer: Any, eos_ids: set[int]) -> Generation:
    tokens = track.tokens
    body = tokens[:-1] if tokens and tokens[-1] in eos_ids else tokens
    text = tokenizer.decode(body, skip_special_tokens=True)
    if track.stop_at is not None:
        text = text[: track.stop_at]
    topk = None
    if track.spec.top_logprobs:
        topk = TopK(
            logprobs=torch.stack(track.top_lps) if track.top_lps else torch.empty(0, 0),
            target_logprobs=torch.tensor(track.chosen_lps, dtype=torch.float32),
            ids=torch.stack(track.top_ids)
            if track.top_ids
            else torch.empty(0, 0, dtype=torch.int32),
            target_ids=torch.tensor(tokens, dtype=torch.int32),
        )
    return Generation(
        text=text,
        finish_reason=track.finish or "length",
        prompt_tokens=len(track.spec.prompt_ids),
        completion_tokens=len(tokens),
        logprobs=topk,
    )
