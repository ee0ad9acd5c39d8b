"""Decoders of captured teacher logits in the layouts other tools publish.

A dataset declared with ``logits = topk(layout = ...)`` is read here into one ``[P, k]`` array
of token ids and one of log-probs per row, at the equivalent of temperature 1
(:func:`retemper`). Layouts that carry the teacher's token ids (``input_ids``) are decoded
position by position: row ``i`` of the arrays is the teacher's distribution of token ``i``
given the tokens before it, row 0 having none (``valid`` marks the rows that have one):

- ``axolotl``: ``target_token_ids``, ``target_logprobs``, ``target_mask`` of one entry per
  position of ``input_ids`` (axolotl's KD datasets after its chat-template strategy; the
  trainer shifts them by one against the logits, as here);
- ``prompt_logprobs``: vLLM's per-position maps of token id to log-prob (the first position
  ``None``), as a list or a JSON string per row; the ``k`` most likely entries are kept, ``k``
  being the fewest any position holds (vLLM adds the scored token when it is not in its top k);
- ``distillkit``: DistillKit's ``compressed_logprobs`` and ``bytepacked_indices`` (one entry
  per position but the first), decoded as its ``LogprobCompressor`` does (:mod:`.captured_distillkit`).

The ``kdlang`` layout is the ``teacher_logits`` stage's own: one row per target token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .captured_distillkit import decode_indices, decode_logprobs
from .data import read_arrow
from .errors import RunError

if TYPE_CHECKING:
    from kdlang.ir.captured import CapturedLogits

    from .context import StageContext

TOPK_IDS, TOPK_LOGPROBS, TOPK_TARGETS = "topk_ids", "topk_logprobs", "topk_target_ids"
TOKENS, VALID = "tokens", "valid"
FLOOR = -1e4
"""Stand-in for a log-prob of −inf (an entry a teacher gave no mass): e^FLOOR is 0 in float32
and float64, and the divergences stay finite."""


def captured_spec(ctx: StageContext, name: str) -> CapturedLogits | None:
    """The ``logits`` declaration of the dataset a train's data comes from (through filters)."""
    node = ctx.plan.node(name)
    while node.op == "filter" and node.inputs:
        node = ctx.plan.node(node.inputs[0])
    return getattr(node.node, "logits", None) if node.kind == "dataset" else None


def read_data(ctx: StageContext, train, tokenizer, read_table):
    """The rows of the train's data and their top-k: decoded from the layout its dataset
    declares (whose tokenizer, if it names one, must be the student's ``tokenizer``), else as
    ``read_table`` reads kdlang's own columns."""
    name = train.data.name
    spec = captured_spec(ctx, name)
    if spec is None:
        return read_table(ctx.artifact(name))
    check_tokenizer(ctx, name, tokenizer, train.student.name)
    config = ctx.path(spec.span.file, spec.config) if spec.config is not None else None
    return read_captured(ctx.artifact(name), spec, config)


def check_tokenizer(ctx: StageContext, name: str, tokenizer, student: str) -> None:
    """The tokenizer the captured logits name (``tokenizer = ...``), if any, must have the
    student's token → id table."""
    spec = captured_spec(ctx, name)
    if spec is None or spec.tokenizer is None:
        return
    from transformers import AutoTokenizer

    local = ctx.path(spec.span.file, spec.tokenizer)
    try:
        named = AutoTokenizer.from_pretrained(str(local) if local.exists() else spec.tokenizer)
    except (OSError, ValueError) as error:
        raise RunError(f"cannot load the tokenizer the captured logits name: {error}") from None
    if named.get_vocab() != tokenizer.get_vocab():  # token -> id, added tokens included
        raise RunError(
            f"the tokenizer the captured logits of `{name}` name is not the student "
            f"`{student}`'s; token-level losses need one vocabulary"
        )


def read_captured(
    folder: Path, spec: CapturedLogits, config: Path | None = None
) -> tuple[list[dict], dict[str, list[np.ndarray]]]:
    """The rows of a data artifact without the layout's columns, and the decoded log-probs:
    ``topk_ids`` (int32) and ``topk_logprobs`` (float32, re-tempered to T = 1) per row, with
    ``tokens`` and ``valid`` for the layouts that carry the teacher's tokens."""
    table = read_arrow(folder)
    columns = spec.columns()
    missing = [c for c in columns.values() if c not in table.column_names]
    if missing:
        raise RunError(
            f"the data has no column {', '.join(f'`{c}`' for c in missing)} of the "
            f"`{spec.layout}` layout"
        )
    layout_columns = [*columns.values(), *([TOPK_TARGETS] if spec.layout == "kdlang" else [])]
    names = [n for n in table.column_names if n not in layout_columns]
    rows = table.select(names).to_pylist()
    decoded = _DECODERS[spec.layout](table, columns, config)
    decoded[TOPK_LOGPROBS] = [retemper(lp, spec.temperature) for lp in decoded[TOPK_LOGPROBS]]
    return rows, decoded


def retemper(logprobs: np.ndarray, temperature: float) -> np.ndarray:
    """Log-probs captured at ``temperature`` T_c as the log-probs at temperature 1 that the
    losses soften: with M = min(Σ_k p_k, 1), the k + 1 outcomes (p_1 … p_k, 1 − M) raised to
    T_c and normalized, of which the k ids are kept. A loss at T then sees p^(T_c / T),
    normalized over the k ids (renormalize) or with the rest (keep, uniform)."""
    finite = np.where(np.isfinite(logprobs), logprobs, FLOOR).astype(np.float32)
    if temperature == 1.0 or not finite.size:
        return finite
    lp = finite.astype(np.float64)
    mass = np.minimum(np.exp(lp).sum(-1, keepdims=True), 1.0)
    with np.errstate(divide="ignore"):
        rest = np.log1p(-mass)
    scaled = np.concatenate([lp, rest], axis=-1) * temperature
    top = scaled.max(-1, keepdims=True)
    norm = top + np.log(np.exp(scaled - top).sum(-1, keepdims=True))
    return np.maximum(scaled[..., :-1] - norm, FLOOR).astype(np.float32)


def _nested(column, dtype) -> list[np.ndarray]:
    """``list<list<x>>`` → one ``[T, k]`` array per row."""
    out = []
    for value in column.to_pylist():
        array = np.asarray(value or [], dtype)
        out.append(array.reshape(len(value or []), -1) if array.size else array.reshape(0, 0))
    return out


def _kdlang(table: pa.Table, columns: dict[str, str], config) -> dict[str, list[np.ndarray]]:
    out = {
        TOPK_IDS: _nested(table.column(columns["ids"]), np.int32),
        TOPK_LOGPROBS: _nested(table.column(columns["logprobs"]), np.float32),
    }
    if TOPK_TARGETS in table.column_names:
        out[TOPK_TARGETS] = [
            np.asarray(v, np.int64) for v in table.column(TOPK_TARGETS).to_pylist()
        ]
    return out


def _tokens(table: pa.Table, column: str) -> list[np.ndarray]:
    return [np.asarray(v or [], np.int64) for v in table.column(column).to_pylist()]


def _axolotl(table: pa.Table, columns: dict[str, str], config) -> dict[str, list[np.ndarray]]:
    tokens = _tokens(table, columns["tokens"])
    out: dict[str, list[np.ndarray]] = {TOPK_IDS: [], TOPK_LOGPROBS: [], TOKENS: tokens, VALID: []}
    values = (table.column(columns[r]).to_pylist() for r in ("ids", "logprobs", "mask"))
    for row, (ids, lps, mask) in enumerate(zip(*values, strict=True)):
        try:
            ids_a = np.asarray(ids, np.int64)
            lps_a = np.asarray(lps, np.float64)
            mask_a = np.asarray(mask, np.int64).reshape(len(ids_a), -1)
        except (ValueError, TypeError):
            raise RunError(
                f"row {row + 1}: the axolotl columns hold positions of different lengths"
            ) from None
        if ids_a.ndim != 2 or lps_a.shape != ids_a.shape or len(ids_a) != len(tokens[row]):
            raise RunError(
                f"row {row + 1}: axolotl's target columns must hold one [k] entry per position "
                f"of `{columns['tokens']}` ({len(tokens[row])}), got {list(lps_a.shape)}"
            )
        valid = mask_a.any(-1) & mask_a.all(-1)
        out[TOPK_IDS].append(ids_a.astype(np.int32))
        out[TOPK_LOGPROBS].append(lps_a.astype(np.float32))
        out[VALID].append(valid)
    return out


def _entries(position: Any) -> list[tuple[int, float]]:
    """One position of vLLM's prompt log-probs as (token id, log-prob) pairs."""
    if not position:
        return []
    if isinstance(position, dict):
        items = list(position.items())
    else:
        items = [
            (e.get("token_id", e.get("id", e.get("key"))), e.get("logprob", e.get("value")))
            if isinstance(e, dict)
            else tuple(e)
            for e in position
        ]
    pairs = []
    for key, value in items:
        if value is None:
            continue  # a key of another position (a parquet struct holds every key)
        logprob = value.get("logprob") if isinstance(value, dict) else value
        pairs.append((int(key), float(logprob)))
    return pairs


def _prompt_logprobs(
    table: pa.Table, columns: dict[str, str], config
) -> dict[str, list[np.ndarray]]:
    tokens = _tokens(table, columns["tokens"])
    parsed = []
    for row, value in enumerate(table.column(columns["logprobs"]).to_pylist()):
        try:
            positions = json.loads(value) if isinstance(value, str) else (value or [])
            parsed.append([_entries(p) for p in positions])
        except (ValueError, TypeError, AttributeError, KeyError):
            raise RunError(
                f"row {row + 1}: `{columns['logprobs']}` is no list of per-position maps from "
                "token id to log-prob"
            ) from None
        if len(parsed[-1]) != len(tokens[row]):
            raise RunError(
                f"row {row + 1}: `{columns['logprobs']}` has {len(parsed[-1])} positions, "
                f"`{columns['tokens']}` {len(tokens[row])} tokens"
            )
    counts = [len(p) for positions in parsed for p in positions if p]
    if not counts:
        raise RunError(f"`{columns['logprobs']}` holds no log-probs")
    k = min(counts)
    out: dict[str, list[np.ndarray]] = {TOPK_IDS: [], TOPK_LOGPROBS: [], TOKENS: tokens, VALID: []}
    for positions in parsed:
        ids = np.tile(np.arange(k, dtype=np.int32), (len(positions), 1))
        lps = np.zeros((len(positions), k), np.float32)
        valid = np.zeros(len(positions), bool)
        for i, entries in enumerate(positions):
            if entries:
                best = sorted(entries, key=lambda e: -e[1])[:k]
                ids[i] = [e[0] for e in best]
                lps[i] = [e[1] for e in best]
                valid[i] = True
        out[TOPK_IDS].append(ids)
        out[TOPK_LOGPROBS].append(lps)
        out[VALID].append(valid)
    return out


def _distillkit(table: pa.Table, columns: dict[str, str], config) -> dict[str, list[np.ndarray]]:
    from kdlang.check.captured import read_compression_config

    try:
        settings = read_compression_config(config)
    except Exception as error:  # unreadable since the check: say what, not a traceback
        raise RunError(f"cannot read DistillKit's compression config {config}: {error}") from None
    tokens = _tokens(table, columns["tokens"])
    out: dict[str, list[np.ndarray]] = {TOPK_IDS: [], TOPK_LOGPROBS: [], TOKENS: tokens, VALID: []}
    packed_lps = table.column(columns["logprobs"]).to_pylist()
    packed_ids = table.column(columns["ids"]).to_pylist()
    for row, (lp_bytes, id_bytes) in enumerate(zip(packed_lps, packed_ids, strict=True)):
        length = len(tokens[row])
        if len(lp_bytes or []) != max(0, length - 1) or len(id_bytes or []) != len(lp_bytes or []):
            raise RunError(
                f"row {row + 1}: DistillKit's columns must hold one entry per token of "
                f"`{columns['tokens']}` but the first ({max(0, length - 1)}), got "
                f"{len(lp_bytes or [])} and {len(id_bytes or [])}"
            )
        try:
            lps = decode_logprobs(np.asarray(lp_bytes, np.uint8).reshape(length - 1, -1), settings)
            ids = decode_indices(np.asarray(id_bytes, np.uint8).reshape(length - 1, -1), settings)
        except ValueError as error:
            raise RunError(f"row {row + 1}: DistillKit's compressed logits: {error}") from None
        k = settings.k
        out[TOPK_IDS].append(np.vstack([np.arange(k, dtype=np.int32)[None], ids]))
        out[TOPK_LOGPROBS].append(np.vstack([np.zeros((1, k), np.float32), lps]))
        out[VALID].append(np.arange(length) > 0)
    return out


_DECODERS = {
    "kdlang": _kdlang,
    "axolotl": _axolotl,
    "prompt_logprobs": _prompt_logprobs,
    "distillkit": _distillkit,
}


def align(
    row: int, sequence: list[int], start: int, captured: dict[str, list[np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's rows for the target tokens ``sequence[start:]`` of row ``row``: the
    student's tokens must be the teacher's where both have one (else a RunError naming the
    first position that differs); the rows stop where the teacher's positions end, or at the
    first position without a teacher distribution (those target tokens get no KD loss)."""
    tokens = captured[TOKENS][row]
    shared = min(len(tokens), len(sequence))
    differ = np.nonzero(tokens[:shared] != np.asarray(sequence[:shared], np.int64))[0]
    if differ.size:
        at = int(differ[0])
        raise RunError(
            f"row {row + 1}: the student's tokens differ from the tokens the teacher's logits "
            f"were captured on at position {at} (student id {sequence[at]}, teacher id "
            f"{int(tokens[at])}); render the prompt and target as the capture did"
        )
    valid = captured[VALID][row][start:shared]
    end = start + (int(np.argmin(valid)) if not valid.all() else len(valid))
    return captured[TOPK_IDS][row][start:end], captured[TOPK_LOGPROBS][row][start:end]
