"""DistillKit's compressed top-k log-probs, decoded (its ``DistributionQuantizationConfig``).

Per position, DistillKit stores the k largest log-probs sorted from the largest, as bytes:

1. the first ``exact_k`` values as they are (``exact_dtype``, little-endian);
2. the coefficients of a least-squares fit of the other ``k - exact_k`` values by the
   ``polynomial_terms`` of their rank t (an integer n is t^n, ``sqrt`` and ``exp`` are those
   functions of t; t = 0, 1, … or, under ``normalize_t``, evenly from 0 to 1), in ``term_dtype``;
3. for each residual bin: a scale (``scale_dtype``), then ``num_elements`` residuals of the fit
   quantized to ``element_bits`` bits (signed, offset by 2^(bits−1); one bit is ±scale), packed
   most significant bit first; residuals after the last bin are 0.

Under ``delta_encoding`` the values are the first log-prob and then the differences between
neighbours, so the log-probs are their running sum. The token ids are packed the same way,
ceil(log2(d)) bits each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from kdlang.check.captured import CompressionConfig

_DTYPES = {"float16": "<f2", "float32": "<f4", "float64": "<f8"}
_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def _floats(raw: np.ndarray, dtype: str) -> np.ndarray:
    """``[P, n * size]`` bytes as ``[P, n]`` float64 values of ``dtype``."""
    raw = np.ascontiguousarray(raw)
    if dtype == "bfloat16":  # the high half of a float32
        halves = raw.view("<u2").astype(np.uint32) << 16
        return halves.view("<f4").astype(np.float64)
    return raw.view(_DTYPES[dtype]).astype(np.float64)


def unpack_bits(raw: np.ndarray, bits: int, count: int) -> np.ndarray:
    """``[P, bytes]`` → ``[P, count]`` unsigned integers of ``bits`` bits, MSB first."""
    if raw.shape[-1] * 8 < bits * count:
        raise ValueError(f"{raw.shape[-1]} bytes cannot hold {count} values of {bits} bits")
    stream = np.unpackbits(np.ascontiguousarray(raw, np.uint8), axis=-1)
    stream = stream[:, : bits * count].reshape(len(raw), count, bits).astype(np.uint64)
    powers = np.uint64(1) << np.arange(bits - 1, -1, -1, dtype=np.uint64)
    return (stream * powers).sum(-1).astype(np.int64)


def rank_terms(config: CompressionConfig, count: int) -> np.ndarray:
    """``[count, terms]``: each polynomial term at each rank t of the approximated values."""
    if config.normalize_t:
        t = np.linspace(0.0, 1.0, count)
    else:
        t = np.arange(count, dtype=np.float64)
    columns = [
        t**term if isinstance(term, int) else getattr(np, str(term))(t)
        for term in config.polynomial_terms
    ]
    return np.stack(columns, axis=-1) if columns else np.zeros((count, 0))


def decode_logprobs(raw: np.ndarray, config: CompressionConfig) -> np.ndarray:
    """``[P, bytes]`` compressed log-probs → ``[P, k]`` float32, sorted from the largest."""
    width = config.exact_k * _BYTES[config.exact_dtype]
    width += len(config.polynomial_terms) * _BYTES[config.term_dtype]
    width += sum(
        _BYTES[b.scale_dtype] + (b.element_bits * b.num_elements + 7) // 8
        for b in config.residual_bins
    )
    if raw.shape[-1] < width:
        raise ValueError(f"a position holds {raw.shape[-1]} bytes, the config needs {width}")
    at = config.exact_k * _BYTES[config.exact_dtype]
    exact = _floats(raw[:, :at], config.exact_dtype)
    approx_count = config.k - config.exact_k
    values = np.zeros((len(raw), approx_count))
    if config.polynomial_terms:
        size = len(config.polynomial_terms) * _BYTES[config.term_dtype]
        coeffs = _floats(raw[:, at : at + size], config.term_dtype)
        at += size
        values += coeffs @ rank_terms(config, approx_count).T
    filled = 0
    for b in config.residual_bins:
        scale = _floats(raw[:, at : at + _BYTES[b.scale_dtype]], b.scale_dtype)
        at += _BYTES[b.scale_dtype]
        size = (b.element_bits * b.num_elements + 7) // 8
        levels = unpack_bits(raw[:, at : at + size], b.element_bits, b.num_elements)
        at += size
        if b.element_bits == 1:
            residual = (levels * 2.0 - 1.0) * scale
        else:
            residual = (levels - 2.0 ** (b.element_bits - 1)) * scale
        values[:, filled : filled + b.num_elements] += residual
        filled += b.num_elements
    logprobs = np.concatenate([exact, values], axis=-1)
    if config.delta_encoding:
        logprobs = np.cumsum(logprobs, axis=-1)
    return logprobs.astype(np.float32)


def decode_indices(raw: np.ndarray, config: CompressionConfig) -> np.ndarray:
    """``[P, bytes]`` packed token ids → ``[P, k]`` int32."""
    return unpack_bits(raw, config.index_bits, config.k).astype(np.int32)
