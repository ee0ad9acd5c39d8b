"""Batched, seeded decoding for white-box teachers: our own loop over the model with a KV cache.

Why not ``model.generate``: its sampler draws from one global RNG stream for the whole batch,
so a sequence's text depends on its neighbours and on its position in the batch. Here every
sequence owns a CPU ``torch.Generator`` seeded from its request's seed (``seed + sample
index``) and draws exactly one uniform number per generated token; the token is picked by
inverse-CDF sampling over the top-k tokens' nucleus (:func:`sample_next`). A sequence's text therefore depends only on its own
prompt, seed and settings — and on its batch neighbours only through floating-point effects of
left padding on the logits. Uniforms come from CPU generators, so the random stream is the same
on every device.

This loop is the reference and the CPU path. On CUDA, :func:`decode_batch` hands supported
decoders to the static, graph-captured engine of :mod:`.decode_engine`, which keeps the same
contract (the same uniform stream per sequence) without a host round trip per token.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
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
    top_k: int = 0  # 0: off


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
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    uniforms: torch.Tensor,
    *,
    top_k: torch.Tensor | None = None,
    all_greedy: bool | None = None,
) -> torch.Tensor:
    """Pick one token per row of ``logits`` ``[B, V]``.

    Rows with ``temperature == 0`` take the argmax. Other rows sort the tokens of
    ``softmax(logits / temperature)`` by descending probability, ties in id order (a stable
    sort), and keep:

    1. top-k (``top_k[b] > 0``, int64 ``[B]``; ``None`` or ``0``: off): the first ``k`` tokens
       of that order — exactly ``k``; of tokens tied at the ``k``-th probability, the lower ids;
    2. top-p: of those, the smallest prefix whose mass reaches ``top_p`` times the kept mass
       (the nucleus of the top-k distribution renormalized, as transformers' TopK then TopP
       warpers compute it).

    The token is then drawn by inverse CDF over the kept prefix with ``uniforms[b] ∈ [0, 1)``.
    Returns int64 ids ``[B]``. ``all_greedy``, when the caller knows it, spares the
    device-to-host read that decides whether any row samples.
    """
    logits = logits.float()
    greedy = logits.argmax(dim=-1)
    if all_greedy is None:
        all_greedy = not bool((temperature > 0).any())
    if all_greedy:
        return greedy  # all-greedy batches (judges, T = 0 labels) skip the sort
    safe_t = torch.where(temperature > 0, temperature, torch.ones_like(temperature))
    probs = torch.softmax(logits / safe_t[:, None], dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    mass = sorted_p.double()
    threshold = top_p.double()[:, None]
    if top_k is not None:
        rank = torch.arange(mass.shape[-1], device=mass.device)
        in_k = (top_k[:, None] <= 0) | (rank[None, :] < top_k[:, None])
        mass = torch.where(in_k, mass, torch.zeros_like(mass))
        limited = (top_k > 0)[:, None]
        threshold = torch.where(limited, threshold * mass.sum(dim=-1, keepdim=True), threshold)
    before = mass.cumsum(dim=-1) - mass
    keep = before < threshold  # the most likely token is always kept
    if top_k is not None:
        keep = keep & in_k
    kept = torch.where(keep, mass, torch.zeros_like(mass))
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
    slots: int | None = None,
    on_done: Callable[[int, Generation], None] | None = None,
) -> list[Generation]:
    """Decode every spec; one :class:`Generation` per spec. ``on_done(i, generation)`` is
    called as soon as spec ``i`` is decoded.

    On CUDA, for decoders the static engine runs (:mod:`.decode_engine`), the specs go through
    the engine, ``slots`` at a time (``None``: as many as free memory allows), continuously
    batched. Elsewhere they are decoded in left-padded batches of ``slots`` (``None``: one
    batch) by the per-token loop below.
    """
    if not specs:
        return []
    from .decode_engine import engine_for, engine_reason

    if engine_reason(model, specs) is None:
        engine = engine_for(model, specs, slots)
        return engine.run(specs, tokenizer, eos_ids=eos_ids, pad_id=pad_id, on_done=on_done)
    size = slots or len(specs)
    out: list[Generation] = []
    for start in range(0, len(specs), size):
        out += decode_padded(model, tokenizer, specs[start : start + size], eos_ids, pad_id)
        if on_done is not None:
            for i in range(start, len(out)):
                on_done(i, out[i])
    return out


@torch.no_grad()
def decode_padded(
    model: Any, tokenizer: Any, specs: Sequence[SequenceSpec], eos_ids: set[int], pad_id: int
) -> list[Generation]:
    """Decode every spec in one left-padded batch, one token per forward."""
    device = next(model.parameters()).device
    cache_kw, has_keep = forward_keywords(model)
    tracks = [_Track(s, torch.Generator().manual_seed(s.seed)) for s in specs]
    temperature = torch.tensor([s.temperature for s in specs], device=device)
    top_p = torch.tensor([s.top_p for s in specs], device=device)
    top_k = torch.tensor([s.top_k for s in specs], dtype=torch.long, device=device)
    ids, mask = left_pad([s.prompt_ids for s in specs], pad_id, device)
    pos = positions(mask)
    extra = {"logits_to_keep": 1} if has_keep else {}
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **extra)
    for _ in range(max(s.max_tokens for s in specs)):
        logits = out.logits[:, -1, :].float()
        uniforms = torch.stack([torch.rand((), generator=t.generator) for t in tracks])
        chosen = sample_next(logits, temperature, top_p, uniforms.to(device), top_k=top_k)
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
    topk = None
    if track.spec.top_logprobs and track.top_lps:
        topk = (
            torch.stack(track.top_lps),
            torch.stack(track.top_ids),
            torch.tensor(track.chosen_lps, dtype=torch.float32),
        )
    return build_generation(
        track.spec, track.tokens, track.finish, track.stop_at, topk, tokenizer, eos_ids
    )


def build_generation(
    spec: SequenceSpec,
    tokens: list[int],
    finish: FinishReason | None,
    stop_at: int | None,
    topk: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    tokenizer: Any,
    eos_ids: set[int],
) -> Generation:
    """The :class:`Generation` of one decoded sequence. ``tokens`` are the generated ids (EOS
    included when drawn); ``stop_at`` the character index where a stop string begins;
    ``topk`` the per-token ``(top log-probs [n, k], their int32 ids [n, k], the chosen
    token's log-prob [n])``, or ``None`` when no token was generated or none asked."""
    body = tokens[:-1] if tokens and tokens[-1] in eos_ids else tokens
    text = tokenizer.decode(body, skip_special_tokens=True)
    if stop_at is not None:
        text = text[:stop_at]
    logprobs = None
    if spec.top_logprobs:
        values, ids, chosen = (
            topk
            if topk is not None
            else (
                torch.empty(0, 0),
                torch.empty(0, 0, dtype=torch.int32),
                torch.empty(0, dtype=torch.float32),
            )
        )
        logprobs = TopK(
            logprobs=values,
            target_logprobs=chosen,
            ids=ids,
            target_ids=torch.tensor(tokens, dtype=torch.int32),
        )
    return Generation(
        text=text,
        finish_reason=finish or "length",
        prompt_tokens=len(spec.prompt_ids),
        completion_tokens=len(tokens),
        logprobs=logprobs,
    )
