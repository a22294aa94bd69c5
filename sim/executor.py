"""Integer executor for :class:`sim.network.IntNetwork` (numpy only, SPEC arithmetic).

Convolutions are lowered to GEMMs by im2col (padding filled with the input zero-point);
every conv/linear layer is a list of :class:`sim.job.GemmJob` s (:func:`layer_gemms`, one
per group), computed by :func:`sim.reference.run_reference` with the network's
``acc_bits`` and the layer's output clamp. The same jobs run on the cycle model or the RTL
(``gemm_fn``; :meth:`GemmJob.for_config` validates one for an ``ArrayConfig``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .arith import output_bounds, requantize, rounding_term, wrap
from .job import GemmJob
from .network import IntLayer, IntNetwork
from .reference import run_reference
from .validate import fail
from .vector import (
    VECTOR_OPS,
    VectorCost,
    apply_lut,
    broadcast_mask,
    i_gelu,
    i_layernorm,
    i_mean,
    i_softmax,
)
from .workload import VectorWorkload

__all__ = ["RunResult", "im2col", "layer_gemms", "matmul_gemms", "vector_costs",
           "vector_workloads", "run_layer",
           "run", "run_float", "network_inputs", "sample_inputs"]


@dataclass
class RunResult:
    """Output of :func:`run` with ``trace=True``: every layer's integer output and the
    accumulator overflow (wrap) counts per layer."""

    output: np.ndarray
    outputs: list[np.ndarray] = field(default_factory=list)
    overflows: list[int] = field(default_factory=list)


def _windows(x: np.ndarray, kernel, stride, padding, fill) -> np.ndarray:
    """``[B, C, Ho, Wo, kh, kw]`` windows of ``x`` ``[B, C, H, W]`` padded with ``fill``."""
    ph, pw = padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    kh, kw = kernel
    if x.shape[2] < kh or x.shape[3] < kw:
        raise ValueError(f"input spatial size {x.shape[2:]} smaller than kernel {kernel}")
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    return win[:, :, ::stride[0], ::stride[1]]


def im2col(x: np.ndarray, kernel, stride, padding, fill: int, groups: int = 1
           ) -> tuple[list[np.ndarray], tuple[int, int]]:
    """Per group ``X[T, K]`` with ``T = (b, ho, wo)`` and ``K = (c, kh, kw)`` (the order of
    a flattened ``[C_out, C_in/g, kh, kw]`` weight); returns ``(cols, (Ho, Wo))``."""
    win = _windows(x, kernel, stride, padding, fill)
    B, C, Ho, Wo, kh, kw = win.shape
    cg = C // groups
    cols = []
    for g in range(groups):
        part = win[:, g * cg:(g + 1) * cg]                  # [B, cg, Ho, Wo, kh, kw]
        cols.append(part.transpose(0, 2, 3, 1, 4, 5).reshape(B * Ho * Wo, cg * kh * kw))
    return cols, (Ho, Wo)


def _bounds(layer: IntLayer) -> tuple[int, int]:
    q = layer.out_q
    return output_bounds(q.bits, q.signed, q.zero_point, layer.relu)


def _job(x, w, bias, m, s, z_y: int, relu: bool) -> GemmJob:
    """A layer GEMM as a :class:`GemmJob`. Its operands were validated by
    :class:`IntNetwork` (weights, bias, ``M``, ``S``) and :func:`run` (the input); only
    :meth:`GemmJob.for_config` ties it to an accelerator configuration."""
    arrays = [np.asarray(a, dtype=np.int64) for a in (x, w, bias, m, s)]
    for a in arrays:
        a.setflags(write=False)
    return GemmJob(*arrays, z_y=int(z_y), relu=bool(relu))


def layer_gemms(net: IntNetwork, layer: IntLayer, x: np.ndarray) -> list[GemmJob]:
    """The GEMMs of a ``linear``/``conv2d`` layer on integer input ``x`` (one per group):
    ``x[T, K]``, ``w[K, N]``, ``bias[N]``, ``m``/``s`` (``[N]`` per channel, scalars per
    tensor), the output zero-point and the fused ReLU."""
    if layer.kind not in ("linear", "conv2d"):
        raise ValueError(f"layer {layer.name!r} ({layer.kind}) is not a GEMM layer")
    x = np.asarray(x, dtype=np.int64)
    zy = layer.out_q.zero_point
    if layer.kind == "linear":
        if x.ndim < 2 or x.shape[-1] != layer.weight.shape[1]:
            raise ValueError(f"layer {layer.name!r}: input shape {x.shape} does not match "
                             f"weight {layer.weight.shape}")
        x = x.reshape(-1, x.shape[-1])                     # tokens [B, ..., K] -> [T, K]
        m, s = (layer.m, layer.s) if layer.per_channel else (layer.m[0], layer.s[0])
        return [_job(x, layer.weight.T, layer.bias, m, s, zy, layer.relu)]
    if x.ndim != 4 or x.shape[1] != layer.weight.shape[1] * layer.groups:
        raise ValueError(f"layer {layer.name!r}: input shape {x.shape} does not match "
                         f"weight {layer.weight.shape} with groups={layer.groups}")
    cols, _ = im2col(x, layer.kernel, layer.stride, layer.padding,
                     layer.in_q[0].zero_point, layer.groups)
    n_g = layer.out_channels // layer.groups
    out = []
    for g, xg in enumerate(cols):
        sl = slice(g * n_g, (g + 1) * n_g)
        w = layer.weight[sl].reshape(n_g, -1).T
        m, s = (layer.m[sl], layer.s[sl]) if layer.per_channel else (layer.m[0], layer.s[0])
        out.append(_job(xg, w, layer.bias[sl], m, s, zy, layer.relu))
    return out


def matmul_gemms(layer: IntLayer, a: np.ndarray, b: np.ndarray) -> list[GemmJob]:
    """The GEMMs of an activation x activation ``matmul`` layer, one per leading index
    (batch, head): ``b - z_b`` is the stationary matrix ``w[K, N]``, ``a`` streams in as
    ``x[T, K]`` and the bias ``-z_a sum_k w[k, n]`` carries ``a``'s zero-point (SPEC)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    za, zb = layer.in_q[0].zero_point, layer.in_q[1].zero_point
    a2 = a.reshape((-1,) + a.shape[-2:])
    b2 = b.reshape((-1,) + b.shape[-2:]) - zb
    return [_job(x, w, -za * w.sum(axis=0), layer.m[0], layer.s[0], layer.out_q.zero_point,
                 layer.relu) for x, w in zip(a2, b2)]


def _run_gemms(jobs, net: IntNetwork, layer: IntLayer, lo: int, hi: int, gemm_fn):
    """Each job's outputs (the reference's, or ``gemm_fn``'s, checked) and the number of
    accumulator overflows over all jobs."""
    ys, ovf = [], 0
    for i, job in enumerate(jobs):
        ref = run_reference(job, net.acc_bits, lo, hi)
        y = ref.y
        if gemm_fn is not None:
            y = _checked_gemm_output(gemm_fn(job), job, lo, hi,
                                     f"layer {layer.name!r} GEMM {i}")
        ys.append(y)
        ovf += ref.overflows
    return ys, ovf


def _checked_gemm_output(y, job: GemmJob, lo: int, hi: int, where: str) -> np.ndarray:
    """``gemm_fn``'s result for ``job``, refused unless it is ``[T, N]`` integers in the
    output range ``[lo, hi]`` (a float or a wider integer would otherwise be truncated)."""
    arr = np.asarray(y)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{where}: gemm_fn must return integers, got dtype {arr.dtype}")
    if arr.shape != (job.T, job.N):
        raise ValueError(f"{where}: gemm_fn returned shape {arr.shape}, expected "
                         f"{(job.T, job.N)}")
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        bad = int(arr.min()) if int(arr.min()) < lo else int(arr.max())
        raise ValueError(f"{where}: gemm_fn outputs must be in [{lo}, {hi}] (the layer's "
                         f"output type), not {bad}")
    return arr.astype(np.int64)


def _conv_out_shape(x: np.ndarray, layer: IntLayer) -> tuple[int, int]:
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    return (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1


def run_layer(net: IntNetwork, layer: IntLayer, inputs: list[np.ndarray], *,
              gemm_fn: Callable[[GemmJob], np.ndarray] | None = None
              ) -> tuple[np.ndarray, int]:
    """Run one layer on its integer inputs; returns ``(y, overflow_count)``.

    ``gemm_fn`` (optional) computes each GEMM's ``y[T, N]`` instead of numpy -- e.g.
    ``lambda job: sim.cycle.simulate(cfg, job).y`` runs the layer on the cycle model
    (overflows are still counted by the numpy reference). Its result must be ``[T, N]``
    integers in the layer's output range, else ``ValueError``."""
    xs = [np.asarray(v, dtype=np.int64) for v in inputs]
    x = xs[0]
    kind = layer.kind
    if kind in ("linear", "conv2d"):
        lo, hi = _bounds(layer)
        ys, ovf = _run_gemms(layer_gemms(net, layer, x), net, layer, lo, hi, gemm_fn)
        y = np.concatenate(ys, axis=1)
        if kind == "linear":
            y = y.reshape(x.shape[:-1] + (y.shape[-1],))
        if kind == "conv2d":
            Ho, Wo = _conv_out_shape(x, layer)
            y = y.reshape(x.shape[0], Ho, Wo, -1).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(y), ovf
    if kind == "maxpool2d":
        fill = layer.in_q[0].range[0]
        return _windows(x, layer.kernel, layer.stride, layer.padding, fill).max(axis=(4, 5)), 0
    if kind == "relu":
        return np.maximum(x, layer.in_q[0].zero_point), 0
    if kind == "flatten":
        return x.reshape(x.shape[0], -1), 0
    if kind == "lut":
        return apply_lut(layer.table, x, layer.in_q[0]), 0
    if kind == "transpose":
        return np.ascontiguousarray(np.swapaxes(x, -1, -2)), 0
    if kind == "reshape":
        return x.reshape((x.shape[0],) + layer.shape), 0
    if kind == "permute":
        return np.ascontiguousarray(np.transpose(x, layer.perm)), 0
    if kind == "select":
        return np.ascontiguousarray(np.take(x, layer.index, axis=layer.axis)), 0
    if kind == "embedding":
        if x.size and (x.min() < 0 or x.max() >= layer.table.shape[0]):
            bad = int(x.min()) if x.min() < 0 else int(x.max())
            raise ValueError(f"layer {layer.name!r}: token id {bad} is not in "
                             f"[0, {layer.table.shape[0]})")
        return layer.table[x], 0
    if kind == "position_embedding":
        n = x.shape[1]
        if n > layer.table.shape[0]:
            raise ValueError(f"layer {layer.name!r}: sequence length {n} exceeds the "
                             f"{layer.table.shape[0]} positions of its table")
        return np.ascontiguousarray(np.broadcast_to(
            layer.table[:n], (x.shape[0],) + layer.table[:n].shape)), 0
    if kind == "softmax":
        mask = broadcast_mask(xs[1], x.shape) if len(xs) > 1 else None
        return i_softmax(x - layer.in_q[0].zero_point, layer.in_q[0].scale,
                         layer.out_q.bits, mask=mask)[0], 0
    lo, hi = _bounds(layer)
    zy = layer.out_q.zero_point
    if kind in ("avgpool2d", "global_avgpool"):
        if kind == "global_avgpool":
            exact = (x - layer.in_q[0].zero_point).sum(axis=(2, 3))
            if layer.keepdim:
                exact = exact[:, :, None, None]
        else:
            win = _windows(x - layer.in_q[0].zero_point, layer.kernel, layer.stride,
                           layer.padding, 0)
            exact = win.sum(axis=(4, 5))
        acc = wrap(exact, net.acc_bits)
        return requantize(acc, layer.m[0], layer.s[0], zy, lo, hi), \
            int(np.count_nonzero(acc != exact))
    if kind == "mean":
        y = i_mean(x - layer.in_q[0].zero_point, layer.m[0], layer.s[0], layer.axis,
                   mask=xs[1] if len(xs) > 1 else None)
        return np.clip(y + zy, lo, hi), 0
    if kind == "gelu":
        g, _ = i_gelu(x - layer.in_q[0].zero_point, layer.in_q[0].scale)
        return requantize(g, layer.m[0], layer.s[0], zy, lo, hi), 0
    if kind == "layernorm":
        n, _ = i_layernorm(x - layer.in_q[0].zero_point)
        return requantize(n * layer.weight + layer.bias, layer.m[0], layer.s[0], zy, lo,
                          hi), 0
    if kind == "matmul":
        a, b = xs
        if a.shape[-1] != b.shape[-2] or a.shape[:-2] != b.shape[:-2]:
            raise ValueError(f"layer {layer.name!r}: matmul of shapes {a.shape} and "
                             f"{b.shape}")
        ys, ovf = _run_gemms(matmul_gemms(layer, a, b), net, layer, lo, hi, gemm_fn)
        return np.stack(ys).reshape(a.shape[:-1] + (b.shape[-1],)), ovf
    if kind == "add":
        a, b = xs
        if a.shape != b.shape:
            raise ValueError(f"layer {layer.name!r}: add of shapes {a.shape} and {b.shape}")
        exact = (layer.m[0] * (a - layer.in_q[0].zero_point)
                 + layer.m[1] * (b - layer.in_q[1].zero_point))
        acc = wrap(exact, net.acc_bits)
        s = np.int64(layer.s[0])
        y = np.right_shift(acc + rounding_term(s), s) + np.int64(zy)
        return np.clip(y, lo, hi), int(np.count_nonzero(acc != exact))
    raise ValueError(f"layer {layer.name!r}: unknown kind {kind!r}")  # pragma: no cover


def network_inputs(net: IntNetwork, x_int, mask=None) -> list[np.ndarray]:
    """The arrays of ``net.inputs``, in order, checked (``ValueError`` naming the input):
    ``x_int`` is one array (the first input; ``mask`` the mask input, if any), a
    tuple/list in input order or a dict keyed by input name. Activations must be integers
    in their type's range, token ids integers >= 0, masks 0/1; shapes ``[B, *shape]``
    with every ``-1`` (variable length) the same size."""
    specs = net.inputs
    if isinstance(x_int, dict):
        unknown = set(x_int) - {v.name for v in specs}
        if unknown:
            raise fail("executor.run", "x_int", f"keys among {[v.name for v in specs]}",
                       sorted(unknown))
        arrays = [x_int.get(v.name) for v in specs]
    elif isinstance(x_int, tuple | list):
        arrays = list(x_int) + [None] * (len(specs) - len(x_int))
        if len(x_int) > len(specs):
            raise fail("executor.run", "x_int", f"at most {len(specs)} arrays", len(x_int))
    else:
        arrays = [x_int] + [None] * (len(specs) - 1)
    if mask is not None:
        k = next((i for i, v in enumerate(specs) if v.kind == "mask"), None)
        if k is None:
            raise fail("executor.run", "mask", "None (the network has no mask input)", None,
                       shown="an array")
        arrays[k] = mask
    out, batch, seq = [], None, None
    for spec, a in zip(specs, arrays):
        single = not isinstance(x_int, dict | tuple | list)
        field_ = "x_int" if single and spec is specs[0] else \
            "mask" if spec.kind == "mask" and (single or mask is not None) else \
            f"x_int[{spec.name!r}]"
        want = ", ".join(map(str, ("B", *("S" if d == -1 else d for d in spec.shape))))
        if a is None:
            raise fail("executor.run", field_, f"a {spec.kind} array of shape [{want}] "
                       f"(input {spec.name!r})", None)
        a = np.asarray(a)
        if a.dtype == bool:
            a = a.astype(np.int64)
        if not np.issubdtype(a.dtype, np.integer):
            raise fail("executor.run", field_, "an integer array", None,
                       shown=f"dtype {a.dtype}")
        ok = a.ndim == len(spec.shape) + 1 and all(
            d == -1 or d == n for d, n in zip(spec.shape, a.shape[1:]))
        for d, n in zip(spec.shape, a.shape[1:]):
            if ok and d == -1:
                ok = seq in (None, n)
                seq = n
        if not ok or batch not in (None, a.shape[0]):
            same = " (the same B and S for every input)" if len(specs) > 1 else ""
            raise fail("executor.run", field_, f"of shape [{want}]{same}", None,
                       shown=f"shape {a.shape}")
        batch = a.shape[0]
        lo, hi = {"act": spec.q.range, "mask": (0, 1), "ids": (0, None)}[spec.kind]
        if a.size and (a.min() < lo or hi is not None and a.max() > hi):
            bad = int(a.min()) if a.min() < lo else int(a.max())
            why = {"act": "the network's input type", "mask": "0/1 (or bool) values",
                   "ids": "token ids"}[spec.kind]
            raise fail("executor.run", field_, f"in [{lo}, {'inf' if hi is None else hi}]",
                       bad, why)
        out.append(a.astype(np.int64))
    return out


def sample_inputs(net: IntNetwork, batch: int = 1, seq: int = 8, seed: int = 0
                  ) -> list[np.ndarray]:
    """In-range random inputs of ``net`` (``seq`` for the variable length): activations
    uniform over their codes, token ids below the smallest embedding table, masks of ones."""
    rng = np.random.default_rng(seed)
    vocab = min((L.table.shape[0] for L in net.layers if L.kind == "embedding"), default=1)
    out = []
    for spec in net.inputs:
        shape = (batch, *(seq if d == -1 else d for d in spec.shape))
        if spec.kind == "act":
            lo, hi = spec.q.range
            out.append(rng.integers(lo, hi + 1, size=shape))
        elif spec.kind == "ids":
            out.append(rng.integers(0, vocab, size=shape))
        else:
            out.append(np.ones(shape, dtype=np.int64))
    return out


def run(net: IntNetwork, x_int, *, trace: bool = False,
        gemm_fn: Callable[[GemmJob], np.ndarray] | None = None, mask=None,
        layer_gemm_fn: Callable[[IntLayer], Callable | None] | None = None):
    """Run ``net`` on integer input ``x_int`` (``[B, *input_shape]``; a tuple/list or a
    dict by name for several inputs, see :func:`network_inputs`); returns the integer
    output, or a :class:`RunResult` with every layer's output when ``trace``. ``gemm_fn``:
    see :func:`run_layer`. ``mask``: the attention mask (0 = masked) of a network that has
    a mask input. ``layer_gemm_fn(layer)`` (instead of ``gemm_fn``): each layer's own
    ``gemm_fn`` (e.g. the cycle model of that layer's bit-widths)."""
    if gemm_fn is not None and layer_gemm_fn is not None:
        raise ValueError("executor.run: give gemm_fn or layer_gemm_fn, not both")
    ins = network_inputs(net, x_int, mask)
    outs: list[np.ndarray] = []
    ovfs: list[int] = []
    for layer in net.layers:
        fn = gemm_fn if layer_gemm_fn is None else layer_gemm_fn(layer)
        y, o = run_layer(net, layer, [ins[-j - 1] if j < 0 else outs[j]
                                      for j in layer.inputs], gemm_fn=fn)
        outs.append(y)
        ovfs.append(o)
    if trace:
        return RunResult(output=outs[net.output], outputs=outs, overflows=ovfs)
    return outs[net.output]


def run_float(net: IntNetwork, x) -> np.ndarray:
    """Quantize float input with ``net.input_q``, run, and dequantize the output."""
    y = run(net, net.input_q.quantize(x))
    return net.output_q.dequantize(y)


def vector_workloads(net: IntNetwork, x_int, *, mask=None) -> list[VectorWorkload]:
    """The :class:`~sim.workload.VectorWorkload` of every vector-unit layer of ``net``
    (tables, adds, pooling, softmax, LayerNorm, ...; kinds in :data:`sim.vector.VECTOR_OPS`)
    on input ``x_int``: shapes of a traced run, each tensor's width (a mask: 1 bit)."""
    res = run(net, x_int, trace=True, mask=mask)
    xs = network_inputs(net, x_int, mask)
    out = []
    for layer, y in zip(net.layers, res.outputs):
        if layer.kind not in VECTOR_OPS:
            continue
        ins = [xs[-j - 1] if j < 0 else res.outputs[j] for j in layer.inputs]
        shapes = [np.shape(a) for a in ins]
        window = int(np.prod(layer.kernel))
        if layer.kind == "global_avgpool":
            window = int(np.prod(shapes[0][2:]))
        if layer.kind == "mean":
            window = int(shapes[0][layer.axis])
        params = 2 * layer.weight.size if layer.kind == "layernorm" else 0
        bits = tuple(1 if j < 0 and net.inputs[-j - 1].kind == "mask" else q.bits
                     for j, q in zip(layer.inputs, layer.in_q))
        out.append(VectorWorkload(layer.name, layer.kind, tuple(shapes), y.shape, window,
                                  params, in_bits=bits, out_bits=layer.out_q.bits))
    return out


def vector_costs(net: IntNetwork, x_int, *, mask=None) -> list[tuple[str, str, VectorCost]]:
    """``(layer name, kind, VectorCost)`` of every vector-unit layer of ``net`` on input
    ``x_int`` (:func:`vector_workloads`, counted by :func:`sim.vector.layer_vector_cost`)."""
    return [(v.name, v.kind, v.cost) for v in vector_workloads(net, x_int, mask=mask)]
