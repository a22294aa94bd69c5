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

import numpy as np

from .network import QParams

__all__ = ["LUT_FUNCS", "lut_func", "lut_table", "apply_lut"]


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
