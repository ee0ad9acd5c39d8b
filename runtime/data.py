"""Data between stages: Arrow files written deterministically, read as ``datasets.Dataset``.

A data artifact is one Arrow IPC stream file (``data.arrow``): the same rows always give the same
bytes, so an artifact's content hash identifies its content, and a resumed run can be compared
byte for byte with an uninterrupted one. Sources (``jsonl``, ``csv``, ``parquet``, ``hf``,
``inline``) are read here too.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa

from .cache import DATA_FILE

__all__ = ["DATA_FILE", "load_source", "read_rows", "write_rows"]


def write_rows(rows: list[dict[str, Any]], folder: Path, columns: list[str] | None = None) -> int:
    """Write rows to ``folder/data.arrow``; returns the row count. ``columns`` fixes the order
    (and keeps the columns of an empty result)."""
    names = columns or (list(rows[0]) if rows else [])
    for row in rows:
        for key in row:
            if key not in names:
                names.append(key)
    if rows:
        table = pa.Table.from_pylist([{k: row.get(k) for k in names} for row in rows])
    else:
        table = pa.table({name: pa.array([], type=pa.string()) for name in names})
    folder.mkdir(parents=True, exist_ok=True)
    with (
        pa.OSFile(str(folder / DATA_FILE), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema) as writer,
    ):
        writer.write_table(table)
    return table.num_rows


def read_rows(folder: Path) -> list[dict[str, Any]]:
    with pa.memory_map(str(folder / DATA_FILE), "r") as source:
        return pa.ipc.open_stream(source).read_all().to_pylist()


def read_dataset(folder: Path):
    """The artifact as a ``datasets.Dataset`` (memory-mapped)."""
    from datasets import Dataset

    return Dataset.from_file(str(folder / DATA_FILE))


def load_source(data, base: Path, seed: int) -> list[dict[str, Any]]:
    """The rows of a dataset declaration (IR node), shuffled and limited as it says."""
    kind = data.kind
    if kind == "inline":
        rows = [dict(row) for row in data.rows]
    elif kind == "jsonl":
        rows = _read_jsonl(_local(base, data.path))
    elif kind == "csv":
        import csv

        with _local(base, data.path).open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    elif kind == "parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(_local(base, data.path)).to_pylist()
    elif kind == "hf":
        rows = _read_hf(base, data)
    else:
        raise ValueError(f"unknown data source {kind!r}")
    if data.columns:
        rows = [{c: row.get(c) for c in data.columns} for row in rows]
    if data.shuffle:
        random.Random(seed).shuffle(rows)
    if data.limit:
        rows = rows[: data.limit]
    return rows


_FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def _read_hf(base: Path, data) -> list[dict[str, Any]]:
    """``hf(id)`` through ``datasets``: a folder written by ``save_to_disk`` is read with
    ``load_from_disk`` (its ``split`` picked from a ``DatasetDict``), a local data file with the
    builder of its type, any other local folder or hub id with ``load_dataset``."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    local = _local(base, data.id)
    if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
        loaded = load_from_disk(str(local))
        if isinstance(loaded, DatasetDict):
            if data.split not in loaded:
                raise ValueError(f"no split {data.split!r} in {data.id} (has {', '.join(loaded)})")
            loaded = loaded[data.split]
        return loaded.to_list()
    if local.is_file() and local.suffix in _FILE_BUILDERS:
        builder = _FILE_BUILDERS[local.suffix]
        return load_dataset(
            builder, data_files={data.split: str(local)}, split=data.split
        ).to_list()
    source = str(local) if local.exists() else data.id
    return load_dataset(source, data.config, split=data.split, revision=data.revision).to_list()


def _local(base: Path, path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                rows.append(json.loads(line))
    return rows
