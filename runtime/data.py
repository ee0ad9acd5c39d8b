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

__all__ = [
    "DATA_FILE",
    "check_column_types",
    "load_source",
    "null_counts",
    "read_rows",
    "write_rows",
]


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
    check_column_types(rows, data.columns if isinstance(data.columns, dict) else None)
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
    """The rows of a jsonl file; a line that is no JSON object is a ``ValueError`` naming the
    file, its line and column (not its text)."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path.name}:{number}:{error.colno}: not JSON ({error.msg})"
                ) from None
            if not isinstance(row, dict):
                raise ValueError(f"{path.name}:{number}:1: a {_kind(row)}, not an object")
            rows.append(row)
    return rows


_KINDS = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "map"}


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _fits(kind: str, value: Any) -> bool:
    """Whether ``value`` can be stored in a column declared ``kind``."""
    actual = _kind(value)
    if kind in ("any", actual):
        return True
    if kind == "float":
        return actual == "int"
    return kind == "messages" and actual in ("list", "str")  # turns, or their JSON text


def check_column_types(rows: list[dict[str, Any]], declared: dict[str, str] | None) -> None:
    """Every column holds one type (ints and floats mix; nulls fit anywhere), as an Arrow
    column must; a ``ValueError`` names the first row that breaks it, the column and both types
    (never the value). With ``declared`` (``columns = {name: type}``), each row must have each
    declared column, non-null unless ``any``, of its declared type."""
    first: dict[str, tuple[str, int]] = {}
    for number, row in enumerate(rows, 1):
        for column, kind in (declared or {}).items():
            value = row.get(column)
            if value is None and kind != "any":
                held = "is missing" if column not in row else "is null"
                raise ValueError(
                    f"row {number}: column `{column}` {held}, but the recipe declares it {kind} "
                    f"(declare it `any` to allow nulls)"
                )
            if value is not None and not _fits(kind, value):
                raise ValueError(
                    f"row {number}: column `{column}` holds {_kind(value)}, but the recipe "
                    f"declares it {kind}"
                )
        for column, value in row.items():
            if value is None:
                continue
            kind = _kind(value)
            seen = first.setdefault(column, (kind, number))
            if seen[0] != kind and {seen[0], kind} != {"int", "float"}:
                raise ValueError(
                    f"row {number}: column `{column}` holds {kind}, but row {seen[1]} holds "
                    f"{seen[0]}; a column holds one type"
                )


def null_counts(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, int]:
    """Per column, the rows where it is missing or null (only columns with any)."""
    counts = {c: sum(row.get(c) is None for row in rows) for c in columns}
    return {c: n for c, n in counts.items() if n}
