"""The compressed top-k codec (:mod:`kdlang.runtime.logit_codec`) against numpy references
written here: bit packing, the exact part bit for bit, the tail within the stated bound, the
KL bound, and the lazy per-row decoding a train collates from."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from kdlang.runtime.logit_codec import (
    Codec,
    decode_table,
    id_bits,
    kl_bound,
    pack,
    packed_column,
    packed_rows,
    unpack,
)


def topk_of(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-k ids and float32 log-probs (descending) of ``[N, V]`` logits, in float64."""
    z = logits.astype(np.float64)
    logprobs = z - (np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1))[:, None]
    ids = np.argsort(-logprobs, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(logprobs, ids, 1).astype(np.float32)


def zipf_logits(rng, positions: int, vocab: int) -> np.ndarray:
    """Heavy-tailed next-token logits: log of a Zipf law over a shuffled vocabulary, plus noise."""
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    base = -1.1 * np.log(ranks)
    out = np.empty((positions, vocab), np.float32)
    for i in range(positions):
        out[i, rng.permutation(vocab)] = base + rng.normal(0, 0.5, vocab)
    return out


def reference_bound(logprobs: np.ndarray, exact: int, bits: int) -> np.ndarray:
    """δ per position, as the codec's docstring states it, computed here from scratch."""
    out = []
    for row in logprobs.astype(np.float64):
        reference = float(np.float16(row[exact - 1]))
        tail = row[exact:]
        finite = tail[np.isfinite(tail)]
        spread = max([0.0, *(reference - finite)])
        scale = np.float16(spread / (2**bits - 2))
        if float(scale) < spread / (2**bits - 2):
            scale = np.nextafter(scale, np.float16(np.inf))
        above = max(0.0, tail[0] - reference) if np.isfinite(tail[0]) else 0.0
        out.append(max(float(scale) / 2, above))
    return np.array(out)


@pytest.mark.parametrize("width", [1, 5, 8, 16, 17, 24, 31])
def test_pack_round_trips_and_matches_a_bit_string(width):
    rng = np.random.default_rng(width)
    values = rng.integers(0, 2**width, size=(3, 7), dtype=np.int64)
    packed = pack(values, width)
    assert packed.shape == (3, math.ceil(7 * width / 8))
    np.testing.assert_array_equal(unpack(packed, 7, width), values)
    # value i's bit j sits at bit i·width + j of the row, least significant bit first
    number = sum(int(v) << (i * width) for i, v in enumerate(values[0]))
    assert packed[0].tobytes() == number.to_bytes(packed.shape[1], "little")


@pytest.mark.parametrize(("k", "exact", "bits"), [(8, 2, 8), (32, 8, 8), (32, 4, 6), (128, 16, 4)])
def test_codec_round_trip_within_the_stated_bound(k, exact, bits):
    rng = np.random.default_rng(k + bits)
    vocab = 128_256
    ids, logprobs = topk_of(zipf_logits(rng, 40, vocab), k)
    logprobs[0, k - 3 :] = -np.inf  # slots a black-box teacher left empty
    codec = Codec(k, exact, bits, id_bits(vocab))
    assert codec.id_bits == 17
    packed = codec.encode(ids, logprobs)
    assert packed.shape == (
        40,
        math.ceil(k * 17 / 8) + 2 * exact + 2 + math.ceil((k - exact) * bits / 8),
    )
    got_ids, got = codec.decode(packed)
    np.testing.assert_array_equal(got_ids, ids)
    # the exact part is bit for bit the float16 of the captured values
    assert (
        got[:, :exact].tobytes()
        == logprobs[:, :exact].astype(np.float16).astype(np.float32).tobytes()
    )
    assert np.isneginf(got[0, k - 3 :]).all() and np.isfinite(got[1:]).all()
    delta = reference_bound(logprobs, exact, bits)
    np.testing.assert_allclose(codec.error_bound(logprobs), delta, rtol=0, atol=0)
    finite = np.isfinite(logprobs)
    with np.errstate(invalid="ignore"):  # −inf − (−inf) on the empty slots
        error = np.where(finite, np.abs(got.astype(np.float64) - logprobs), 0.0)[:, exact:].max(1)
    assert (error <= delta * (1 + 1e-6) + 1e-6).all()
    assert (np.diff(np.where(finite, got, -1e30), axis=1) <= 1e-6).all()
    # KL(p ‖ p̂) of the distributions renormalised over the k ids is within δ² / 2
    p = np.where(finite, np.exp(logprobs.astype(np.float64)), 0.0)
    p /= p.sum(1, keepdims=True)
    q = np.where(finite, np.exp(got.astype(np.float64)), 0.0)
    q /= q.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0).sum(1)
    assert (kl <= kl_bound(delta) + 1e-9).all()


def test_a_position_without_a_tail_spread_stores_zero_codes():
    codec = Codec(4, 1, 8, 8)
    ids = np.array([[3, 1, 2, 0]])
    logprobs = np.full((1, 4), -1.386294, np.float32)
    _, got = codec.decode(codec.encode(ids, logprobs))
    np.testing.assert_array_equal(got, np.full((1, 4), np.float32(np.float16(-1.386294))))


def test_bytes_per_position_meet_the_goal():
    codec = Codec(32, 8, 8, id_bits(128_256))
    assert codec.width == 68 + 16 + 2 + 24  # ids, exact, scale, codes
    # beyond the exact part and the ids: at most 2 bytes a kept entry (here 1 + 2/24)
    assert (codec.width - codec.ids_bytes - 2 * codec.exact) / codec.tail <= 2


def test_packed_rows_decode_lazily_what_decode_table_gives():
    rng = np.random.default_rng(3)
    codec = Codec(8, 2, 8, 9)
    rows = []
    for length in (3, 0, 5, 2):
        ids, lps = topk_of(rng.normal(0, 2, (length, 300)), 8)
        rows.append((ids, lps))
    column = packed_column([codec.encode(i, lp) for i, lp in rows], codec.width)
    table = pa.table({"n": [0, 1, 2, 3], "topk_packed": column}).replace_schema_metadata(
        codec.metadata()
    )
    # two record batches, the second sliced, as shards concatenated make them
    table = pa.concat_tables([table.slice(0, 2), table.slice(2, 2)])
    lazy = packed_rows(table)
    plain = decode_table(table)
    assert plain.column_names == ["n", "topk_ids", "topk_logprobs"]
    for r, (ids, _) in enumerate(rows):
        want_ids = np.array(plain.column("topk_ids")[r].as_py(), np.int64).reshape(-1, 8)
        want_lps = np.array(plain.column("topk_logprobs")[r].as_py(), np.float32).reshape(-1, 8)
        np.testing.assert_array_equal(want_ids, ids)
        got_ids, got_lps = lazy["topk_ids"][r], lazy["topk_logprobs"][r]
        assert got_ids.shape == (len(ids), 8) and got_ids.ndim == 2 and got_ids.size == ids.size
        assert not got_ids.packed.flags.owndata  # a view of the table's buffer
        np.testing.assert_array_equal(np.asarray(got_ids), want_ids)
        np.testing.assert_array_equal(np.asarray(got_lps, np.float32), want_lps)
        if len(ids):
            np.testing.assert_array_equal(got_lps[1:], want_lps[1:])
            np.testing.assert_array_equal(got_ids[0], want_ids[0])
            assert got_ids.max() == want_ids.max()
