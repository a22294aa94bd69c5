"""The accelerator's vector unit: the integer-only non-GEMM ops of integer networks (numpy).

Table ops
    An elementwise activation of an ``a_bits``-bit input (SiLU, Hardswish, LeakyReLU,
    ReLU6, GELU, sigmoid, tanh) is a lookup table over the ``2^a_bits`` input codes:
    ``y = table[x - x_min]``. :func:`lut_table` builds the table once, at export, from the
    float64 function (``out_q.quantize(f(in_q.dequantize(code)))``); executing it is exact
    integer indexing, which the fake-quant model's exact mode reproduces by indexing the
    same table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .network import QParams

__all__ = ["LUT_FUNCS", "LUT_MAX_BITS", "lut_func", "lut_table", "apply_lut", "i_poly", "i_erf",
           "i_gelu",
           "i_exp", "i_softmax", "i_sqrt", "i_layernorm", "ERF_ABC", "EXP_ABC",
           "LN_FRAC_BITS", "LN_STD_BITS", "VECTOR_OPS", "VectorCost", "layer_vector_cost",
           "i_mean", "broadcast_mask"]


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _silu(x, p):
    return x / (1.0 + np.exp(-x))


def _hardswish(x, p):
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def _leaky_relu(x, p):
    return np.where(x >= 0, x, x * p.get("negative_slope", 0.01))


def _relu6(x, p):
    return np.clip(x, 0.0, 6.0)


def _gelu(x, p):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _sigmoid(x, p):
    return 1.0 / (1.0 + np.exp(-x))


def _tanh(x, p):
    return np.tanh(x)


#: widest input (bits) exported as a table; wider GELU inputs use :func:`i_gelu`
LUT_MAX_BITS = 10
#: the elementwise functions a table op can hold (float64 reference definitions)
LUT_FUNCS = {"silu": _silu, "hardswish": _hardswish, "leaky_relu": _leaky_relu,
             "relu6": _relu6, "gelu": _gelu, "sigmoid": _sigmoid, "tanh": _tanh}


def lut_func(func: str, x, **params) -> np.ndarray:
    """The float64 function ``func`` (a key of :data:`LUT_FUNCS`) at ``x``."""
    if func not in LUT_FUNCS:
        raise ValueError(f"func must be one of {sorted(LUT_FUNCS)}, not {func!r}")
    return LUT_FUNCS[func](np.asarray(x, dtype=np.float64), params)


def lut_table(func: str, in_q: QParams, out_q: QParams, **params) -> np.ndarray:
    """``table[c - x_min] = out_q.quantize(f(in_q.dequantize(c)))`` for every input code
    ``c`` of ``in_q`` (int64, ``2^bits`` entries)."""
    lo, hi = in_q.range
    codes = np.arange(lo, hi + 1, dtype=np.int64)
    y = lut_func(func, in_q.dequantize(codes), **params)
    return out_q.quantize(y.astype(np.float32))


def apply_lut(table: np.ndarray, x: np.ndarray, in_q: QParams) -> np.ndarray:
    """``table[x - x_min]`` (int64)."""
    return np.asarray(table, dtype=np.int64)[np.asarray(x, dtype=np.int64) - in_q.range[0]]


# ---- I-BERT integer-only kernels (Kim et al., 2021) ----------------------------------------
#
# Each kernel takes integer codes ``q`` (int64, zero-point already removed) and their real
# ``scale`` and returns ``(q_out, scale_out)`` with ``real_out ~= scale_out * q_out``.
# Constants that depend on the scale (``floor(b / S)`` and the like) are computed once from
# the scale, as ``(M, S)`` are; the per-element work is integer adds, multiplies, shifts,
# comparisons and (softmax, LayerNorm: once per row) integer divisions. Division is floor
# division (``//``); the final rescaling to an output grid is the requantizer's
# ``(acc M + R) >> S`` (:func:`sim.arith.requantize`).

LN2 = math.log(2.0)
#: second-order fits of I-BERT: ``erf(x) ~ sgn(x) [a (min(|x|, -b) + b)^2 + 1]`` and
#: ``exp(p) ~ a (p + b)^2 + c`` on ``p`` in ``(-ln 2, 0]``
ERF_ABC = (-0.2888, -1.769, 1.0)
EXP_ABC = (0.3585, 1.353, 0.344)
#: fraction bits of the normalised LayerNorm value and of its fixed-point standard deviation
LN_FRAC_BITS = 16
LN_STD_BITS = 8
#: largest exponent shift of ``i_exp`` (beyond it every value is 0)
EXP_MAX_SHIFT = 30
#: ``i_gelu`` refines its input grid (exactly, ``q << k``) to a scale <= ``2^-GELU_GRID_BITS``
GELU_GRID_BITS = 8
#: ``i_exp`` refines its input grid until ``ln 2`` spans at least ``2^EXP_LN2_BITS`` codes
EXP_LN2_BITS = 10


def _as_int(q) -> np.ndarray:
    q = np.asarray(q)
    if not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"integer codes expected, got dtype {q.dtype}")
    return q.astype(np.int64)


def _check_scale(scale) -> float:
    s = float(scale)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"scale must be finite and > 0, not {scale!r}")
    return s


def i_poly(q, scale: float, a: float, b: float, c: float) -> tuple[np.ndarray, float]:
    """``a (x + b)^2 + c`` on ``x = scale q``: ``q_out = (q + floor(b / S))^2 +
    floor(c / (a S^2))``, ``scale_out = a S^2`` (made positive by negating ``q_out`` when
    ``a < 0``)."""
    q, s = _as_int(q), _check_scale(scale)
    q_b = math.floor(b / s)
    q_c = math.floor(c / (a * s * s))
    out = (q + q_b) ** 2 + q_c
    s_out = a * s * s
    return (-out, -s_out) if s_out < 0 else (out, s_out)


def i_erf(q, scale: float) -> tuple[np.ndarray, float]:
    """Integer erf: ``sgn(x) L(min(|x|, -b))`` with I-BERT's :data:`ERF_ABC` fit."""
    q, s = _as_int(q), _check_scale(scale)
    a, b, c = ERF_ABC
    clip = math.floor(-b / s)
    q_l, s_l = i_poly(np.minimum(np.abs(q), clip), s, a, b, c)
    return np.sign(q) * q_l, s_l


def i_gelu(q, scale: float) -> tuple[np.ndarray, float]:
    """Integer GELU: ``x (1 + erf(x / sqrt 2)) / 2`` with :func:`i_erf` on a grid refined
    to :data:`GELU_GRID_BITS`:
    ``q_out = q (q_erf + floor(1 / S_erf))``, ``scale_out = S S_erf / 2``."""
    q, s = _as_int(q), _check_scale(scale)
    k = max(0, math.ceil(math.log2(s * 2 ** GELU_GRID_BITS)))     # refine to S <= 2^-bits
    q, s = q << k, s / 2 ** k
    q_erf, s_erf = i_erf(q, s / math.sqrt(2.0))
    q_one = math.floor(1.0 / s_erf)
    return q * (q_erf + q_one), s * s_erf / 2.0


def i_exp(q, scale: float) -> tuple[np.ndarray, float]:
    """Integer ``exp(x)`` for ``x = scale q <= 0``: on a grid refined by ``2^k`` (see
    :data:`EXP_LN2_BITS`), ``x = -z ln2 + p`` with
    ``z = floor(-q / q_ln2)``, ``exp(p)`` by the :data:`EXP_ABC` fit, then ``>> z``."""
    q, s = _as_int(q), _check_scale(scale)
    if q.size and int(q.max()) > 0:
        raise ValueError("i_exp needs x <= 0 (subtract the row maximum first)")
    # refine the grid (exactly: q << k, S / 2^k) until ln 2 spans >= 2^EXP_LN2_BITS codes,
    # so that floor(ln 2 / S) does not distort the exponent
    k = max(0, math.ceil(math.log2(s * 2 ** EXP_LN2_BITS / LN2)))
    q, s = q << k, s / 2 ** k
    q_ln2 = math.floor(LN2 / s)
    z = (-q) // q_ln2
    q_p = q + z * q_ln2
    q_l, s_l = i_poly(q_p, s, *EXP_ABC)
    return np.right_shift(q_l, np.minimum(z, EXP_MAX_SHIFT)), s_l


def i_softmax(q, scale: float, out_bits: int = 8, axis: int = -1, mask=None
              ) -> tuple[np.ndarray, float]:
    """Integer softmax along ``axis``: :func:`i_exp` of ``q - max(q)``, then
    ``(e * floor(2^31 / sum e) + R) >> (31 - out_bits)``, clamped to ``out_bits``
    unsigned; ``scale_out = 2^-out_bits``. ``mask`` (0/1, broadcast to ``q``; a ``[B, S]``
    mask by :func:`broadcast_mask`, along ``axis``): positions with 0 are left out
    (``e = 0``; the maximum is over the others)."""
    q = _as_int(q)
    if mask is not None:
        keep = broadcast_mask(np.asarray(mask) != 0, q.shape, axis)
        lo = int(q.min()) if q.size else 0
        row_max = np.where(keep, q, lo).max(axis=axis, keepdims=True)
        e, _ = i_exp(np.minimum(q - row_max, 0), scale)
        e = np.where(keep, e, 0)
    else:
        e, _ = i_exp(q - q.max(axis=axis, keepdims=True), scale)
    total = np.maximum(e.sum(axis=axis, keepdims=True), 1)
    factor = (np.int64(1) << np.int64(31)) // total
    shift = 31 - int(out_bits)
    y = np.right_shift(e * factor + (np.int64(1) << np.int64(shift - 1)), shift)
    return np.clip(y, 0, (1 << out_bits) - 1), 2.0 ** -out_bits


def i_sqrt(n) -> np.ndarray:
    """``floor(sqrt(n))`` for int64 ``n >= 0`` by integer Newton iteration
    (``x <- (x + n // x) // 2`` from ``2^ceil(bits(n) / 2)`` until it stops decreasing)."""
    n = _as_int(n)
    if n.size and int(n.min()) < 0:
        raise ValueError("i_sqrt needs n >= 0")
    bits = np.zeros(n.shape, dtype=np.int64)
    v = n.copy()
    while np.any(v > 0):
        bits += v > 0
        v >>= 1
    x = np.left_shift(np.int64(1), (bits + 1) // 2)
    while True:
        y = (x + n // np.maximum(x, 1)) // 2
        done = y >= x
        if np.all(done):
            return np.where(n == 0, 0, x)
        x = np.where(done, x, y)


def i_layernorm(q, axis: int = -1) -> tuple[np.ndarray, float]:
    """Integer normalisation ``(x - mean) / std`` along ``axis`` (the LayerNorm before its
    affine part; independent of the input scale). With ``m = floor(sum / N)``,
    ``c = q - m`` and ``d = sum - N m``, ``N (q - mean) = N c - d`` and
    ``N^2 var = N sum c^2 - d^2`` exactly; ``std_fp = i_sqrt(((N sum c^2 - d^2) <<
    2 LN_STD_BITS) // N^2)`` (the standard deviation with :data:`LN_STD_BITS` fraction
    bits) and ``q_out = ((N c - d) << (LN_FRAC_BITS + LN_STD_BITS)) // (N std_fp)``;
    ``scale_out = 2^-LN_FRAC_BITS``. A constant row gives 0. ``ValueError`` if an
    intermediate would not fit in int64."""
    q = _as_int(q)
    n = q.shape[axis]
    total = q.sum(axis=axis, keepdims=True)
    m = total // n
    c = q - m
    d = total - n * m
    sq = (c * c).sum(axis=axis, keepdims=True)
    big = float(np.max(np.abs(c), initial=0)) * n
    if n * float(np.max(sq, initial=0)) * 2.0 ** (2 * LN_STD_BITS) >= 2.0 ** 62 or \
            big * 2.0 ** (LN_FRAC_BITS + LN_STD_BITS) >= 2.0 ** 62:
        raise ValueError(f"i_layernorm: rows of {n} values of this range overflow int64")
    var = ((n * sq - d * d) << (2 * LN_STD_BITS)) // (n * n)
    std = np.maximum(i_sqrt(var), 1)
    return ((n * c - d) << (LN_FRAC_BITS + LN_STD_BITS)) // (n * std), 2.0 ** -LN_FRAC_BITS


def broadcast_mask(mask, shape: tuple[int, ...], axis: int = -1) -> np.ndarray:
    """A ``[B, S]`` 0/1 mask as an array that broadcasts to ``shape``, aligned with axis 0
    and ``axis`` (softmax: the last axis, the keys; token mean: the token axis); a mask of
    another rank is broadcast as it is."""
    m = np.asarray(mask)
    nd = len(shape)
    if m.ndim == 2 and nd > 2:
        ax = axis % nd
        m = m.reshape((m.shape[0],) + (1,) * (ax - 1) + (m.shape[1],) + (1,) * (nd - ax - 1))
    return np.broadcast_to(m, shape)


def i_mean(q, m: int, s: int, axis: int = 1, mask=None) -> np.ndarray:
    """Integer mean over ``axis`` of ``q`` (codes minus the input zero-point), rescaled by
    ``M / 2^S``: ``acc = sum mask q``, ``n = max(sum mask, 1)`` (all positions without a
    mask), ``floor((acc M + n R) / (n 2^S))`` with ``R = 2^(S-1)`` -- the requantizer's
    rounding, divided by ``n`` (before the output zero-point and clamp)."""
    q = _as_int(q)
    if mask is None:
        acc = q.sum(axis=axis)
        n = np.full(acc.shape, q.shape[axis], dtype=np.int64)
    else:
        keep = (broadcast_mask(mask, q.shape, axis) != 0).astype(np.int64)
        acc = (q * keep).sum(axis=axis)
        n = np.maximum(keep.sum(axis=axis), 1)
    m, s = np.int64(m), np.int64(s)
    r = (np.int64(1) << (s - 1)) if s > 0 else np.int64(0)
    return (acc * m + n * r) // (n << s)


# ---- cost of the vector-unit ops (for the analytic and energy models) ----------------------
#: integer operations per element (add, multiply, shift, compare, table read) of each
#: vector-unit kind, counted from the kernels above; ``per_row`` ops come once per row of
#: the last axis (a division; LayerNorm's integer-Newton square root, <= 32 iterations of a
#: division, an add and a shift)
VECTOR_OPS = {"lut": {"per_element": 1},
              "add": {"per_element": 7},            # 2 mul, 2 sub, add, R + shift, clamp
              "relu": {"per_element": 1},
              "maxpool2d": {"per_window": 1},
              "avgpool2d": {"per_window": 1, "per_output": 4},
              "global_avgpool": {"per_window": 1, "per_output": 4},
              "softmax": {"per_element": 16, "per_row": 2},
              "gelu": {"per_element": 14},          # i-erf: abs, min, add, square, add, sign
              "layernorm": {"per_element": 14, "per_row": 3 * 32 + 3},
              "embedding": {"per_element": 1},     # a table read per output element
              "position_embedding": {"per_element": 1},
              "select": {"per_element": 1},        # a copy
              # masked sum (multiply, add) per input element; per output: multiply, add
              # n R, division, zero-point, clamp
              "mean": {"per_window": 2, "per_output": 5}}


@dataclass(frozen=True)
class VectorCost:
    """Operations and buffer traffic (elements read and written) of vector-unit layers."""

    ops: int
    reads: int
    writes: int


def layer_vector_cost(kind: str, in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...],
                      window: int = 1, params: int = 0) -> VectorCost:
    """:class:`VectorCost` of one vector-unit layer of ``kind`` (a key of
    :data:`VECTOR_OPS`) with the given input / output shapes; ``window`` elements per
    pooled output, ``params`` parameter elements read (LayerNorm's gamma and beta)."""
    if kind not in VECTOR_OPS:
        raise ValueError(f"kind must be one of {sorted(VECTOR_OPS)}, not {kind!r}")
    c = VECTOR_OPS[kind]
    n_in = sum(int(np.prod(s)) for s in in_shapes)
    n_out = int(np.prod(out_shape))
    rows = n_out // out_shape[-1] if out_shape else 1
    ops = c.get("per_element", 0) * n_out + c.get("per_row", 0) * rows \
        + c.get("per_window", 0) * window * n_out + c.get("per_output", 0) * n_out
    return VectorCost(ops=int(ops), reads=n_in + int(params), writes=n_out)
