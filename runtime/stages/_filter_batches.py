"""The rules of ``filter`` on record batches, in order, each remembering what it kept before.

- ``keep``: the condition as Arrow kernels where they compute it exactly
  (:mod:`kdlang.runtime.arrow.expr`), else row by row on the batch.
- ``dedup COL by exact``: the row's text with white space collapsed (as ``" ".join(text.
  split())``; null reads as ``None``), as a 128-bit BLAKE2b digest; the first row of each text
  is kept. Two texts sharing a digest by chance (about 2**-128 for a pair) would count as one.
- ``dedup COL by minhash(..)``: the signatures ``datasketch.MinHash`` gives (its default
  scheme, the same SHA-1 shingle hashes, seed and permutations), computed for a whole batch at
  once with numpy, then the banding of ``datasketch.MinHashLSH`` at the same threshold: a row
  whose band of the signature equals the same band of a kept row's is a near-duplicate. Kept
  bands are held as 64-bit hashes in a sorted array, 8 bytes per band and kept row (two bands
  that differ but hash alike, about 2**-64 for a pair, would count as equal). Where LSH cannot
  band at the threshold (it is too high for ``num_perm``), ``datasketch`` itself looks up
  candidates, as :func:`~kdlang.runtime.stages.filter.dedup_minhash` does.
- ``decontaminate``: the word n-grams of each row, row by row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from hashlib import sha1

import numpy as np
import pyarrow as pa

from kdlang.ir import selection as sel

from ..arrow.expr import Batch, mask
from ..chat import conversation_text
from ..context import StageContext
from .filter import _lsh, ngrams, words

Rule = Callable[[pa.RecordBatch], pa.RecordBatch]

SHINGLES_PER_STEP = 65_536
"""Shingles whose permuted hashes numpy holds at once (``num_perm`` × 4 bytes each: 32 MB at 128)."""


def batch_rule(rule, ctx: StageContext) -> Rule:
    if isinstance(rule, sel.KeepRule):
        return lambda batch: batch.filter(mask(rule.condition, Batch.of(batch)))
    if isinstance(rule, sel.DedupRule):
        if rule.method == "exact":
            return ExactDedup(rule.column)
        return MinHashDedup(rule, ctx.seed)
    banned: set[tuple[str, ...]] = set()
    for row in ctx.rows(rule.against.name):
        banned |= ngrams(row.get(rule.column), rule.ngram)

    def decontaminated(batch: pa.RecordBatch) -> pa.RecordBatch:
        texts = _cells(batch, rule.column)
        return batch.filter(pa.array([not (ngrams(t, rule.ngram) & banned) for t in texts]))

    return decontaminated


def _cells(batch: pa.RecordBatch, column: str) -> list:
    if column not in batch.schema.names:
        return [None] * batch.num_rows
    return batch.column(column).to_pylist()


def exact_keys(batch: pa.RecordBatch, column: str) -> list[str]:
    """Each row's text as ``dedup by exact`` compares it: ``" ".join(str(text).split())``."""
    return [" ".join(str(conversation_text(v)).split()) for v in _cells(batch, column)]


class ExactDedup:
    def __init__(self, column: str):
        self.column = column
        self.seen: set[bytes] = set()

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        seen, kept = self.seen, []
        for key in exact_keys(batch, self.column):
            digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            if digest in seen:
                kept.append(False)
            else:
                seen.add(digest)
                kept.append(True)
        return batch.filter(pa.array(kept, pa.bool_()))


def _fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (what datasketch mixes each shingle hash with)."""
    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


class MinHashDedup:
    def __init__(self, rule: sel.DedupRule, seed: int):
        from datasketch import MinHash

        self.rule = rule
        self.seed = seed
        self.lsh, self.verify = _lsh(rule.threshold, rule.num_perm)
        proto = MinHash(num_perm=rule.num_perm, seed=seed)
        self.scheme = proto.scheme
        if self.scheme != "affine32":
            raise NotImplementedError(f"datasketch's MinHash scheme {self.scheme}")
        self.a, self.b = (np.asarray(p, dtype=np.uint32) for p in proto.permutations)
        self.ranges = list(self.lsh.hashranges)
        self.seen = np.empty(0, dtype=np.uint64)
        self.signatures: dict[str, object] = {}
        self.count = 0

    def signatures_of(self, texts: list) -> np.ndarray:
        """One datasketch signature per text (rows × ``num_perm``, uint32)."""
        digests: list[bytes] = []
        ends: list[int] = []
        size = self.rule.ngram
        for text in texts:
            tokens = words(text)
            if len(tokens) < size:  # as ngrams() gives it, and "" for no word at all
                digests.append(sha1(" ".join(tokens).encode("utf-8")).digest())
            else:
                digests.extend(
                    sha1(" ".join(tokens[i : i + size]).encode("utf-8")).digest()
                    for i in range(len(tokens) - size + 1)
                )
            ends.append(len(digests))
        first_words = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, 20)[:, :4]
        mixed = _fmix32(np.ascontiguousarray(first_words).view("<u4").ravel().astype(np.uint32))
        out = np.empty((len(texts), len(self.a)), dtype=np.uint32)
        starts = np.array([0, *ends[:-1]], dtype=np.int64)
        row = 0
        while row < len(texts):
            last = int(np.searchsorted(ends, starts[row] + SHINGLES_PER_STEP, side="right"))
            last = max(last, row + 1)
            low, high = starts[row], ends[last - 1]
            permuted = self.a[:, None] * mixed[None, low:high] + self.b[:, None]  # perms × shingles
            out[row:last] = np.minimum.reduceat(permuted, starts[row:last] - low, axis=1).T
            row = last
        return out

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """A 64-bit hash of each band of each signature (rows × bands)."""
        keys = np.empty((len(signatures), len(self.ranges)), dtype=np.uint64)
        for band, (start, end) in enumerate(self.ranges):
            value = np.full(len(signatures), 0x9E3779B97F4A7C15 ^ (band + 1), dtype=np.uint64)
            for column in range(start, end):
                value ^= signatures[:, column].astype(np.uint64)
                value *= np.uint64(0xBF58476D1CE4E5B9)
                value ^= value >> np.uint64(31)
            keys[:, band] = value
        return keys

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        signatures = self.signatures_of(_cells(batch, self.rule.column))
        if self.verify:
            kept = self._verified(signatures)
        else:
            kept = self._banded(self.band_keys(signatures))
        return batch.filter(pa.array(kept, pa.bool_()))

    def _banded(self, keys: np.ndarray) -> np.ndarray:
        rows = len(keys)
        flat = keys.ravel()
        if len(self.seen):
            at = np.minimum(np.searchsorted(self.seen, flat), len(self.seen) - 1)
            known = (self.seen[at] == flat).reshape(keys.shape).any(axis=1)
        else:
            known = np.zeros(rows, dtype=bool)
        kept = ~known
        fresh = np.flatnonzero(kept)
        if not len(fresh):
            return kept
        _, inverse, counts = np.unique(keys[fresh].ravel(), return_inverse=True, return_counts=True)
        shared = (counts[inverse].reshape(len(fresh), -1) > 1).any(axis=1)
        taken: set[int] = set()
        for index in fresh[shared]:  # rows sharing a band with another row of this batch
            bands = keys[index].tolist()
            if any(b in taken for b in bands):
                kept[index] = False
            else:
                taken.update(bands)
        new = np.unique(keys[kept].ravel())
        self.seen = np.insert(self.seen, np.searchsorted(self.seen, new), new)
        return kept

    def _verified(self, signatures: np.ndarray) -> np.ndarray:
        from datasketch import LeanMinHash

        kept = np.zeros(len(signatures), dtype=bool)
        for index, values in enumerate(signatures):
            signature = LeanMinHash(seed=self.seed, hashvalues=values, scheme=self.scheme)
            found = self.lsh.query(signature)
            threshold = self.rule.threshold
            if any(signature.jaccard(self.signatures[k]) >= threshold for k in found):
                continue
            key = str(self.count)
            self.count += 1
            self.lsh.insert(key, signature)
            self.signatures[key] = signature
            kept[index] = True
        return kept
