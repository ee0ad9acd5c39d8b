"""What a plan will cost, estimated before running: rows, teacher calls and tokens, logit
storage, training tokens and the memory of the token-level loss path.

Each operator estimates itself from its input's rows (``estimate`` of its descriptor); what
needs the file system is here: the rows of a dataset come from its local file (lines, csv rows,
parquet metadata), and a student's vocabulary from its local config. Stages that drop rows
(filters, judges, pairs) give upper bounds, marked ``rows_upper_bound``.
"""

from __future__ import annotations

import json
from pathlib import Path

from kdlang.ir.descriptor import Estimate
from kdlang.ir.sources import CsvData, HFModel, InlineData, JsonlData, ParquetData
from kdlang.ir.teacher_logits import TOPK_BYTES_PER_ENTRY
from kdlang.ir.training import FUSED_LINEAR_THRESHOLD
from kdlang.syntax.source import kind_of

__all__ = [
    "FUSED_LINEAR_THRESHOLD",
    "TOPK_BYTES_PER_ENTRY",
    "Estimate",
    "dataset_rows",
    "vocab_size",
]


def dataset_rows(data, path: Path | None) -> int | None:
    if isinstance(data, InlineData):
        count = len(data.rows)
    elif path is None or kind_of(path) != "file":
        return data.limit
    elif isinstance(data, JsonlData):
        with path.open("rb") as handle:
            count = sum(1 for line in handle if line.strip())
    elif isinstance(data, CsvData):
        with path.open("rb") as handle:
            count = max(0, sum(1 for line in handle if line.strip()) - 1)
    elif isinstance(data, ParquetData):
        try:
            # pyarrow ships no type information (no py.typed, no stubs)
            import pyarrow.parquet as pq  # type: ignore[import-untyped]

            count = pq.read_metadata(path).num_rows
        except Exception:
            return data.limit
    else:
        return data.limit
    return min(count, data.limit) if data.limit else count


def vocab_size(model, folder: Path | None) -> int | None:
    """``vocab_size`` from a local model's config.json."""
    if not isinstance(model, HFModel) or folder is None:
        return None
    config = folder / "config.json"
    if kind_of(config) != "file":
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        size = data.get("vocab_size") or (data.get("text_config") or {}).get("vocab_size")
        return int(size) if size else None
    except (OSError, ValueError, TypeError, AttributeError):  # unreadable: unknown until loaded
        return None
