"""Vector-unit accuracy: each integer kernel of :mod:`qaccel.sim.vector` against the float64
function on the same quantized inputs, in LSBs (ULP) of the output grid.

Every kernel runs as the executor runs it (:mod:`qaccel.sim.executor`): the I-BERT kernels
(``i_exp``, ``i_gelu``, ``i_layernorm``) are requantized onto the output grid by
``(acc M + R) >> S`` with ``(M, S)`` from ``quantize_multiplier`` (16-bit multiplier, the
quantization config's default); ``i_softmax`` and ``i_mean`` produce output codes
themselves; the table ops (``lut_table``) index a table over all input codes. The error of an
output code ``q`` is ``|q - clamp(f(x) / s_out)|`` (clamped to the output range, so that
saturation is not counted); the ideal is float-then-round, ``clamp(rint(f(x) / s_out))``,
whose error is at most 0.5 LSB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qaccel.benches import BenchOptions
from qaccel.sim.arith import int_range, quantize_multiplier, requantize
from qaccel.sim.network import QParams
from qaccel.sim.vector import (
    LUT_FUNCS,
    apply_lut,
    i_exp,
    i_gelu,
    i_layernorm,
    i_mean,
    i_softmax,
    i_sqrt,
    lut_func,
    lut_table,
)

__all__ = ["MULT_BITS", "OPS", "UlpRow", "ulp_errors", "measure", "table", "run"]

#: multiplier width of the requantizer (``QuantConfig.mult_bits``'s default)
MULT_BITS = 16
#: the ops of the table, in order
OPS = ("i_exp", "i_softmax", "i_gelu", "i_layernorm", "i_sqrt", "i_mean") + tuple(
    f"lut:{f}" for f in LUT_FUNCS)


@dataclass(frozen=True)
class UlpRow:
    """One measured setting: ``max_ulp`` / ``mean_ulp`` of ``|error|`` over ``n`` outputs,
    ``ideal_max`` the float-then-round error on the same outputs."""

    op: str
    setting: str
    n: int
    max_ulp: float
    mean_ulp: float
    ideal_max: float


def ulp_errors(q, y, scale: float, lo: int, hi: int) -> tuple[float, float, float]:
    """``(max, mean)`` of ``|q - clamp(y / scale, lo, hi)|`` and the max of the same for
    ``clamp(rint(y / scale))`` (the ideal), all in LSBs of the output grid ``scale``."""
    q = np.asarray(q, dtype=np.float64)
    ref = np.clip(np.asarray(y, dtype=np.float64) / float(scale), lo, hi)
    if q.shape != ref.shape or q.size == 0:
        raise ValueError(f"q and y must have the same non-empty shape, got {q.shape}, "
                         f"{ref.shape}")
    err = np.abs(q - ref)
    ideal = np.abs(np.clip(np.rint(ref), lo, hi) - ref)
    return float(err.max()), float(err.mean()), float(ideal.max())


def _requant(acc, acc_scale: float, out_scale: float, lo: int, hi: int) -> np.ndarray:
    m, s = quantize_multiplier(acc_scale / out_scale, MULT_BITS)
    return requantize(acc, m[0], s[0], 0, lo, hi)


def _row(op, setting, q, y, scale, lo, hi) -> UlpRow:
    mx, mean, ideal = ulp_errors(q, y, scale, lo, hi)
    return UlpRow(op, setting, int(np.size(q)), mx, mean, ideal)


def _codes(bits: int, signed: bool = True) -> np.ndarray:
    lo, hi = int_range(bits, signed)
    return np.arange(lo, hi + 1, dtype=np.int64)


def _exp_rows() -> list[UlpRow]:
    rows = []
    lo, hi = int_range(8, False)
    s_out = 1.0 / hi
    for bits, x_min in ((8, -8.0), (8, -16.0), (16, -16.0)):
        c = _codes(bits)
        c = c[c <= 0]
        s = -x_min / -c.min()
        q, s_e = i_exp(c, s)
        rows.append(_row("i_exp", f"{bits}-bit x in [{x_min:g}, 0], out u8 1/255",
                         _requant(q, s_e, s_out, lo, hi), np.exp(c * s), s_out, lo, hi))
    return rows


def _softmax_rows(rng, n_rows: int) -> list[UlpRow]:
    rows = []
    for bits, width in ((8, 8), (8, 32), (8, 128), (16, 128)):
        hi_code = int_range(bits, True)[1]
        s = 12.0 / hi_code                               # logits N(0, 3^2), clipped at 4 sigma
        x = QParams(s, 0, bits, True).quantize(rng.normal(0.0, 3.0, (n_rows, width)))
        q, s_out = i_softmax(x, s, out_bits=8)
        xr = x * s
        e = np.exp(xr - xr.max(axis=-1, keepdims=True))
        rows.append(_row("i_softmax", f"{bits}-bit logits N(0,3²), rows of {width}, out u8 2^-8",
                         q, e / e.sum(axis=-1, keepdims=True), s_out, 0, 255))
    return rows


def _gelu_rows() -> list[UlpRow]:
    rows = []
    for bits, out_bits, x_max in ((8, 8, 4.0), (8, 8, 8.0), (16, 8, 8.0), (16, 16, 8.0)):
        c = _codes(bits)
        s = x_max / c.max()
        y = lut_func("gelu", c * s)
        lo, hi = int_range(out_bits, True)
        s_out = float(np.abs(y).max()) / hi
        q, s_g = i_gelu(c, s)
        rows.append(_row("i_gelu", f"{bits}-bit x in ±{x_max:g} (all codes), out s{out_bits}",
                         _requant(q, s_g, s_out, lo, hi), y, s_out, lo, hi))
    return rows


def _layernorm_rows(rng, n_rows: int) -> list[UlpRow]:
    rows = []
    lo, hi = int_range(8, True)
    s_out = 4.0 / hi                                     # normalised values clipped at ±4
    for bits, width in ((8, 32), (8, 128), (8, 768), (16, 768)):
        s = 4.0 / int_range(bits, True)[1]
        # rows with their own offset and spread, as between tokens
        real = rng.normal(rng.normal(0, 0.5, (n_rows, 1)), rng.uniform(0.3, 1.0, (n_rows, 1)),
                          (n_rows, width))
        x = QParams(s, 0, bits, True).quantize(real)
        q, s_n = i_layernorm(x)
        xr = x * s
        mu = xr.mean(axis=-1, keepdims=True)
        y = (xr - mu) / np.sqrt(((xr - mu) ** 2).mean(axis=-1, keepdims=True))
        rows.append(_row("i_layernorm", f"{bits}-bit rows of {width}, out s8 ±4 (no eps)",
                         _requant(q, s_n, s_out, lo, hi), y, s_out, lo, hi))
    return rows


def _sqrt_rows(rng, n: int) -> list[UlpRow]:
    rows = []
    for top in (16, 40, 62):
        v = rng.integers(0, 1 << top, n, dtype=np.int64)
        rows.append(_row("i_sqrt", f"n uniform in [0, 2^{top}), integer out",
                         i_sqrt(v), np.sqrt(v.astype(np.float64)), 1.0, 0, 1 << 31))
    return rows


def _mean_rows(rng, n_rows: int) -> list[UlpRow]:
    rows = []
    lo, hi = int_range(8, True)
    for window, what, ratio in ((49, "7x7 global pool", 0.5), (128, "128 tokens", 0.37)):
        s = 4.0 / hi
        x = QParams(s, 0, 8, True).quantize(rng.normal(0.0, 1.0, (n_rows, window)))
        s_out = s * ratio                                # mean's range is narrower
        m, sh = quantize_multiplier(s / s_out, MULT_BITS)
        q = np.clip(i_mean(x, int(m[0]), int(sh[0]), axis=1), lo, hi)
        rows.append(_row("i_mean", f"8-bit, {what}, s_out = {ratio} s_in", q,
                         (x * s).mean(axis=1), s_out, lo, hi))
    return rows


def _lut_rows() -> list[UlpRow]:
    rows = []
    lo, hi = int_range(8, True)
    for func in LUT_FUNCS:
        in_q = QParams(8.0 / 127, 0, 8, True)
        c = _codes(8)
        y = lut_func(func, in_q.dequantize(c))
        out_q = QParams(float(np.abs(y).max()) / hi, 0, 8, True)
        q = apply_lut(lut_table(func, in_q, out_q), c, in_q)
        rows.append(_row(f"lut:{func}", "8-bit x in ±8 (all codes), out s8", q, y,
                         out_q.scale, lo, hi))
    return rows


def measure(n_rows: int = 512, seed: int = 0) -> list[UlpRow]:
    """Every :data:`OPS` entry over its settings (``n_rows`` random rows per row-wise
    setting, inputs from ``seed``); see the module docstring."""
    from tqdm import tqdm

    if int(n_rows) < 1:
        raise ValueError(f"n_rows must be >= 1, not {n_rows!r}")
    rng = np.random.default_rng(seed)
    parts = [("i_exp", _exp_rows), ("i_softmax", lambda: _softmax_rows(rng, n_rows)),
             ("i_gelu", _gelu_rows), ("i_layernorm", lambda: _layernorm_rows(rng, n_rows)),
             ("i_sqrt", lambda: _sqrt_rows(rng, 64 * n_rows)),
             ("i_mean", lambda: _mean_rows(rng, 64 * n_rows)), ("lut", _lut_rows)]
    rows: list[UlpRow] = []
    for _, fn in tqdm(parts, desc="vector ULP", leave=False):
        rows += fn()
    return rows


def table(rows: list[UlpRow]) -> list[str]:
    """Markdown table lines of ``rows``."""
    out = ["| op | input setting | n values | max ULP | mean ULP | ideal max ULP |",
           "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r.op} | {r.setting} | {r.n:,} | {r.max_ulp:.3g} | {r.mean_ulp:.3g} | "
                   f"{r.ideal_max:.3g} |")
    return out


def run(opts: BenchOptions) -> str:
    n_rows, seed = 512, 0
    rows = measure(n_rows, seed)
    worst = max((r for r in rows if not r.op.startswith("lut:")), key=lambda r: r.max_ulp)
    lines = ["# Vector-unit accuracy: integer kernels vs float", "",
             "Each integer kernel of `qaccel.sim.vector`, run as the executor runs it, against "
             "the float64 function on the same quantized inputs, measured by `make bench` "
             f"(`qaccel/benches/vector.py`, seed {seed}, {n_rows} random rows per row-wise "
             "setting; elementwise ops over every input code). Error = |output code - "
             "f(x) / s_out| in LSBs (ULP) of the output grid, the reference clamped to the "
             "output range; *ideal* = the same for float-then-round (<= 0.5). I-BERT "
             f"kernels are requantized with a {MULT_BITS}-bit multiplier. LayerNorm is the "
             "normalisation before its affine part, without eps.", ""]
    lines += table(rows)
    lines += ["", f"Worst integer kernel: {worst.op} ({worst.setting}), {worst.max_ulp:.3g} ULP "
              "max. The table ops are float-then-round by construction (their error is the "
              "ideal's)."]
    return "\n".join(lines) + "\n"

