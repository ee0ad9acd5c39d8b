"""The files of a ``teacher_logits`` artifact, written shard by shard as the scoring goes.

Rows are scored in chunks (one teacher batch each), saved to the progress folder as they
finish. Shard s holds rows ``[s·R, (s+1)·R)`` (R = the stage's ``shard_rows``): as soon as every
chunk it needs is saved, the shard is written to the progress folder as one Arrow stream file
(atomically: a temporary file, synced, then renamed) and the chunks it no longer needs are
deleted, so the stage holds at most a shard and a chunk of top-k in memory. A killed run finds
its shards and continues at the first one not written; the shards' bytes depend only on the
rows and the teacher's scores, so the artifact equals an uninterrupted run's byte for byte.

The artifact's files are ``data.arrow`` (shard 0), ``data-00001.arrow``, ``data-00002.arrow``
... (:func:`kdlang.runtime.data.data_files` lists them); a one-shard artifact is laid out as
every other stage's.
"""

from __future__ import annotations

import bisect
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..cache import DATA_FILE
from ..logit_codec import CODEC, Codec, packed_column, packed_field


def shard_name(index: int) -> str:
    return DATA_FILE if index == 0 else f"data-{index:05d}.arrow"


def chunk_path(folder: Path, start: int) -> Path:
    """The file of the chunk of rows from ``start`` (the same whichever rank scores it)."""
    return folder / f"chunk-{start:08d}.npz"


class Shards:
    """Shards of ``rows`` (their own columns in ``base``) over chunks ``bounds``."""

    def __init__(
        self,
        folder: Path,
        base: pa.Table,
        bounds: list[tuple[int, int]],
        shard_rows: int,
        k: int,
        storage,
        id_bits: int,
    ):
        self.folder, self.base, self.bounds, self.k = folder, base, bounds, k
        self.starts = [start for start, _ in bounds]
        rows = base.num_rows
        self.spans = [(a, min(rows, a + shard_rows)) for a in range(0, rows, shard_rows)] or [
            (0, 0)
        ]
        self.kind = storage.kind
        self.codec = (
            Codec(k, storage.exact, storage.bits, id_bits) if storage.kind == "compressed" else None
        )
        self.done = 0  # shards written, a prefix
        while self.done < len(self.spans) and (folder / shard_name(self.done)).exists():
            self.done += 1
        self.tokens = 0

    @property
    def covered(self) -> int:
        """Rows held by the shards written."""
        return self.spans[self.done - 1][1] if self.done else 0

    def needs(self, start: int, end: int) -> bool:
        """Whether the chunk ``[start, end)`` still has rows no shard holds."""
        return end > self.covered

    def advance(self) -> None:
        """Write every shard whose chunks are all saved, in order; drop the chunks no shard
        still needs."""
        while self.done < len(self.spans):
            a, b = self.spans[self.done]
            first = bisect.bisect_right(self.starts, a) - 1 if self.bounds else 0
            chunks = []
            for s, e in self.bounds[max(0, first) :]:
                if s >= b:
                    break
                chunks.append((s, e))
            if not all(chunk_path(self.folder, s).exists() for s, _ in chunks):
                break
            scored = []
            for s, e in chunks:
                rows = load_chunk(chunk_path(self.folder, s))
                scored += rows[max(a, s) - s : min(b, e) - s]
            self._write(self.done, a, b, scored)
            self.done += 1
            for s, e in chunks:
                if e <= b:  # every row of the chunk is in a written shard
                    chunk_path(self.folder, s).unlink(missing_ok=True)

    def publish(self, out: Path) -> int:
        """Put the written shards into the artifact folder ``out``; the target tokens they
        hold."""
        out.mkdir(parents=True, exist_ok=True)
        tokens = 0
        for index in range(len(self.spans)):
            source = self.folder / shard_name(index)
            with pa.memory_map(str(source), "r") as mapped:
                column = pa.ipc.open_stream(mapped).read_all().column("topk_target_ids")
                tokens += int(pc.sum(pc.list_value_length(column)).as_py() or 0)
            try:
                os.link(source, out / shard_name(index))
            except OSError:
                shutil.copyfile(source, out / shard_name(index))
        return tokens

    def _write(self, index: int, a: int, b: int, scored) -> None:
        table = self.base.slice(a, b - a)
        ids, lps, targets = ([s[i] for s in scored] for i in range(3))
        if self.codec is not None:
            packed = [
                self.codec.encode(i, lp.astype(np.float32)) for i, lp in zip(ids, lps, strict=True)
            ]
            column = packed_column(packed, self.codec.width)
            table = table.append_column(packed_field(self.codec), column)
            numbers = pa.array([self.codec.number] * table.num_rows, pa.int64())
            table = table.append_column(CODEC, numbers)
        else:
            kind = pa.float32() if self.kind == "fp32" else pa.float16()
            table = table.append_column("topk_ids", _nested(ids, self.k, pa.int32()))
            table = table.append_column("topk_logprobs", _nested(lps, self.k, kind))
        offsets = np.concatenate([[0], np.cumsum([len(t) for t in targets])]).astype(np.int32)
        flat = np.concatenate(targets).astype(np.int32) if targets else np.zeros(0, np.int32)
        table = table.append_column(
            "topk_target_ids",
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.int32())),
        )
        if self.codec is not None:
            table = table.replace_schema_metadata(self.codec.metadata())
        path = self.folder / shard_name(index)
        tmp = path.with_suffix(".tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)


def save_chunk(path: Path, rows) -> None:
    lengths = np.array([len(t) for _, _, t in rows], np.int64)
    k = rows[0][0].shape[1] if rows else 0
    arrays = {
        "lengths": lengths,
        "ids": np.concatenate([r[0] for r in rows]) if rows else np.zeros((0, k), np.int32),
        "logprobs": np.concatenate([r[1] for r in rows]) if rows else np.zeros((0, k), np.float32),
        "targets": np.concatenate([r[2] for r in rows]) if rows else np.zeros(0, np.int32),
    }
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_chunk(path: Path):
    with np.load(path) as data:
        bounds = np.cumsum(data["lengths"])[:-1]
        ids = np.split(data["ids"], bounds)
        lps = np.split(data["logprobs"], bounds)
        targets = np.split(data["targets"], bounds)
    return list(zip(ids, lps, targets, strict=True))


def _nested(arrays: list[np.ndarray], k: int, kind: pa.DataType) -> pa.Array:
    """One ``[T, k]`` array per row → ``list<fixed_size_list<kind, k>>``."""
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0)
    inner = pa.FixedSizeListArray.from_arrays(
        pa.array(flat.astype(kind.to_pandas_dtype()), kind), k
    )
    offsets = np.concatenate([[0], np.cumsum([a.shape[0] for a in arrays])]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)
