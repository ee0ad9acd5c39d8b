"""Compact storage of cached top-k log-probs: ``storage = compressed(exact = k', bits = b)``.

Per target position the teacher's k entries (ids, log-probs descending) become one fixed-size
byte string, stored in the column ``topk_packed`` (``list<fixed_size_binary(n)>``, one list per
row) with the codec's parameters in the schema metadata (``kdlang.topk_codec``):

``[ids: k × w bits | exact: k' float16 | scale: float16 | codes: (k − k') × b bits]``

- **ids** are packed at ``w`` bits each, the fewest that hold the vocabulary (16 for 50,257 ids,
  17 for 128,256).
- **the exact part**: the first ``k'`` log-probs as float16, bit for bit what ``storage =
  fp16`` stores.
- **the tail**: with ``r`` the stored k'-th log-prob and ``D`` the largest finite gap
  ``r − l_j`` of the position, the scale is ``s = D / (2^b − 2)`` (float16, rounded up) and entry
  j is the code ``q_j = round((r − l_j) / s)``; the top code ``2^b − 1`` marks ``−inf`` (a slot a
  black-box teacher left empty). Decoding gives ``r − q_j · s``, so the order of the entries is
  kept (codes grow along the row) and the tail never exceeds the exact part.

Error bound. For every tail entry, with ``l_j`` the captured float32 log-prob,
``|l̂_j − l_j| ≤ δ = max(s / 2, u)``, where ``s / 2 = D / (2 (2^b − 2))`` (up to float32 rounding
of the decode) and ``u = max(0, l_{k'} − r) ≤`` half a float16 step of ``r`` (an entry that the
float16 rounding of the k'-th value put above its reference is stored as ``r``). The exact part
is exact. Renormalised over the k ids, each ``log p̂_j`` moves by at most ``2δ``, and the
divergence of the stored distribution from the captured one is ``KL(p ‖ p̂) ≤ δ² / 2``
(Hoeffding's lemma: ``log E_p e^ε − E_p ε ≤ (2δ)² / 8`` for ε = l̂ − l in ``[−δ, δ]``);
:func:`kl_bound` gives it per position. ``benchmarks/logit_storage.py`` measures both.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PACKED = "topk_packed"
"""The column holding compressed top-k entries (one fixed-size byte string per position)."""
CODEC = "topk_codec"
"""The column holding each row's codec parameters (:attr:`Codec.number`)."""
METADATA_KEY = b"kdlang.topk_codec"
"""The schema metadata key holding the codec's parameters (JSON)."""
IDS, LOGPROBS = "topk_ids", "topk_logprobs"


def id_bits(vocabulary: int) -> int:
    """The fewest bits that hold every id below ``vocabulary``."""
    return max(1, (max(1, vocabulary) - 1).bit_length())


def pack(values: np.ndarray, width: int) -> np.ndarray:
    """``[N, m]`` unsigned integers below ``2**width`` → ``[N, ceil(m·width / 8)]`` bytes (bit
    j of value i at bit ``i·width + j``, least significant first)."""
    count, m = values.shape
    shifts = np.arange(width, dtype=np.uint64)
    bits = ((values.astype(np.uint64)[..., None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.reshape(count, m * width), axis=1, bitorder="little")


def unpack(packed: np.ndarray, m: int, width: int) -> np.ndarray:
    """The inverse of :func:`pack`: ``[N, m]`` int64. Each value is read from the 8 bytes
    starting at its first byte (as one little-endian word, shifted and masked), so a row is
    decoded by a gather and three vector operations."""
    count, size = packed.shape
    if width in (8, 16):  # whole bytes: a view
        kind = np.uint8 if width == 8 else np.dtype("<u2")
        return np.ascontiguousarray(packed[:, : m * width // 8]).view(kind).astype(np.int64)
    padded = np.zeros((count, size + 8), np.uint8)
    padded[:, :size] = packed
    offsets = np.arange(m, dtype=np.int64) * width
    windows = padded[:, (offsets // 8)[:, None] + np.arange(8)]
    words = np.ascontiguousarray(windows).view("<u8").reshape(count, m)
    shifts = (offsets % 8).astype(np.uint64)
    return ((words >> shifts) & np.uint64((1 << width) - 1)).astype(np.int64)


@dataclass(frozen=True)
class Codec:
    """The layout of one position: ``k`` entries, the first ``exact`` kept as float16, the
    rest in ``bits``-bit codes; ids at ``id_bits`` bits."""

    k: int
    exact: int
    bits: int
    id_bits: int

    def __post_init__(self) -> None:
        if not 1 <= self.exact < self.k or not 2 <= self.bits <= 16 or self.id_bits > 32:
            raise ValueError(f"no such top-k codec: {self}")

    @property
    def tail(self) -> int:
        return self.k - self.exact

    @property
    def ids_bytes(self) -> int:
        return math.ceil(self.k * self.id_bits / 8)

    @property
    def codes_bytes(self) -> int:
        return math.ceil(self.tail * self.bits / 8)

    @property
    def width(self) -> int:
        """Bytes per position."""
        return self.ids_bytes + 2 * self.exact + 2 + self.codes_bytes

    @property
    def empty(self) -> int:
        """The code of an empty (``−inf``) slot."""
        return (1 << self.bits) - 1

    def metadata(self) -> dict[bytes, bytes]:
        return {METADATA_KEY: json.dumps(asdict(self), sort_keys=True).encode()}

    @property
    def number(self) -> int:
        """The parameters as one integer (the ``topk_codec`` column)."""
        return self.k | self.exact << 16 | self.bits << 32 | self.id_bits << 40

    @classmethod
    def from_number(cls, number: int) -> Codec:
        mask = (1 << 16) - 1
        return cls(number & mask, number >> 16 & mask, number >> 32 & 255, number >> 40 & 255)

    @classmethod
    def of(cls, table: pa.Table) -> Codec:
        """The codec of a table's ``topk_packed`` column: from the column's metadata or the
        schema's, else from the ``topk_codec`` column (which a later stage that rewrites the
        rows keeps with them, where it may drop metadata)."""
        field = table.schema.field(PACKED)
        if METADATA_KEY in (field.metadata or table.schema.metadata or {}):
            return cls.from_metadata(field.metadata or table.schema.metadata)
        if CODEC in table.column_names:
            numbers = pc.unique(table.column(CODEC).drop_null()).to_pylist()
            if len(numbers) == 1:
                return cls.from_number(numbers[0])
        raise ValueError(f"a `{PACKED}` column without its codec (`{CODEC}`)")

    @classmethod
    def from_metadata(cls, metadata: dict[bytes, bytes] | None) -> Codec:
        found = (metadata or {}).get(METADATA_KEY)
        if found is None:
            raise ValueError(f"a `{PACKED}` column without its codec ({METADATA_KEY.decode()})")
        return cls(**json.loads(found))

    def scales(self, logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per position: the reference ``r`` (the float16 k'-th log-prob, as float64) and the
        float16 scale ``s`` (rounded up, so that the largest gap gets the largest code)."""
        reference = logprobs[:, self.exact - 1].astype(np.float16).astype(np.float64)
        gaps = reference[:, None] - logprobs[:, self.exact :].astype(np.float64)
        finite = np.isfinite(gaps) & np.isfinite(reference)[:, None]
        spread = np.where(finite, np.maximum(gaps, 0.0), 0.0).max(axis=1, initial=0.0)
        wanted = spread / (self.empty - 1)
        scale = wanted.astype(np.float16)
        low = scale.astype(np.float64) < wanted
        scale[low] = np.nextafter(scale[low], np.float16(np.inf))
        return reference, scale

    def encode(self, ids: np.ndarray, logprobs: np.ndarray) -> np.ndarray:
        """``[N, k]`` ids and log-probs (descending, float32) → ``[N, width]`` bytes."""
        count = ids.shape[0]
        if ids.size and (ids.min() < 0 or ids.max() >= 1 << self.id_bits):
            raise ValueError(f"a token id outside {self.id_bits} bits: {int(ids.max())}")
        reference, scale = self.scales(logprobs)
        gaps = reference[:, None] - logprobs[:, self.exact :].astype(np.float64)
        step = scale.astype(np.float64)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            codes = np.where(step > 0, np.rint(np.maximum(gaps, 0.0) / step), 0.0)
        codes = np.clip(np.nan_to_num(codes, posinf=0.0), 0, self.empty - 1).astype(np.int64)
        codes[~np.isfinite(logprobs[:, self.exact :])] = self.empty
        parts = [
            pack(ids.astype(np.int64), self.id_bits),
            logprobs[:, : self.exact].astype("<f2").view(np.uint8).reshape(count, 2 * self.exact),
            scale.astype("<f2").view(np.uint8).reshape(count, 2),
            pack(codes, self.bits),
        ]
        return np.ascontiguousarray(np.concatenate(parts, axis=1))

    def decode(self, packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[N, width]`` bytes → ``[N, k]`` ids (int64) and log-probs (float32)."""
        return self.decode_ids(packed), self.decode_logprobs(packed)

    def decode_ids(self, packed: np.ndarray) -> np.ndarray:
        return unpack(packed[:, : self.ids_bytes], self.k, self.id_bits)

    def decode_logprobs(self, packed: np.ndarray) -> np.ndarray:
        count = packed.shape[0]
        at = self.ids_bytes
        exact = packed[:, at : at + 2 * self.exact].copy().view("<f2").astype(np.float32)
        at += 2 * self.exact
        scale = packed[:, at : at + 2].copy().view("<f2").astype(np.float32).reshape(count)
        codes = unpack(packed[:, at + 2 :], self.tail, self.bits)
        reference = exact[:, self.exact - 1 :]
        tail = reference - codes.astype(np.float32) * scale[:, None]
        tail[codes == self.empty] = -np.inf
        return np.concatenate([exact, tail], axis=1)

    def error_bound(self, logprobs: np.ndarray) -> np.ndarray:
        """Per position, δ: the largest error of a decoded tail log-prob (see the module)."""
        reference, scale = self.scales(logprobs)
        first = logprobs[:, self.exact].astype(np.float64)
        above = np.where(np.isfinite(first), np.maximum(first - reference, 0.0), 0.0)
        return np.maximum(scale.astype(np.float64) / 2, above)


def kl_bound(delta: np.ndarray) -> np.ndarray:
    """``KL(p ‖ p̂) ≤ δ² / 2`` per position (the module's bound)."""
    return np.asarray(delta, np.float64) ** 2 / 2


def packed_field(codec: Codec) -> pa.Field:
    """The ``topk_packed`` field, the codec in its metadata."""
    return pa.field(PACKED, pa.list_(pa.binary(codec.width)), metadata=codec.metadata())


def packed_column(rows: list[np.ndarray], width: int) -> pa.Array:
    """One ``[T, width]`` uint8 array per row → ``list<fixed_size_binary(width)>``."""
    flat = np.concatenate(rows) if rows else np.zeros((0, width), np.uint8)
    inner = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(flat), [None, pa.py_buffer(np.ascontiguousarray(flat).tobytes())]
    )
    offsets = np.concatenate([[0], np.cumsum([r.shape[0] for r in rows])]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def _positions(column: pa.ChunkedArray | pa.Array, width: int) -> tuple[np.ndarray, pa.Array]:
    """The bytes of every position of a ``topk_packed`` column as ``[N, width]`` uint8 (no copy
    of a single-chunk column), and its list offsets."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    inner = pc.list_flatten(column)
    data = inner.buffers()[1]
    start = inner.offset * width
    flat = np.frombuffer(data, np.uint8, count=len(inner) * width, offset=start) if data else None
    positions = (
        flat.reshape(len(inner), width) if flat is not None else np.zeros((0, width), np.uint8)
    )
    return positions, column


def decode_table(table: pa.Table) -> pa.Table:
    """``table`` with a ``topk_packed`` column replaced by the float columns every reader takes:
    ``topk_ids`` (int32) and ``topk_logprobs`` (float32), ``list<fixed_size_list<·, k>>``. A
    table without one is returned as it is."""
    if PACKED not in table.column_names:
        return table
    if table.num_rows == 0:  # no rows, no codec to read (a later stage may type them as text)
        return table.drop_columns([c for c in (PACKED, CODEC) if c in table.column_names])
    codec = Codec.of(table)
    positions, column = _positions(table.column(PACKED), codec.width)
    ids, logprobs = codec.decode(positions)
    if len(column) and column.null_count == 0:
        offsets = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        bounds = pa.array(np.concatenate([[0], np.cumsum(offsets)]).astype(np.int32))
    else:
        bounds = pa.array(np.zeros(len(column) + 1, np.int32))
    nested = [
        pa.ListArray.from_arrays(
            bounds, pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), codec.k)
        )
        for values in (ids.astype(np.int32), logprobs)
    ]
    # a later stage that writes the declared columns holds them as nulls beside the packed one
    table = table.drop_columns([c for c in (IDS, LOGPROBS) if c in table.column_names])
    at = table.column_names.index(PACKED)
    table = table.remove_column(at).add_column(at, LOGPROBS, nested[1])
    table = table.add_column(at, IDS, nested[0]).replace_schema_metadata(None)
    return table.drop_columns([CODEC]) if CODEC in table.column_names else table


class PackedRows:
    """One row's positions, still packed, read as the ``[T, k]`` array of its ids or its
    log-probs: indexing or ``np.asarray`` decodes just the positions asked for. A train keeps
    these (views of the memory-mapped shard) and decodes when it collates a batch."""

    __slots__ = ("codec", "packed", "part")

    def __init__(self, packed: np.ndarray, codec: Codec, part: str):
        self.packed, self.codec, self.part = packed, codec, part

    @property
    def shape(self) -> tuple[int, int]:
        return (self.packed.shape[0], self.codec.k)

    ndim = 2

    @property
    def size(self) -> int:
        return self.packed.shape[0] * self.codec.k

    def __len__(self) -> int:
        return self.packed.shape[0]

    def _decode(self, packed: np.ndarray) -> np.ndarray:
        if self.part == IDS:
            return self.codec.decode_ids(packed)
        return self.codec.decode_logprobs(packed)

    def __getitem__(self, key):
        rows = self.packed[key]
        return self._decode(rows[None])[0] if rows.ndim == 1 else self._decode(rows)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._decode(self.packed)
        return out if dtype is None else out.astype(dtype)

    def max(self):
        return np.asarray(self).max()

    def astype(self, dtype) -> np.ndarray:
        return np.asarray(self, dtype)

    def tolist(self) -> list:
        return np.asarray(self).tolist()


def packed_rows(table: pa.Table) -> dict[str, list[PackedRows]]:
    """Per row of a table with a ``topk_packed`` column, its ids and log-probs as
    :class:`PackedRows` (views of the table's buffers: no copy, nothing decoded yet)."""
    if table.num_rows == 0:
        return {IDS: [], LOGPROBS: []}
    codec = Codec.of(table)
    ids: list[PackedRows] = []
    lps: list[PackedRows] = []
    for chunk in table.column(PACKED).chunks:
        values = chunk.values
        data = values.buffers()[1]
        flat = (
            np.frombuffer(
                data, np.uint8, count=len(values) * codec.width, offset=values.offset * codec.width
            )
            if data is not None and len(values)
            else np.zeros(0, np.uint8)
        )
        positions = flat.reshape(-1, codec.width)
        offsets = chunk.offsets.to_numpy(zero_copy_only=False)
        for start, end in itertools.pairwise(offsets):
            ids.append(PackedRows(positions[start:end], codec, IDS))
            lps.append(PackedRows(positions[start:end], codec, LOGPROBS))
    return {IDS: ids, LOGPROBS: lps}
