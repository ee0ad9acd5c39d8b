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

from .arrow.io import ArrowWriter, data_files
from .cache import DATA_FILE

__all__ = [
    "DATA_FILE",
    "ArrowWriter",
    "check_column_types",
    "load_source",
    "null_counts",
    "read_rows",
    "write_rows",
]


def write_rows(rows: list[dict[str, Any]], folder: Path, columns: list[str] | None = None) -> int:
    """Write rows to ``folder/data.arrow``; returns the row count. ``columns`` fixes the order
    (and keeps the columns of an empty result)."""
    writer = ArrowWriter(folder, columns)
    writer.write_rows(rows)
    return writer.close()


def read_rows(folder: Path) -> list[dict[str, Any]]:
    """Every row of an artifact as a dict (for stages that need them all in Python)."""
    return read_arrow(folder).to_pylist()


def read_arrow(folder: Path, *, decode: bool = True) -> pa.Table:
    """An artifact's rows as one table, every shard memory-mapped (not read into memory);
    ``decode``: compressed top-k (``topk_packed``) as the float columns readers take."""
    from .logit_codec import decode_table

    tables = [
        pa.ipc.open_stream(pa.memory_map(str(path), "r")).read_all() for path in data_files(folder)
    ]
    if decode:
        tables = [decode_table(table) for table in tables]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def read_dataset(folder: Path):
    """The artifact as a ``datasets.Dataset`` (memory-mapped)."""
    from datasets import Dataset, concatenate_datasets

    parts = [Dataset.from_file(str(path)) for path in data_files(folder)]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


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
    for column in conversation_columns(data, rows):
        for number, row in enumerate(rows, 1):
            row[column] = canonical_turns(row.get(column), data, f"row {number}, `{column}`")
    if data.shuffle:
        random.Random(seed).shuffle(rows)
    if data.limit:
        rows = rows[: data.limit]
    return rows


ROLES = ("system", "user", "assistant", "tool")
"""The roles of a canonical conversation turn."""
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}
"""Role names of common layouts (ShareGPT, Gemini) read as the canonical ones."""


def conversation_columns(data, rows: list[dict[str, Any]]) -> list[str]:
    """The columns read as conversations: the one ``messages = ...`` names, those declared
    ``messages`` in a ``columns`` map, and those whose every value is a list of
    ``{role, content}`` (or ShareGPT ``{from, value}``) turns, as the checker infers them."""
    named = [data.messages] if getattr(data, "messages", None) else []
    if isinstance(data.columns, dict):
        named += [c for c, kind in data.columns.items() if kind == "messages"]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    for key in keys:
        values = [row.get(key) for row in rows if row.get(key) is not None]
        if values and all(_canonical_layout(v) for v in values):
            named.append(key)
    return list(dict.fromkeys(named))


def _canonical_layout(value: Any) -> bool:
    """A list of ``{role, content}`` or ``{from, value}`` turns (as the checker infers them)."""
    from kdlang.check.datafiles import is_conversation

    return isinstance(value, list) and is_conversation(value)


def canonical_turns(value: Any, data, where: str) -> list[dict[str, str]] | None:
    """One conversation as ``[{role, content}]`` with roles among :data:`ROLES`: the turn keys
    and role names of the declaration (``role_key``, ``content_key``, ``roles``) or of the
    usual layouts (``role``/``content``, ShareGPT's ``from``/``value``). A turn that fits none
    is a ``ValueError`` naming ``where`` (the row) and the turn."""
    if value is None:
        return None
    if isinstance(value, str):  # a conversation stored as JSON text (csv columns)
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{where} is not a conversation (text that is no JSON list)") from None
    if not isinstance(value, list):
        raise ValueError(f"{where} is not a conversation: {type(value).__name__}, not a list")
    aliases = {**ROLE_ALIASES, **(getattr(data, "roles", None) or {})}
    turns = []
    for number, turn in enumerate(value, 1):
        if not isinstance(turn, dict):
            raise ValueError(f"{where}, turn {number} is {type(turn).__name__}, not a map")
        role = _field(turn, getattr(data, "role_key", None), ("role", "from"))
        content = _field(turn, getattr(data, "content_key", None), ("content", "value"))
        if role is None or content is None:
            raise ValueError(
                f"{where}, turn {number} has no role and content (keys: {', '.join(sorted(turn))})"
            )
        role = aliases.get(str(role), str(role))
        if role not in ROLES:
            raise ValueError(
                f"{where}, turn {number} has role {role!r}, not one of {', '.join(ROLES)} "
                "(map it with `roles = {...}`)"
            )
        if not isinstance(content, str):
            raise ValueError(f"{where}, turn {number}: the content is no text")
        turns.append({"role": role, "content": content})
    return turns


def _field(turn: dict, key: str | None, defaults: tuple[str, ...]) -> Any:
    """The first of the keys that the turn holds a value at (a parquet turn has every key of
    its struct, those of another layout null)."""
    for name in (key,) if key else defaults:
        if turn.get(name) is not None:
            return turn[name]
    return None


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
                    f"{path.name}: line {number}, column {error.colno} is not JSON: {error.msg}"
                ) from None
            if not isinstance(row, dict):
                raise ValueError(f"{path.name}: line {number} is a {_kind(row)}, not an object")
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
