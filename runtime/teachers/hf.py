"""``hf``: a white-box teacher, any transformers causal LM from a local path or a hub id.

Generation runs our own seeded decode loop (:mod:`.hf_decode`) in left-padded batches; scoring
(``topk_logprobs``) runs prompt + target through the model and keeps the teacher's top-k
next-token log-probs for each target token. ``model`` and ``tokenizer`` stay accessible so
training can run the teacher online.

Determinism: the same prompt, seed, settings and *batch composition* give identical text on the
same hardware and software. The runtime keeps batch composition fixed by sharding requests
deterministically and passing each shard to ``generate`` as one list. Across different batch
compositions a request's text differs only where left padding changes the logits by
floating-point noise enough to flip a token choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .base import (
    Generation,
    GenerationRequest,
    OnResult,
    Prompt,
    Teacher,
    TopK,
)
from .decode_engine import engine_reason
from .hf_decode import SequenceSpec, decode_batch, forward_keywords, left_pad, positions
from .prompts import encode_pair, encode_prompt

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` ⇒ ``cuda`` when available, else ``cpu``; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"`` ⇒ bfloat16 on CUDA, float32 elsewhere; names like ``"bf16"`` accepted."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected 'auto' or one of {sorted(DTYPES)}")
    return DTYPES[dtype]


ENGINE_GROUP = 1024
"""Requests per :meth:`HFTeacher.decode_groups` group when the CUDA decode engine runs."""


class HFTeacher(Teacher):
    """A transformers causal LM as teacher.

    ``path``: local directory or hub id (``revision`` passed through). ``chat_template``:
    ``"auto"`` uses the tokenizer's template when it has one, ``"none"`` never does, any other
    string is used as the Jinja template. ``batch_size``: sequences per forward batch (a
    request with ``n`` samples counts ``n``) when scoring, and when generating off CUDA.
    ``decode_slots``: sequences the CUDA decode engine keeps in flight (``None``: as many as
    half the free device memory holds, at most 256), and the rows a stage sends per call
    (:meth:`rows_per_call`). ``attention``: transformers' ``attn_implementation`` (``auto``:
    its default).
    """

    white_box = True

    def __init__(
        self,
        path: str | Path,
        *,
        revision: str | None = None,
        dtype: str | torch.dtype = "auto",
        device: str | torch.device = "auto",
        batch_size: int = 16,
        trust_remote_code: bool = False,
        chat_template: str = "auto",
        chat_template_args: dict[str, Any] | None = None,
        decode_slots: int | None = None,
        attention: str = "auto",
    ) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.path = str(path)
        self.revision = revision
        self.batch_size = batch_size
        self.decode_slots = decode_slots
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.path, revision=revision, trust_remote_code=trust_remote_code
        )
        self.model = AutoModelForCausalLM.from_pretrained(
            self.path,
            revision=revision,
            trust_remote_code=trust_remote_code,
            **_dtype_kw(self.dtype),
            **attention_kw(attention),
        )
        self.model.to(self.device).eval()
        _, self._keeps_logits = forward_keywords(self.model)
        if chat_template not in ("auto", "none"):
            self.tokenizer.chat_template = chat_template
        self.chat = chat_template != "none" and bool(getattr(self.tokenizer, "chat_template", None))
        self.chat_args: dict[str, Any] = dict(chat_template_args or {})
        """Keyword arguments of the chat template (the model's ``chat_template_args``)."""
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        # Padding positions are masked out, so any id works when the tokenizer defines none.
        self.pad_id = pad if pad is not None else min(self.eos_ids, default=0)

    def __repr__(self) -> str:
        return f"HFTeacher(path={self.path!r}, revision={self.revision!r}, device={str(self.device)!r}, dtype={self.dtype})"

    # ---------------------------------------------------------------- generation

    def generate(
        self, requests: Sequence[GenerationRequest], *, on_result: OnResult | None = None
    ) -> list[list[Generation]]:
        """See :meth:`Teacher.generate`. Sequences (request × sample) are sorted by prompt
        length, longest first, and decoded ``batch_size`` at a time; the batches depend only
        on ``requests``, so the same list gives the same batches."""
        specs: list[tuple[int, int, SequenceSpec]] = []
        for index, request in enumerate(requests):
            prompt_ids = self._prompt_ids(request.prompt, request.system)
            for sample in range(request.n):
                spec = SequenceSpec(
                    prompt_ids=prompt_ids,
                    seed=request.seed + sample,
                    temperature=request.temperature,
                    top_p=request.top_p,
                    max_tokens=request.max_tokens,
                    stop=tuple(request.stop or ()),
                    top_logprobs=request.top_logprobs,
                    top_k=request.top_k,
                )
                specs.append((index, sample, spec))
        specs.sort(key=lambda item: -len(item[2].prompt_ids))
        results: list[list[Generation | None]] = [[None] * r.n for r in requests]
        remaining = [r.n for r in requests]
        # The CUDA decode engine gives the same tokens whatever the batch: all sequences go to
        # it at once, continuously batched; the per-token loop decodes ``batch_size`` at a time.
        engine = bool(specs) and engine_reason(self.model, [s for _, _, s in specs]) is None
        size = len(specs) if engine else self.batch_size
        for start in range(0, len(specs), size):
            chunk = specs[start : start + size]

            def done(j: int, generation: Generation, chunk=chunk) -> None:
                index, sample, _ = chunk[j]
                results[index][sample] = generation
                self.stats.prompt_tokens += generation.prompt_tokens
                self.stats.completion_tokens += generation.completion_tokens
                remaining[index] -= 1
                if remaining[index] == 0:
                    self.stats.requests += 1
                    if on_result is not None:
                        on_result(index, list(results[index]))  # type: ignore[arg-type]

            decode_batch(
                self.model,
                self.tokenizer,
                [spec for _, _, spec in chunk],
                eos_ids=self.eos_ids,
                pad_id=self.pad_id,
                slots=self.decode_slots if engine else None,
                on_done=done,
            )
            self.stats.calls += 1
        return [list(r) for r in results]  # type: ignore[misc]

    def rows_per_call(self, samples: int = 1) -> int:
        """Requests of ``samples`` samples a stage sends per :meth:`generate` call: enough to
        fill ``decode_slots`` when set (the CUDA engine's slots), else one ``batch_size``
        batch. Settings only, never free memory: a resumed stage cuts the same chunks."""
        return max(1, (self.decode_slots or self.batch_size) // max(1, samples))

    def decode_groups(self, requests: Sequence[GenerationRequest]) -> list[list[int]]:
        """The request indices :meth:`generate` decodes together, batch by batch, when every
        request asks for one sample. Generating each group's requests alone (in this order)
        decodes exactly the same batches, so the work can be split by groups without changing
        a token."""
        if any(r.n != 1 for r in requests):
            raise ValueError("decode_groups needs requests of one sample each")
        lengths = [len(self._prompt_ids(r.prompt, r.system)) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: -lengths[i])  # stable, like generate
        # The CUDA engine's tokens do not depend on the batch, so any split decodes the same:
        # groups of ENGINE_GROUP keep its slots busy between two logged chunks.
        probe = [
            SequenceSpec([0] * n, seed=0, temperature=0.0, top_p=1.0, max_tokens=r.max_tokens)
            for n, r in zip(lengths, requests, strict=True)
        ]
        engine = bool(probe) and engine_reason(self.model, probe) is None
        size = ENGINE_GROUP if engine else self.batch_size
        return [order[s : s + size] for s in range(0, len(order), size)]

    # ---------------------------------------------------------------- scoring

    @torch.no_grad()
    def topk_logprobs(
        self,
        prompts: Sequence[Prompt],
        targets: Sequence[str],
        k: int,
        *,
        systems: Sequence[str | None] | None = None,
    ) -> list[TopK]:
        """See :meth:`Teacher.topk_logprobs`. Rows are ``log_softmax`` of the model's float32
        logits at the position *before* each target token, top-``k`` sorted descending; ids
        are int32, log-probs float32. The target's own token ids come back as ``target_ids``
        so a student can be fed exactly the same sequence."""
        if len(prompts) != len(targets):
            raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
        vocab = self.model.get_output_embeddings().out_features
        if not 1 <= k <= vocab:
            raise ValueError(f"k must be in 1..{vocab}, got {k}")
        systems = list(systems) if systems is not None else [None] * len(prompts)
        pairs = [
            self.encode_pair(p, t, s) for p, t, s in zip(prompts, targets, systems, strict=True)
        ]
        order = sorted(range(len(pairs)), key=lambda i: -sum(map(len, pairs[i])))
        results: list[TopK | None] = [None] * len(pairs)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, topk in zip(chunk, self._score_batch([pairs[i] for i in chunk], k), strict=True):
                results[i] = topk
            self.stats.calls += 1
        self.stats.requests += len(pairs)
        self.stats.prompt_tokens += sum(len(p) + len(t) for p, t in pairs)
        return results  # type: ignore[return-value]

    def _score_batch(self, pairs: list[tuple[list[int], list[int]]], k: int) -> list[TopK]:
        longest = max(len(t) for _, t in pairs)
        ids, mask = left_pad([p + t for p, t in pairs], self.pad_id, self.device)
        # Left padding puts every target at the end, so the last longest+1 positions hold all
        # the logits needed; the model's own head still runs (soft-capping, scaling kept).
        keep = longest + 1
        extra = {"logits_to_keep": keep} if self._keeps_logits else {}
        logits = self._forward(ids, mask, **extra)[:, -keep:, :]
        out = []
        for b, (_, target) in enumerate(pairs):
            size = len(target)
            rows = logits[b, keep - size - 1 : keep - 1].float()
            logp = torch.log_softmax(rows, dim=-1)
            values, indices = logp.topk(k, dim=-1)
            target_ids = torch.tensor(target, dtype=torch.long, device=logp.device)
            chosen = logp.gather(-1, target_ids[:, None]).squeeze(-1)
            out.append(
                TopK(
                    logprobs=values.cpu(),
                    ids=indices.to(torch.int32).cpu(),
                    target_ids=target_ids.to(torch.int32).cpu(),
                    target_logprobs=chosen.cpu(),
                )
            )
        return out

    # ---------------------------------------------------------------- white-box access

    @torch.no_grad()
    def logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Float32 logits ``[B, L, V]`` for ``input_ids`` ``[B, L]`` (no gradient). Position
        ids follow ``attention_mask``, so left- or right-padded batches both work."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self._forward(input_ids.to(self.device), attention_mask.to(self.device)).float()

    def encode_pair(
        self, prompt: Prompt, target: str, system: str | None = None
    ) -> tuple[list[int], list[int]]:
        """``(prompt_ids, target_ids)`` exactly as ``topk_logprobs`` feeds them to the model."""
        prompt_ids, target_ids = encode_pair(
            self.tokenizer, prompt, target, system, chat=self.chat, args=self.chat_args
        )
        if not prompt_ids:
            raise ValueError("the prompt encodes to no tokens; nothing to condition on")
        return prompt_ids, target_ids

    def close(self) -> None:
        """Drop the model and free accelerator memory."""
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _prompt_ids(self, prompt: Prompt, system: str | None) -> list[int]:
        ids = encode_prompt(self.tokenizer, prompt, system, chat=self.chat, args=self.chat_args)
        if not ids:
            raise ValueError("the prompt encodes to no tokens; nothing to condition on")
        return ids

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, **extra: Any) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), **extra)
        return out.logits


def attention_kw(attention: str) -> dict[str, str]:
    """``from_pretrained``'s ``attn_implementation`` for a model's ``attention`` setting (none
    for ``auto``: transformers' own default)."""
    return {} if attention in ("auto", None) else {"attn_implementation": attention}


def _dtype_kw(dtype: torch.dtype) -> dict[str, torch.dtype]:
    # transformers renamed `torch_dtype` to `dtype` in 4.56; older releases reject `dtype`.
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": dtype}


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids
