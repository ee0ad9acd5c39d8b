"""Reading a ``jsonl`` or ``parquet`` source straight into Arrow record batches.

The rows are the ones :func:`kdlang.runtime.data.load_source` reads into Python, and an
artifact written from these batches has the same bytes as one written from those rows; but
they are read in blocks by pyarrow's readers and never become Python objects. Where that
cannot hold, :func:`arrow_source` says so (``None``) and the source is read the Python way: a
``columns`` map (each value's type is checked), conversations (their turns are rewritten), a
type the Python rows would not give back as it is (a timestamp pyarrow reads from a date-like
text, a decimal), or a file pyarrow does not read (a line that is no JSON object, a column of
two types: the Python reader names the line and the column).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from .io import BATCH_ROWS, ArrowWriter

BLOCK_BYTES = 16 << 20
"""Bytes of jsonl text pyarrow parses at a time."""


class NotArrow(Exception):
    """The source is to be read the Python way."""


def arrow_source(data, path: Path):
    """A function giving the source's record batches, or None when it is read the Python way
    (see the module). The batches are in file order; shuffling and limits are applied by
    :func:`write_arrow_source`."""
    if data.kind not in ("jsonl", "parquet") or isinstance(data.columns, dict):
        return None
    if getattr(data, "messages", None):
        return None
    if data.kind == "jsonl":
        return lambda: _jsonl_batches(path)
    return lambda: _parquet_batches(path)


def write_arrow_source(batches, data, seed: int, writer: ArrowWriter) -> None:
    """Write the source's rows, shuffled (with ``seed``, as ``random.Random(seed).shuffle``
    orders a list of them) and limited as ``data`` says, into ``writer``. Raises
    :class:`NotArrow` (the writer then holds part of them: abort it)."""
    wanted = list(data.columns) if data.columns else None
    if data.shuffle:
        table = pa.Table.from_batches(list(_checked(batches(), wanted)))
        order = list(range(table.num_rows))
        random.Random(seed).shuffle(order)
        order = order[: data.limit] if data.limit else order
        for start in range(0, len(order), BATCH_ROWS):
            writer.write(table.take(pa.array(order[start : start + BATCH_ROWS], pa.int64())))
        return
    left = data.limit
    for batch in _checked(batches(), wanted):
        if left is not None:
            batch = batch.slice(0, left)
            left -= batch.num_rows
        writer.write(batch)
        if left == 0:
            break


def _checked(batches: Iterator[pa.RecordBatch], wanted: list[str] | None):
    for batch in batches:
        if wanted is not None:
            batch = pa.RecordBatch.from_arrays(
                [
                    batch.column(c) if c in batch.schema.names else pa.nulls(batch.num_rows)
                    for c in wanted
                ],
                names=wanted,
            )
        yield _canonical(batch)


def _jsonl_batches(path: Path) -> Iterator[pa.RecordBatch]:
    import pyarrow.json as pj

    options = pj.ReadOptions(block_size=BLOCK_BYTES, use_threads=True)
    try:
        reader = pj.open_json(str(path), read_options=options)
        yield from reader
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        raise NotArrow(str(error)) from None


def _parquet_batches(path: Path) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(str(path))
        yield from handle.iter_batches(batch_size=BATCH_ROWS)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        raise NotArrow(str(error)) from None


_WIDER = {
    pa.int8(): pa.int64(),
    pa.int16(): pa.int64(),
    pa.int32(): pa.int64(),
    pa.uint8(): pa.int64(),
    pa.uint16(): pa.int64(),
    pa.uint32(): pa.int64(),
    pa.float16(): pa.float64(),
    pa.float32(): pa.float64(),
    pa.large_string(): pa.string(),
    pa.string_view(): pa.string(),
}


def _canonical(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with the types Python rows converted back would have (narrow integers and
    floats widened, large strings as strings); :class:`NotArrow` for a type they would not
    give back as it is, and for lists of maps (perhaps conversations)."""
    columns = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        target = _target(field.type)
        columns.append(column if target == field.type else column.cast(target))
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _target(kind: pa.DataType, inside_list: bool = False) -> pa.DataType:
    if kind in (pa.int64(), pa.float64(), pa.bool_(), pa.string(), pa.null()):
        return kind
    if kind in _WIDER:
        return _WIDER[kind]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        item = kind.value_type
        if pa.types.is_struct(item):
            raise NotArrow("a list of maps")
        return pa.list_(_target(item, True))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _target(f.type, inside_list)) for f in kind])
    raise NotArrow(f"type {kind}")
