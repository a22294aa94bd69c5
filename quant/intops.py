"""The integer network's arithmetic in torch (int64 / exact float64): what the fake-quant
model's exact mode computes (SPEC agreement 3).

Each function mirrors one ``kind`` of :mod:`qaccel.sim.network` as :mod:`qaccel.sim.executor`
runs it: products are summed exactly in float64 (every partial sum of these integers is far
below ``2^53``), the accumulator wraps to ``acc_bits`` and every integer-to-integer
rescaling is ``(acc * M + R) >> S`` with ``R = 2^(S-1)`` (never ``torch.round``). The
vector unit's kernels (LayerNorm, softmax) are the ones of :mod:`qaccel.sim.vector`,
called on the integer tensors, so they are defined once.
:class:`IntOp` runs one exported :class:`~qaccel.sim.network.IntLayer` on dequantized
float tensors, so a module can switch between the float32 straight-through forward and
this one without changing what flows through the graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from qaccel.sim.arith import output_bounds
from qaccel.sim.network import IntLayer, QParams
from qaccel.sim.vector import i_gelu, i_layernorm, i_mean, i_softmax

__all__ = ["IntOp", "to_int", "from_int", "wrap", "rescale", "run_int_layer"]


def to_int(x: torch.Tensor, q: QParams) -> torch.Tensor:
    """Integer codes (int64) of ``x``, a tensor already on ``q``'s grid (as the float32
    fake-quantizer leaves it); exact because ``|x / s - (q - z)|`` is far below 1/2."""
    s = torch.tensor(q.scale, dtype=torch.float32)
    return (torch.round(x.detach().float() / s) + q.zero_point).to(torch.int64)


def from_int(y: torch.Tensor, q: QParams) -> torch.Tensor:
    """``s (y - z)`` in float32, the value the fake-quantizer produces for code ``y``."""
    s = torch.tensor(q.scale, dtype=torch.float32)
    return s * (y - q.zero_point).to(torch.float32)


def wrap(v: torch.Tensor, bits: int) -> torch.Tensor:
    """Two's-complement wrap of int64 ``v`` to ``bits`` bits."""
    half = 1 << (bits - 1)
    return ((v + half) & ((1 << bits) - 1)) - half


def rescale(acc: torch.Tensor, m, s, z_y: int, lo: int, hi: int, ch_dim: int | None = None
            ) -> torch.Tensor:
    """``clamp(z_y + ((acc * M + R) >> S), lo, hi)``; ``m``/``s`` int64 arrays of one value
    or one per channel along ``ch_dim``."""
    m = torch.tensor(m, dtype=torch.int64)
    s = torch.tensor(s, dtype=torch.int64)
    if m.numel() > 1:
        shape = [1] * acc.dim()
        shape[ch_dim] = -1
        m, s = m.reshape(shape), s.reshape(shape)
    else:
        m, s = m.reshape(()), s.reshape(())
    r = torch.where(s > 0, torch.bitwise_left_shift(torch.ones_like(s), (s - 1).clamp(min=0)),
                    torch.zeros_like(s))
    y = torch.bitwise_right_shift(acc * m + r, s) + z_y
    return y.clamp(lo, hi)


def _bounds(layer: IntLayer) -> tuple[int, int]:
    q = layer.out_q
    return output_bounds(q.bits, q.signed, q.zero_point, layer.relu)


def _exact_int(v: torch.Tensor) -> torch.Tensor:
    return torch.round(v).to(torch.int64)


def _gemm(layer: IntLayer, x: torch.Tensor, acc_bits: int) -> torch.Tensor:
    z = layer.in_q[0].zero_point
    w = torch.tensor(layer.weight, dtype=torch.float64)
    b = torch.tensor(layer.bias, dtype=torch.float64)
    xf = x.to(torch.float64)
    if layer.kind == "linear":
        acc = F.linear(xf, w, b)
        ch = -1
    else:
        ph, pw = layer.padding
        xf = F.pad(xf, (pw, pw, ph, ph), value=float(z))       # padding = z_x (SPEC)
        acc = F.conv2d(xf, w, b, stride=layer.stride, groups=layer.groups)
        ch = 1
    acc = wrap(_exact_int(acc), acc_bits)
    return rescale(acc, layer.m, layer.s, layer.out_q.zero_point, *_bounds(layer), ch_dim=ch)


def run_int_layer(layer: IntLayer, xs: list[torch.Tensor], acc_bits: int) -> torch.Tensor:
    """Integer output (int64) of ``layer`` on integer inputs ``xs`` -- the executor's
    arithmetic, in torch."""
    kind = layer.kind
    if kind in ("linear", "conv2d"):
        return _gemm(layer, xs[0], acc_bits)
    lo, hi = _bounds(layer)
    zy = layer.out_q.zero_point
    if kind in ("avgpool2d", "global_avgpool"):
        d = (xs[0] - layer.in_q[0].zero_point).to(torch.float64)
        if kind == "global_avgpool":
            acc = d.sum(dim=(2, 3), keepdim=layer.keepdim)
        else:
            acc = F.avg_pool2d(d, layer.kernel, layer.stride, divisor_override=1)
        return rescale(wrap(_exact_int(acc), acc_bits), layer.m, layer.s, zy, lo, hi)
    if kind == "add":
        a, b = xs
        m0, m1 = (int(v) for v in layer.m)
        acc = wrap(m0 * (a - layer.in_q[0].zero_point) + m1 * (b - layer.in_q[1].zero_point),
                   acc_bits)
        return rescale(acc, 1, layer.s, zy, lo, hi)
    if kind == "lut":
        table = torch.tensor(layer.table, dtype=torch.int64)
        return table[xs[0] - layer.in_q[0].range[0]]
    if kind == "matmul":
        a = (xs[0] - layer.in_q[0].zero_point).to(torch.float64)
        b = (xs[1] - layer.in_q[1].zero_point).to(torch.float64)
        acc = wrap(_exact_int(torch.matmul(a, b)), acc_bits)
        return rescale(acc, layer.m, layer.s, zy, lo, hi)
    if kind == "gelu":
        q = layer.in_q[0]
        g, _ = i_gelu((xs[0] - q.zero_point).numpy(), q.scale)
        return rescale(torch.from_numpy(g), layer.m, layer.s, zy, lo, hi)
    if kind == "layernorm":      # the vector unit's kernel, defined once in sim.vector
        n, _ = i_layernorm((xs[0] - layer.in_q[0].zero_point).numpy())
        acc = torch.from_numpy(n) * torch.tensor(layer.weight) + torch.tensor(layer.bias)
        return rescale(acc, layer.m, layer.s, zy, lo, hi)
    if kind == "softmax":
        q = layer.in_q[0]
        mask = xs[1].numpy() if len(xs) > 1 else None
        return torch.from_numpy(i_softmax((xs[0] - q.zero_point).numpy(), q.scale,
                                          layer.out_q.bits, mask=mask)[0])
    if kind == "mean":           # token mean (sim.vector.i_mean), optionally masked
        q = layer.in_q[0]
        y = i_mean((xs[0] - q.zero_point).numpy(), int(layer.m[0]), int(layer.s[0]),
                   layer.axis, mask=xs[1].numpy() if len(xs) > 1 else None)
        return (torch.from_numpy(y) + zy).clamp(lo, hi)
    raise ValueError(f"exact mode: layer {layer.name!r} of kind {kind!r} has no integer "
                     "implementation in quant.intops")


class IntOp:
    """One exported layer as a float -> float function for a module's exact mode:
    inputs (on their quantization grids) -> integer codes -> :func:`run_int_layer` ->
    dequantized output (float32, on the output grid)."""

    def __init__(self, layer: IntLayer, acc_bits: int):
        self.layer = layer
        self.acc_bits = int(acc_bits)

    def __call__(self, *xs: torch.Tensor) -> torch.Tensor:
        ints = [to_int(x, q) for x, q in zip(xs, self.layer.in_q)]
        return from_int(run_int_layer(self.layer, ints, self.acc_bits), self.layer.out_q)

    def __repr__(self) -> str:
        return f"IntOp({self.layer.name!r}, {self.layer.kind})"
