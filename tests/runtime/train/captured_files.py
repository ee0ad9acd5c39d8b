"""Captured-logit files in other tools' layouts, written from a tiny teacher's forward pass.

Each row is tokenized as a train tokenizes it (the prompt rendered, the target ending with EOS,
the student's chat template), the teacher scores the whole sequence once, and its top-k
log-probs at every position are written in the layout asked for. Row ``i`` of :class:`Capture`
is the teacher's distribution of token ``i`` (row 0: none), whatever the layout."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch


@dataclass
class Capture:
    text: dict  # the row's text columns
    sequence: list[int]  # prompt + target token ids
    start: int  # where the target starts
    ids: np.ndarray  # [L, k] int64
    logprobs: np.ndarray  # [L, k] float64, at temperature 1


def capture(teacher_dir, tokenizer_dir, rows, render, target: str, k: int) -> list[Capture]:
    """The tiny teacher's top-k at every position of each row (``render(row)``: the prompt)."""
    from kdlang.runtime.train.examples import encode
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    chat = bool(getattr(tokenizer, "chat_template", None))
    out = []
    for row in rows:
        prompt, answer = encode(tokenizer, render(row), row[target], chat=chat)
        sequence = prompt + answer
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([sequence])).logits[0].double()
        top = torch.log_softmax(logits, -1).topk(k, dim=-1)
        ids = np.vstack([np.arange(k)[None], top.indices[:-1].numpy()])
        lps = np.vstack([np.zeros((1, k)), top.values[:-1].numpy()])
        out.append(Capture(dict(row), sequence, len(prompt), ids, lps))
    return out


def tempered(logprobs: np.ndarray, temperature: float) -> np.ndarray:
    """What a capture at ``temperature`` holds: log_softmax of the logits / T, approximated
    from the top-k at T = 1 by p^(1/T) over the k + 1 outcomes (the k ids, the rest)."""
    rest = np.log1p(-np.minimum(np.exp(logprobs).sum(-1, keepdims=True), 1 - 1e-12))
    both = np.concatenate([logprobs, rest], -1) / temperature
    both = both - np.log(np.exp(both).sum(-1, keepdims=True))
    return both[:, :-1]


def renormalized(captures: list[Capture]) -> list[Capture]:
    """The same captures, their top-k log-probs renormalized over the k ids (in float64)."""
    out = []
    for c in captures:
        lps = c.logprobs - np.log(np.exp(c.logprobs).sum(-1, keepdims=True))
        out.append(Capture(c.text, list(c.sequence), c.start, c.ids, lps))
    return out


def write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def kdlang_rows(captures: list[Capture], eos: int) -> list[dict]:
    """The layout a ``teacher_logits`` stage exports: one row per target token."""
    rows = []
    for c in captures:
        target = c.sequence[c.start :]
        rows.append(
            {
                **c.text,
                "topk_ids": c.ids[c.start :].astype(np.int32).tolist(),
                "topk_logprobs": c.logprobs[c.start :].astype(np.float32).tolist(),
                "topk_target_ids": target[:-1] if target[-1] == eos else target,
            }
        )
    return rows


def axolotl_rows(captures: list[Capture], temperature: float = 1.0) -> list[dict]:
    """axolotl's KD dataset after its chat-template strategy: one entry per position of
    ``input_ids``; the prompt's labels -100 and its mask 0; log-probs renormalized over the k
    ids and re-tempered to the KD temperature, as its ``transform_logprobs`` does."""
    rows = []
    for c in captures:
        k = c.ids.shape[1]
        p = np.exp(c.logprobs) / np.exp(c.logprobs).sum(-1, keepdims=True)
        p = p ** (1.0 / temperature)
        lps = np.log(p / p.sum(-1, keepdims=True))
        labels = [-100] * c.start + c.sequence[c.start :]
        rows.append(
            {
                **c.text,
                "input_ids": list(c.sequence),
                "labels": labels,
                "target_token_ids": c.ids.tolist(),
                "target_logprobs": lps.astype(np.float32).tolist(),
                "target_mask": [[int(label != -100)] * k for label in labels],
            }
        )
    return rows


def prompt_logprobs_rows(captures: list[Capture], as_json: bool) -> list[dict]:
    """vLLM's ``prompt_logprobs``: the first position None, then a map of token id to
    log-prob per position (here with the scored token added where it is not in the top k, as
    vLLM does); as a JSON string per row (``json.dumps`` of vLLM's output) or as lists of
    ``{token_id, logprob}``."""
    rows = []
    for c in captures:
        positions: list = [None]
        for i in range(1, len(c.sequence)):
            entries = dict(zip(c.ids[i].tolist(), c.logprobs[i].tolist(), strict=True))
            entries.setdefault(c.sequence[i], float(c.logprobs[i].min()) - 1.0)
            positions.append(entries)
        if as_json:
            value = json.dumps(positions)
        else:
            value = [
                None if p is None else [{"token_id": t, "logprob": v} for t, v in p.items()]
                for p in positions
            ]
        rows.append({**c.text, "input_ids": c.sequence, "prompt_logprobs": value})
    return rows


def _bytes(values: np.ndarray, dtype: str) -> np.ndarray:
    """[P, n] values → [P, n · size] little-endian bytes of ``dtype``."""
    values = np.ascontiguousarray(values.astype(dtype))
    return values.view(np.uint8).reshape(len(values), -1)


def _pack(values: np.ndarray, bits: int) -> np.ndarray:
    """[P, n] unsigned ints → [P, ceil(n·bits/8)] bytes, most significant bit first."""
    shifts = np.arange(bits - 1, -1, -1)
    stream = ((values[..., None] >> shifts) & 1).reshape(len(values), -1).astype(np.uint8)
    return np.packbits(stream, axis=-1)


DISTILLKIT_CONFIG = {
    "d": 512,
    "k": 5,
    "exact_k": 2,
    "exact_dtype": "float32",
    "polynomial_terms": [0, "sqrt"],
    "term_dtype": "float32",
    "residual_bins": [{"scale_dtype": "float16", "element_bits": 4, "num_elements": 3}],
    "delta_encoding": False,
    "error_diffusion": False,
    "normalize_t": False,
}
"""A DistillKit compression config of the top 5: 2 exact values, a 2-term fit of the other 3
and their 4-bit residuals."""


def distillkit_encode(logprobs: np.ndarray, ids: np.ndarray, config: dict) -> tuple:
    """DistillKit's compressed bytes of ``[P, k]`` sorted log-probs (no delta encoding):
    ``(logprob bytes, index bytes, what the bytes decode to)``."""
    exact_k, k = config["exact_k"], config["k"]
    tail = logprobs[:, exact_k:k]
    t = np.arange(k - exact_k, dtype=np.float64)
    terms = np.stack([np.sqrt(t) if e == "sqrt" else t**e for e in config["polynomial_terms"]], -1)
    coeffs = np.linalg.lstsq(terms, tail.T, rcond=None)[0].T.astype(np.float32)
    residual = tail - coeffs.astype(np.float64) @ terms.T
    (b,) = config["residual_bins"]
    bits = b["element_bits"]
    scale = (np.abs(residual).max(-1, keepdims=True) / 2 ** (bits - 1)).astype(np.float16)
    scale = np.where(scale == 0, np.float16(1), scale)
    levels = np.clip(np.round(residual / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    raw = np.concatenate(
        [
            _bytes(logprobs[:, :exact_k], "<f4"),
            _bytes(coeffs, "<f4"),
            _bytes(scale, "<f2"),
            _pack((levels + 2 ** (bits - 1)).astype(np.int64), bits),
        ],
        axis=-1,
    )
    index_bits = int(np.ceil(np.log2(config["d"])))
    decoded = np.concatenate(
        [
            logprobs[:, :exact_k].astype(np.float32).astype(np.float64),
            coeffs.astype(np.float64) @ terms.T + levels * scale.astype(np.float64),
        ],
        -1,
    )
    return raw, _pack(ids.astype(np.int64), index_bits), decoded


def distillkit_rows(captures: list[Capture], config: dict = DISTILLKIT_CONFIG) -> list[dict]:
    """``sample_logits_vllm``'s output rows: ``input_ids`` and, for every position but the
    first, the compressed log-probs and packed ids of the k most likely tokens, sorted."""
    rows = []
    for c in captures:
        raw, packed, _ = distillkit_encode(c.logprobs[1:], c.ids[1:], config)
        rows.append(
            {
                **c.text,
                "input_ids": list(c.sequence),
                "compressed_logprobs": raw.tolist(),
                "bytepacked_indices": packed.tolist(),
            }
        )
    return rows


def write_config(path: Path, config: dict = DISTILLKIT_CONFIG) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
