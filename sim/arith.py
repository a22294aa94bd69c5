"""The SPEC's integer arithmetic, written once: wrapping, requantization, (M, S) from a scale.

Everything here is exact int64 numpy; ``acc_bits + mult_bits <= 62`` keeps products in range.
"""

from __future__ import annotations

import math

import numpy as np

from .validate import PRODUCT_LIMIT, check_int

__all__ = ["wrap", "requantize", "output_bounds", "quantize_multiplier", "rounding_term",
           "int_range", "bits_for_range"]


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """Inclusive range of a ``bits``-wide integer."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def bits_for_range(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding every integer in ``[lo, hi]`` (at least 1):
    the accumulator width a set of exact sums needs."""
    return max(int(hi), ~int(lo), 0).bit_length() + 1


def wrap(values, bits: int) -> np.ndarray:
    """Two's-complement wrap of int64 ``values`` to ``bits`` bits (returns int64)."""
    v = np.asarray(values, dtype=np.int64)
    half = np.int64(1) << np.int64(bits - 1)
    mask = (np.int64(1) << np.int64(bits)) - np.int64(1)
    return ((v + half) & mask) - half


def rounding_term(shift) -> np.ndarray:
    """``R = 1 << (S - 1)`` if ``S > 0`` else 0, elementwise (int64)."""
    s = np.asarray(shift, dtype=np.int64)
    return np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), np.int64(0))


def output_bounds(a_bits: int, a_signed: bool, z_y: int, relu: bool) -> tuple[int, int]:
    """``(lo, hi)`` of the requantizer clamp: ``lo = z_y`` with fused ReLU, else the type min."""
    tmin, tmax = int_range(a_bits, a_signed)
    return (int(z_y) if relu else tmin), tmax


def requantize(acc, m, s, z_y: int, lo: int, hi: int) -> np.ndarray:
    """``clamp(z_y + ((acc * M + R) >> S), lo, hi)`` with per-channel broadcasting.

    ``acc`` is ``[..., N]``; ``m`` and ``s`` are scalars or ``[N]``. ``>>`` is arithmetic
    (floor), as numpy's ``right_shift`` on int64.
    """
    acc = np.asarray(acc, dtype=np.int64)
    m = np.asarray(m, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    shifted = np.right_shift(acc * m + rounding_term(s), s)
    return np.clip(shifted + np.int64(z_y), lo, hi)


def quantize_multiplier(real_scale, mult_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(M, S)`` with ``M / 2**S ~= real_scale``: the largest ``S`` in [0, 63] with
    ``M = round(real_scale * 2**S) < 2**mult_bits``.

    ``real_scale`` is ``s_w * s_x / s_y`` (scalar or per channel, >= 0). A scale of 0 gives
    ``M = 0, S = 0``; a scale too small for ``S = 63`` gives ``S = 63`` and the rounded
    (possibly 0) ``M``. Rounding is to nearest, ties to even. Always returns arrays
    (at least 1-D).
    """
    mult_bits = check_int("quantize_multiplier", "mult_bits", mult_bits, 1, PRODUCT_LIMIT)
    scale = np.atleast_1d(np.asarray(real_scale, dtype=np.float64))
    if np.any(~np.isfinite(scale)) or np.any(scale < 0):
        raise ValueError("real_scale must be finite and >= 0")
    limit = (1 << int(mult_bits)) - 1
    ms = np.zeros(scale.shape, dtype=np.int64)
    ss = np.zeros(scale.shape, dtype=np.int64)
    for i, x in enumerate(scale.ravel()):
        if x == 0.0:
            continue
        if round(x) > limit:
            raise ValueError(f"real_scale {x} needs a multiplier above 2**{mult_bits} - 1 "
                             "even with S = 0")
        # largest S with round(x * 2**S) <= limit
        # first guess from logs (limit / x may overflow a float for tiny x), then exact
        s = min(63, max(0, int(math.floor(math.log2(limit) - math.log2(x)))))
        while s < 63 and round(x * 2.0 ** (s + 1)) <= limit:
            s += 1
        while s > 0 and round(x * 2.0 ** s) > limit:
            s -= 1
        ms.flat[i] = int(np.rint(x * 2.0 ** s))
        ss.flat[i] = s
    return ms.reshape(scale.shape), ss.reshape(scale.shape)
