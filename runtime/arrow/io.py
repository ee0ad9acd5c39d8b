"""Data artifacts as streams of Arrow record batches.

A data artifact is one Arrow IPC stream file (``data.arrow``). Stages read it batch by batch
(:func:`read_batches`, a bounded amount in memory at a time) or as one memory-mapped table
(:func:`read_table`), and write it through an :class:`ArrowWriter`.

The bytes of an artifact depend on its rows alone, never on how a stage cut its work into
batches: the writer re-cuts whatever it is given into record batches of :data:`BATCH_ROWS`
rows (the last one shorter), copied into fresh buffers, under one schema. Where the batches a
stage hands it disagree on a column's type (a column null in one batch and text in the next;
integers in one and numbers with a fraction in another), the schema is the one that holds them
all (null goes with any type, integers widen to floats), as if the rows had been converted
together; the batches written before the disagreement are rewritten under it when the writer
closes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from ..cache import DATA_FILE

BATCH_ROWS = 65_536
"""Rows per record batch of an artifact (the last one holds the rest)."""


class MixedColumn(ValueError):
    """A column whose batches hold values of two types that no one type holds."""

    def __init__(self, column: str, first: pa.DataType, second: pa.DataType):
        super().__init__(f"column `{column}` holds {first} and {second}")
        self.column = column


class ArrowWriter:
    """Writes ``folder/data.arrow`` from tables or record batches given in row order.

    ``columns`` fixes the order of the columns it names (a named column no batch has is
    written as nulls); other columns follow in the order they first appear. :meth:`close`
    returns the row count; :meth:`abort` throws away what was written."""

    def __init__(self, folder: Path, columns: list[str] | None = None, *, tag: str = ""):
        self.folder = folder
        self._tag = tag
        self.columns = list(columns) if columns else []
        self.rows = 0
        folder.mkdir(parents=True, exist_ok=True)
        self._segments: list[tuple[Path, pa.Schema]] = []
        self._schema: pa.Schema | None = None
        self._sink: pa.NativeFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._names: list[str] = list(self.columns)

    # -- writing ------------------------------------------------------------------------

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
        for name in table.column_names:
            if name not in self._names:
                self._names.append(name)
        table = _ordered(table, self._names)
        if self._schema is not None and not table.schema.equals(self._schema):
            self._flush(everything=True)
            self._close_segment()
        if self._schema is None:
            self._schema = table.schema
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        self._flush()

    def write_rows(self, rows: list[dict]) -> None:
        """Python rows (dicts), converted together as one table."""
        if rows:
            names = list(self._names)
            for row in rows:
                for key in row:
                    if key not in names:
                        names.append(key)
            self.write(pa.Table.from_pylist([{k: row.get(k) for k in names} for row in rows]))

    def close(self) -> int:
        self._flush(everything=True)
        self._close_segment()
        final = self.folder / DATA_FILE
        if not self._segments:
            table = pa.table({name: pa.array([], type=pa.string()) for name in self._names})
            _write_table(final, table)
            return 0
        schemas = [schema for _, schema in self._segments]
        unified = _unify(schemas, self._names)
        if len(self._segments) == 1 and schemas[0].equals(unified):
            os.replace(self._segments[0][0], final)
            return self.rows
        self._rewrite(unified)
        return self.rows

    def abort(self) -> None:
        """Forget everything written so far (a stage that starts over another way)."""
        if self._writer is not None:
            self._writer.close()
            assert self._sink is not None
            self._sink.close()
        for path, _ in self._segments:
            path.unlink(missing_ok=True)
        self.__init__(self.folder, self.columns, tag=self._tag)  # type: ignore[misc]

    # -- internals ----------------------------------------------------------------------

    def _flush(self, everything: bool = False) -> None:
        while self._pending_rows >= BATCH_ROWS or (everything and self._pending_rows):
            joined = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
            size = min(BATCH_ROWS, joined.num_rows)
            self._emit(joined.slice(0, size))
            rest = joined.slice(size)
            self._pending = [rest] if rest.num_rows else []
            self._pending_rows = rest.num_rows

    def _emit(self, table: pa.Table) -> None:
        if self._writer is None:
            assert self._schema is not None
            path = self.folder / f".segment{self._tag}-{len(self._segments)}.arrow"
            self._sink = pa.OSFile(str(path), "wb")
            self._writer = pa.ipc.new_stream(self._sink, self._schema)
            self._segments.append((path, self._schema))
        self._writer.write_batch(_fresh(table))

    def _close_segment(self) -> None:
        if self._writer is not None:
            self._writer.close()
            assert self._sink is not None
            self._sink.close()
            self._writer = self._sink = None
        self._schema = None

    def _rewrite(self, unified: pa.Schema) -> None:
        """Every segment's batches again, cast to ``unified`` and re-cut, into ``data.arrow``."""
        paths = [path for path, _ in self._segments]
        writer = ArrowWriter(self.folder, unified.names, tag=self._tag + "r")
        for path in paths:
            with pa.OSFile(str(path), "rb") as source:
                for batch in pa.ipc.open_stream(source):
                    writer.write(_cast(pa.Table.from_batches([batch]), unified))
        for path in paths:
            path.unlink(missing_ok=True)
        writer.close()


def _ordered(table: pa.Table, names: list[str]) -> pa.Table:
    """``table`` with the columns of ``names`` in that order (those it lacks as nulls)."""
    if table.column_names == names:
        return table
    columns = [
        table.column(n) if n in table.column_names else pa.nulls(table.num_rows) for n in names
    ]
    return pa.Table.from_arrays(columns, names=names)


def _fresh(table: pa.Table) -> pa.RecordBatch:
    """One record batch of ``table``'s rows in newly allocated buffers: a slice of a larger
    batch, or several chunks, give the same bytes as the rows converted on their own."""
    arrays = []
    for column in table.columns:
        array = pa.concat_arrays(column.chunks) if column.chunks else pa.array([], column.type)
        if pa.types.is_nested(column.type):
            # The children of lists and maps are laid out by the kernel that made them (a
            # validity buffer with no null, children of null maps valid or not); as Python
            # values convert, they are laid out one way.
            array = pa.array(array.to_pylist(), type=column.type)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=table.schema)


def _unify(schemas: list[pa.Schema], names: list[str]) -> pa.Schema:
    try:
        unified = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        for name in names:
            kinds = [s.field(name).type for s in schemas if name in s.names]
            try:
                pa.unify_schemas(
                    [pa.schema([(name, kind)]) for kind in kinds], promote_options="permissive"
                )
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                other = next(k for k in kinds if k != kinds[0] and k != pa.null())
                raise MixedColumn(name, kinds[0], other) from None
        raise
    return pa.schema([unified.field(n) for n in names])


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            columns.append(column if column.type == field.type else column.cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _write_table(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


# -- reading ----------------------------------------------------------------------------


def data_files(folder: Path) -> list[Path]:
    """The Arrow files of an artifact, in row order: ``data.arrow``, then the further shards
    ``data-00001.arrow`` ... a sharded stage (``teacher_logits``) writes."""
    files = [folder / DATA_FILE]
    while (folder / f"data-{len(files):05d}.arrow").is_file():
        files.append(folder / f"data-{len(files):05d}.arrow")
    return files


def read_batches(folder: Path, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The artifact's record batches in order, shard after shard, read from the files one at a
    time (only ``columns``, where given)."""
    for path in data_files(folder):
        with pa.OSFile(str(path), "rb") as source:
            for batch in pa.ipc.open_stream(source):
                yield batch.select(columns) if columns is not None else batch


def read_table(folder: Path) -> pa.Table:
    """The whole artifact as one table, memory-mapped (its buffers stay in the files)."""
    tables = []
    for path in data_files(folder):
        with pa.memory_map(str(path), "r") as source:
            tables.append(pa.ipc.open_stream(source).read_all())
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def read_schema(folder: Path) -> pa.Schema:
    """The schema of the artifact (its first file's: every shard has the same)."""
    with pa.OSFile(str(folder / DATA_FILE), "rb") as source:
        return pa.ipc.open_stream(source).schema
