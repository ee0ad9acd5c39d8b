"""Reading the columns of local data files at check time (never the whole file)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

SAMPLE_LINES = 50
_COLUMN_NAME = re.compile(r"\w[\w .,:;/#%&+()'-]{0,127}")
"""What a CSV header cell must look like to be taken as a column name: words (any script), with
spaces and punctuation a heading uses, but no ``=``, quotes, control characters or long runs; a
file that is no CSV (an environment dump, ``KEY=secret`` lines) fails here and is not echoed."""


def _bad_byte(path: Path) -> tuple[int, int]:
    """(line, column) of the first byte of ``path`` that is not UTF-8, read line by line."""
    from kdlang.syntax.source import byte_position

    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                return number, byte_position(raw, error.start)[1]
    return 1, 1


class UnreadableData(Exception):
    """The file exists but its columns cannot be read; the message says why."""


def value_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "messages" if is_conversation(value) else "list"
    if isinstance(value, dict):
        return "map"
    return "any"


TURN_KEYS = (("role", "content"), ("from", "value"))
"""The keys of a turn in the layouts read as conversations without a declaration: the canonical
``{role, content}`` and ShareGPT's ``{from, value}``."""


def is_conversation(value: list) -> bool:
    """Whether a list is a conversation: turns, each a map with the keys of a layout of
    :data:`TURN_KEYS`."""
    return bool(value) and all(
        isinstance(turn, dict) and any(role in turn and text in turn for role, text in TURN_KEYS)
        for turn in value
    )


def columns_of_rows(rows: list[dict]) -> dict[str, str]:
    """Column -> type over some rows. Nulls say nothing about a column's type (any column may
    hold them); a column whose other values disagree, or that holds only nulls, is ``any``."""
    types: dict[str, str | None] = {}
    for row in rows:
        for key, value in row.items():
            known = types.get(key)
            if value is None:
                types.setdefault(key, None)
                continue
            kind = value_type(value)
            if known is None or known == kind:
                types[key] = kind
            elif {known, kind} <= {"int", "float"}:
                types[key] = "float"
            elif {known, kind} == {"list", "messages"}:
                types[key] = "list"  # some rows are no conversation
            else:
                types[key] = "any"
    return {key: kind or "any" for key, kind in types.items()}


def read_columns(kind: str, path: Path) -> dict[str, str]:
    """Columns of a local ``jsonl``, ``csv`` or ``parquet`` file. Raises FileNotFoundError or
    :class:`UnreadableData`."""
    from kdlang.syntax.source import SourceRefused, check_readable

    try:
        check_readable(str(path), limit=None)  # stat first: a pipe or a device is never opened
    except SourceRefused as refused:
        raise UnreadableData(refused.message) from None
    try:
        return _read_columns(kind, path)
    except UnicodeDecodeError:
        line, column = _bad_byte(path)
        raise UnreadableData(f"line {line}, column {column} is not UTF-8 text") from None
    except csv.Error as error:
        raise UnreadableData(f"not valid CSV: {error}") from None


def _read_columns(kind: str, path: Path) -> dict[str, str]:
    if kind == "jsonl":
        rows = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    torn = not line.endswith("\n") and error.pos >= len(line.rstrip())
                    if torn:
                        raise UnreadableData(
                            f"line {number} is cut off: the file ends inside it"
                        ) from None
                    raise UnreadableData(
                        f"line {number}, column {error.colno} is not JSON: {error.msg}"
                    ) from None
                if not isinstance(row, dict):
                    raise UnreadableData(f"line {number} is not a JSON object")
                rows.append(row)
                if len(rows) >= SAMPLE_LINES:
                    break
        if not rows:
            raise UnreadableData("the file has no rows")
        return columns_of_rows(rows)
    if kind == "csv":
        with path.open(encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), None)
        if not header:
            raise UnreadableData("the file has no header row")
        for number, name in enumerate(header, 1):
            if not _COLUMN_NAME.fullmatch(name):
                # not shown: a file that is no CSV (a password file, a key) must not be printed
                raise UnreadableData(f"line 1, field {number} is not a column name")
        return dict.fromkeys(header, "str")
    if kind == "parquet":
        try:
            # only for parquet inputs; pyarrow ships no type information (no py.typed, no stubs)
            import pyarrow.parquet as pq  # type: ignore[import-untyped]
        except ImportError:
            raise UnreadableData("reading parquet needs pyarrow") from None
        try:
            schema = pq.read_schema(path)
        except Exception as error:  # pyarrow raises several types for bad files
            raise UnreadableData(str(error)) from None
        return {name: _arrow_type(str(schema.field(name).type)) for name in schema.names}
    raise UnreadableData(f"cannot read columns of a {kind} source")


def _arrow_type(name: str) -> str:
    if name.startswith(("int", "uint")):
        return "int"
    if name.startswith(("float", "double", "halffloat")):
        return "float"
    if name in ("string", "large_string"):
        return "str"
    if name == "bool":
        return "bool"
    if name.startswith(("list", "large_list", "fixed_size_list")):
        turn = re.fullmatch(r"(?:large_)?list<[^:<]*: struct<(.*)>>", name)
        keys = set(re.findall(r"(?:^|, )(\w+): ", turn.group(1))) if turn else set()
        return "messages" if any({r, t} <= keys for r, t in TURN_KEYS) else "list"
    if name.startswith(("struct", "map")):
        return "map"
    return "any"
