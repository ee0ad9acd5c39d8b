"""``export DATA to "rows.jsonl"``: the rows of a dataset or stage as one file, where people use
them (a hub upload, another tool, a look in an editor).

The format is the path's extension (``kdlang.ir.training.DATA_FORMATS``): ``.jsonl`` (one JSON
object per line, columns in the data's order, text as written), ``.parquet`` (the artifact's
Arrow table as it is), ``.csv`` (a header, lists and maps as JSON text, nulls empty). The same
rows always give the same bytes.

As with a model export (:mod:`.export`), nothing kdlang did not make is replaced: the file is
taken over only when the marker beside it (``.NAME.kdlang-export.json``) records the file's
current SHA-256, i.e. kdlang wrote it and nobody changed it since. The new file is written
beside its destination and renamed into place; the marker is written first and records both
the new and the previous hash, so that a crash between the two renames leaves a pair the next
run still recognises. The cache artifact holds :data:`RECORD`; a cached export whose file is
missing or different is written again by :func:`restore`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from kdlang.ir.training import DATA_FORMATS
from kdlang.plan import PlanNode

from ..context import StageContext
from ..data import read_arrow
from ..errors import RunError

RECORD = "export.json"
"""In the artifact: ``{"path", "data", "format", "rows", "sha256"}``."""


def marker_path(target: Path) -> Path:
    """Where the marker of the data export at ``target`` lives."""
    return target.parent / f".{target.name}.kdlang-export.json"


def run(node: PlanNode, ctx: StageContext, out: Path, target: Path) -> dict[str, Any]:
    export = node.node
    fmt = DATA_FORMATS[target.suffix.lower()]
    previous = _claim(target)
    table = _table(ctx, export.train.name)
    data = encode(table, fmt)
    digest = _place(target, data, node, previous)
    record = {
        "path": str(target),
        "data": export.train.name,
        "format": fmt,
        "rows": table.num_rows,
        "sha256": digest,
    }
    (out / RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return {"rows": table.num_rows, "path": str(target), "format": fmt}


def restore(node: PlanNode, ctx: StageContext, artifact: Path, target: Path) -> str | None:
    """Write a cached data export again when its file is missing or is not the one it wrote;
    None when it is (nothing is written). What :func:`run` refuses is refused here too."""
    try:
        record = json.loads((artifact / RECORD).read_text(encoding="utf-8"))
        expected = record["sha256"]
    except (OSError, ValueError, KeyError):
        raise RunError(
            f"the cached record of `{node.name}` is unreadable; run with --force"
        ) from None
    if target.is_file() and _sha256(target.read_bytes()) == expected:
        return None
    missing = not target.exists()
    previous = _claim(target)
    data = encode(_table(ctx, node.node.train.name), record["format"])
    if _sha256(data) != expected:
        raise RunError(
            f"the rows of `{node.node.train.name}` in the cache are not those `{node.name}` "
            f"exported; run with --force {node.name} to export them"
        )
    _place(target, data, node, previous)
    return f"{target} was missing" if missing else f"{target} held an earlier export"


def encode(table: pa.Table, fmt: str) -> bytes:
    """The bytes of ``table`` in ``fmt`` (jsonl, parquet or csv)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue()
    rows = table.to_pylist()
    if fmt == "jsonl":
        lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
        return "".join(lines).encode("utf-8")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in rows:
        writer.writerow([_cell(row[name]) for name in table.column_names])
    return text.getvalue().encode("utf-8")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return value


def _table(ctx: StageContext, name: str) -> pa.Table:
    return read_arrow(ctx.artifact(name))  # every shard; compressed top-k decoded


def _claim(target: Path) -> str | None:
    """The hash of the kdlang export at ``target`` that may be replaced, None when nothing is
    there; :class:`RunError` (nothing touched) when what is there is not kdlang's."""
    if not target.exists() and not target.is_symlink():
        return None
    if not target.is_file():
        raise RunError(f"cannot export to {target}: it exists and is not a file")
    current = _sha256(target.read_bytes())
    try:
        marker = json.loads(marker_path(target).read_text(encoding="utf-8"))
        known = {marker.get("sha256"), marker.get("previous")}
    except (OSError, ValueError, AttributeError):
        known = set()
    if current not in known:
        raise RunError(
            f"cannot export to {target}: the file is not a kdlang export, or was changed since "
            "it was written; nothing was deleted. Move it away or export elsewhere"
        )
    return current


def _place(target: Path, data: bytes, node: PlanNode, previous: str | None) -> str:
    """Write ``data`` at ``target`` (marker first, then the file, each by a rename)."""
    digest = _sha256(data)
    marker = {
        "kdlang_export": 1,
        "export": node.name,
        "fingerprint": node.fingerprint,
        "sha256": digest,
        "previous": previous,
    }
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(marker_path(target), (json.dumps(marker, indent=1) + "\n").encode())
        _write_atomically(target, data)
    except OSError as error:
        raise RunError(f"cannot write the export to {target}: {error}") from None
    return digest


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
