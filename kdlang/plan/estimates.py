"""What a plan will cost, estimated before running: rows, teacher calls and tokens, logit
storage, training tokens and the memory of the token-level loss path.

Row counts come from local files (lines, csv rows, parquet metadata); stages that drop rows
(filters, judges, pairs) give upper bounds, marked ``rows_upper_bound``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from kdlang.ir import stages as st
from kdlang.ir import training as tr
from kdlang.ir.sources import CsvData, HFModel, InlineData, JsonlData, ParquetData

FUSED_LINEAR_THRESHOLD = 2 * 2**30
"""Materialized fp32 logits above this many bytes make ``loss_path = auto`` pick fused_linear."""

TOPK_BYTES_PER_ENTRY = 4 + 2  # int32 id + float16 log-prob


@dataclass
class Estimate:
    rows: int | None = None
    rows_upper_bound: bool = False
    teacher_calls: int | None = None
    generations: int | None = None
    generated_tokens_max: int | None = None
    logit_storage_bytes: int | None = None
    train_steps: int | None = None
    train_tokens_max: int | None = None
    logits_bytes: int | None = None
    loss_path: str | None = None
    loss_path_reason: str | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, False) or k == "rows"}


def dataset_rows(data, path: Path | None) -> int | None:
    if isinstance(data, InlineData):
        count = len(data.rows)
    elif path is None or not path.is_file():
        return data.limit
    elif isinstance(data, JsonlData):
        with path.open("rb") as handle:
            count = sum(1 for line in handle if line.strip())
    elif isinstance(data, CsvData):
        with path.open("rb") as handle:
            count = max(0, sum(1 for line in handle if line.strip()) - 1)
    elif isinstance(data, ParquetData):
        try:
            import pyarrow.parquet as pq

            count = pq.read_metadata(path).num_rows
        except Exception:
            return data.limit
    else:
        return data.limit
    return min(count, data.limit) if data.limit else count


def stage_estimate(stage, rows: int | None, upper: bool) -> Estimate:
    est = Estimate(rows=rows, rows_upper_bound=upper)
    if rows is None:
        return est
    if isinstance(stage, st.LabelStage):
        est.rows = rows * stage.samples
        est.teacher_calls = rows * stage.samples
        est.generated_tokens_max = est.teacher_calls * stage.max_tokens
    elif isinstance(stage, st.ExpandStage):
        made = stage.n if stage.method == "self_instruct" else rows * stage.rounds
        est.rows = made + (rows if stage.keep_seeds else 0)
        est.rows_upper_bound = True
        est.teacher_calls = made
        est.generated_tokens_max = made * stage.max_tokens
    elif isinstance(stage, st.CurateStage):
        est.rows = rows * stage.per_item
        est.teacher_calls = rows
        est.generated_tokens_max = rows * stage.per_item * stage.max_tokens
    elif isinstance(stage, st.JudgeStage):
        est.rows_upper_bound = True
        est.teacher_calls = rows
        est.generated_tokens_max = rows * stage.max_tokens
    elif isinstance(stage, st.PairsStage):
        est.rows = rows // 2
        est.rows_upper_bound = True
    elif isinstance(stage, st.FilterStage):
        est.rows_upper_bound = True
    elif isinstance(stage, st.TeacherLogitsStage):
        est.teacher_calls = rows
        est.logit_storage_bytes = rows * stage.max_length * stage.top_k * TOPK_BYTES_PER_ENTRY
    return est


def train_estimate(train: tr.Train, rows: int | None, upper: bool, vocab: int | None) -> Estimate:
    est = Estimate(rows=rows, rows_upper_bound=upper)
    if train.max_steps is not None:
        est.train_steps = train.max_steps
    elif rows is not None:
        est.train_steps = train.epochs * max(1, math.ceil(rows / train.batch))
    if est.train_steps is not None:
        est.train_tokens_max = est.train_steps * train.batch * train.max_length
    token_level = any(loss.name in tr.DIVERGENCES for loss in train.losses)
    micro_tokens = math.ceil(train.batch / train.grad_accum) * train.max_length
    if vocab is not None:
        est.logits_bytes = micro_tokens * vocab * 4
    if not token_level:
        est.loss_path, est.loss_path_reason = "materialized", "no token-level divergence"
    elif train.loss_path != "auto":
        est.loss_path, est.loss_path_reason = train.loss_path, "set in the recipe"
    elif est.logits_bytes is None:
        est.loss_path, est.loss_path_reason = (
            "auto",
            "vocabulary size unknown until the student loads",
        )
    elif est.logits_bytes > FUSED_LINEAR_THRESHOLD:
        est.loss_path = "fused_linear"
        est.loss_path_reason = f"{micro_tokens} tokens x V={vocab} fp32 logits = {_gib(est.logits_bytes)} per micro-batch"
    else:
        est.loss_path = "materialized"
        est.loss_path_reason = f"logits are {_gib(est.logits_bytes)} per micro-batch"
    return est


def vocab_size(model, folder: Path | None) -> int | None:
    """``vocab_size`` from a local model's config.json."""
    if not isinstance(model, HFModel) or folder is None:
        return None
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        size = data.get("vocab_size") or (data.get("text_config") or {}).get("vocab_size")
        return int(size) if size else None
    except (OSError, ValueError, TypeError, AttributeError):  # unreadable: unknown until loaded
        return None


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"
