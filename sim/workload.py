"""GEMM workloads: what one network layer asks of the accelerator (torch-free).

A :class:`GemmWorkload` is ``repeat`` identical GEMM jobs ``Y[T x N] = X[T x K] @ W[K x N]``
run back to back. Convolutions are lowered by im2col (``T`` = output pixels times batch,
``K = kh * kw * in_ch / groups``, ``N = out_ch / groups``); a grouped / depthwise
convolution is ``repeat = groups`` per-group jobs; attention matmuls are ``repeat =
batch * heads`` jobs. The optional :class:`ConvGeometry` keeps the source layer's shape so
traffic models can count the input feature map (not its im2col expansion) in DRAM.

A :class:`VectorWorkload` is one non-GEMM op of an integer network (LayerNorm, softmax,
GELU/SiLU table, residual add, pooling) on the vector unit: its kind (a key of
:data:`sim.vector.VECTOR_OPS`), input and output shapes and bit-widths.
:func:`sim.executor.vector_workloads` reads them off a traced run of an integer network;
``qaccel.networks.bert`` describes BERT-base's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

from .validate import check_choice, check_int, fail
from .vector import VECTOR_OPS, VectorCost, layer_vector_cost

__all__ = ["ConvGeometry", "GemmWorkload", "NetworkTotals", "OP_KINDS", "conv_out_size",
           "conv_workload", "linear_workload", "matmul_workload", "VectorWorkload"]

#: op kinds a workload may carry (informational; the accelerator runs every one as GEMMs)
OP_KINDS = ("gemm", "conv2d", "depthwise", "linear", "matmul")


def _pair(owner: str, name: str, value) -> tuple:
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise fail(owner, name, "an int or a pair of ints", value)
        return tuple(value)
    return (value, value)


def conv_out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """PyTorch's ``floor((size + 2p - d*(k-1) - 1) / s) + 1``."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class ConvGeometry:
    """A 2-D convolution's shape (per image). ``out_h, out_w`` follow PyTorch's formula."""

    in_h: int
    in_w: int
    in_ch: int
    out_ch: int
    kh: int
    kw: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    out_h: int = 0
    out_w: int = 0

    def input_elems(self) -> int:
        """Input feature-map elements (one image, all groups, without padding)."""
        return self.in_h * self.in_w * self.in_ch

    def rows_read(self, first: int, stop: int) -> int:
        """Distinct input rows (padding excluded) read by output rows ``first .. stop-1``
        of one image: a strided or dilated kernel skips rows, a slab's halo is counted."""
        return _taps_read(self.in_h, self.kh, self.stride[0], self.padding[0],
                          self.dilation[0], first, stop)

    @property
    def cols_read(self) -> int:
        """Distinct input columns (padding excluded) read by a whole output row."""
        return _taps_read(self.in_w, self.kw, self.stride[1], self.padding[1],
                          self.dilation[1], 0, self.out_w)

    def slab_elems(self, first: int, stop: int) -> int:
        """Input elements of ONE group (``in_ch / groups`` channels) read by the output
        rows ``first .. stop-1`` counted over the batch (row ``g`` is image
        ``g // out_h``, row ``g % out_h``): the DRAM footprint of an input slab."""
        rows = 0
        g = first
        while g < stop:
            img, r = divmod(g, self.out_h)
            end = min(stop, (img + 1) * self.out_h)
            rows += self.rows_read(r, r + end - g)
            g = end
        return rows * self.cols_read * (self.in_ch // self.groups)


@lru_cache(maxsize=65536)
def _taps_read(size: int, k: int, s: int, p: int, d: int, first: int, stop: int) -> int:
    """How many of the ``size`` input positions the outputs ``first .. stop-1`` read
    (``o*s - p + i*d`` for taps ``i < k``, inside ``[0, size)``)."""
    if d * (k - 1) < s:            # taps of different outputs never coincide
        return sum(1 for o in range(first, stop) for i in range(k)
                   if 0 <= o * s - p + i * d < size)
    return len({o * s - p + i * d for o in range(first, stop) for i in range(k)}
               & set(range(size)))


@dataclass(frozen=True)
class GemmWorkload:
    """``repeat`` identical GEMM jobs of shape ``T x K x N``.

    ``input_elems`` is the number of distinct input activations one job reads from
    memory: for a convolution (given ``geometry``, and ``input_elems`` left 0) the pixels
    of its group's channels the kernel actually samples, over the batch (a strided 1x1
    convolution reads a quarter of its map; padding is never fetched; im2col expands them
    on chip), ``T * K`` otherwise.
    """

    name: str
    T: int
    K: int
    N: int
    repeat: int = 1
    op: str = "gemm"
    geometry: ConvGeometry | None = field(default=None, compare=False)
    input_elems: int = 0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise fail("GemmWorkload", "name", "a non-empty string", self.name)
        owner = f"GemmWorkload({self.name!r})"
        for dim in ("T", "K", "N", "repeat"):
            object.__setattr__(self, dim, check_int(owner, dim, getattr(self, dim), 1))
        check_choice(owner, "op", self.op, OP_KINDS)
        if self.input_elems == 0:
            g = self.geometry
            whole = g is None or not (g.out_h and g.out_w)
            object.__setattr__(self, "input_elems", self.T * self.K if whole else
                               g.slab_elems(0, self.T // g.out_w))
        else:
            object.__setattr__(self, "input_elems",
                               check_int(owner, "input_elems", self.input_elems, 1))

    @property
    def macs(self) -> int:
        """Multiply-accumulates of all ``repeat`` jobs."""
        return self.repeat * self.T * self.K * self.N

    @property
    def weight_elems(self) -> int:
        """Weights of all jobs (``repeat * K * N``)."""
        return self.repeat * self.K * self.N

    @property
    def output_elems(self) -> int:
        return self.repeat * self.T * self.N

    def to_dict(self) -> dict:
        d = {"name": self.name, "op": self.op, "T": self.T, "K": self.K, "N": self.N,
             "repeat": self.repeat, "macs": self.macs}
        if self.geometry is not None:
            g = self.geometry
            d["geometry"] = {"in_h": g.in_h, "in_w": g.in_w, "in_ch": g.in_ch,
                             "out_ch": g.out_ch, "kh": g.kh, "kw": g.kw,
                             "stride": list(g.stride), "padding": list(g.padding),
                             "dilation": list(g.dilation), "groups": g.groups,
                             "out_h": g.out_h, "out_w": g.out_w}
        return d


def conv_workload(name: str, in_h: int, in_w: int, in_ch: int, out_ch: int, kernel,
                  stride=1, padding=0, dilation=1, groups: int = 1, batch: int = 1
                  ) -> GemmWorkload:
    """im2col lowering of a 2-D convolution (PyTorch output size, zero-point padding).

    ``T = batch * out_h * out_w``, ``K = kh * kw * in_ch / groups``, ``N = out_ch / groups``,
    ``repeat = groups`` (``op = "depthwise"`` when ``groups == in_ch == out_ch > 1``).
    """
    owner = f"conv2d({name!r})"
    in_h, in_w = check_int(owner, "in_h", in_h, 1), check_int(owner, "in_w", in_w, 1)
    in_ch, out_ch = check_int(owner, "in_ch", in_ch, 1), check_int(owner, "out_ch", out_ch, 1)
    groups, batch = check_int(owner, "groups", groups, 1), check_int(owner, "batch", batch, 1)
    kh, kw = (check_int(owner, n, v, 1)
              for n, v in zip(("kh", "kw"), _pair(owner, "kernel", kernel)))
    sh, sw = (check_int(owner, n, v, 1)
              for n, v in zip(("stride_h", "stride_w"), _pair(owner, "stride", stride)))
    ph, pw = (check_int(owner, n, v, 0)
              for n, v in zip(("pad_h", "pad_w"), _pair(owner, "padding", padding)))
    dh, dw = (check_int(owner, n, v, 1)
              for n, v in zip(("dilation_h", "dilation_w"), _pair(owner, "dilation", dilation)))
    if in_ch % groups or out_ch % groups:
        raise fail(owner, "groups", f"a divisor of in_ch = {in_ch} and out_ch = {out_ch}",
                   groups)
    out_h = conv_out_size(in_h, kh, sh, ph, dh)
    out_w = conv_out_size(in_w, kw, sw, pw, dw)
    if out_h < 1 or out_w < 1:
        raise fail(owner, "kernel", f"at most the padded {in_h + 2 * ph}x{in_w + 2 * pw} "
                   "input", (kh, kw), f"dilation {dh}x{dw}: the output would be "
                   f"{out_h}x{out_w}")
    geom = ConvGeometry(in_h, in_w, in_ch, out_ch, kh, kw, (sh, sw), (ph, pw), (dh, dw),
                        groups, out_h, out_w)
    op = "depthwise" if groups > 1 and groups == in_ch == out_ch else "conv2d"
    return GemmWorkload(name=name, T=batch * out_h * out_w, K=kh * kw * in_ch // groups,
                        N=out_ch // groups, repeat=groups, op=op, geometry=geom)


def linear_workload(name: str, tokens: int, in_features: int, out_features: int
                    ) -> GemmWorkload:
    """A fully connected layer on ``tokens`` rows: ``T = tokens, K = in, N = out``."""
    return GemmWorkload(name=name, T=tokens, K=in_features, N=out_features, op="linear")


def matmul_workload(name: str, T: int, K: int, N: int, repeat: int = 1) -> GemmWorkload:
    """An activation x activation matmul (e.g. attention's ``Q K^T`` and ``P V``), ``repeat``
    times (batch x heads). The right operand plays the weight role on the array."""
    return GemmWorkload(name=name, T=T, K=K, N=N, repeat=repeat, op="matmul")


def _shape(owner: str, name: str, value) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or not value:
        raise fail(owner, name, "a non-empty tuple of positive ints", value)
    return tuple(check_int(owner, name, v, 1) for v in value)


@dataclass(frozen=True)
class VectorWorkload:
    """One vector-unit op: ``kind`` (a key of :data:`sim.vector.VECTOR_OPS`) on inputs of
    ``in_shapes`` giving ``out_shape`` (batch included); ``window`` input elements per
    pooled output, ``params`` parameter elements read (LayerNorm's gamma and beta).

    ``in_bits`` (one per input) and ``out_bits`` are the tensors' widths; empty / 0: the
    array's ``a_bits`` (a network described by shapes only, e.g. BERT-base). Its counts
    are :func:`sim.vector.layer_vector_cost`'s, which the executor's
    :func:`~sim.executor.vector_costs` reports for a run.
    """

    name: str
    kind: str
    in_shapes: tuple[tuple[int, ...], ...]
    out_shape: tuple[int, ...]
    window: int = 1
    params: int = 0
    in_bits: tuple[int, ...] = ()
    out_bits: int = 0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise fail("VectorWorkload", "name", "a non-empty string", self.name)
        owner = f"VectorWorkload({self.name!r})"
        check_choice(owner, "kind", self.kind, tuple(VECTOR_OPS))
        if not isinstance(self.in_shapes, tuple | list) or not self.in_shapes:
            raise fail(owner, "in_shapes", "a non-empty tuple of shapes", self.in_shapes)
        object.__setattr__(self, "in_shapes",
                           tuple(_shape(owner, "in_shapes", s) for s in self.in_shapes))
        object.__setattr__(self, "out_shape", _shape(owner, "out_shape", self.out_shape))
        object.__setattr__(self, "window", check_int(owner, "window", self.window, 1))
        object.__setattr__(self, "params", check_int(owner, "params", self.params, 0))
        bits = tuple(check_int(owner, "in_bits", b, 1, 64) for b in self.in_bits)
        if bits and len(bits) != len(self.in_shapes):
            raise fail(owner, "in_bits", f"one width per input ({len(self.in_shapes)}) or "
                       "empty", self.in_bits)
        object.__setattr__(self, "in_bits", bits)
        object.__setattr__(self, "out_bits", check_int(owner, "out_bits", self.out_bits, 0, 64))

    @property
    def cost(self) -> VectorCost:
        """Operations and elements read / written (:func:`sim.vector.layer_vector_cost`)."""
        return layer_vector_cost(self.kind, list(self.in_shapes), self.out_shape,
                                 self.window, self.params)

    @property
    def elements(self) -> int:
        """Output elements."""
        return math.prod(self.out_shape)

    @property
    def rows(self) -> int:
        """Rows of the last axis (softmax / LayerNorm normalise each row)."""
        return self.elements // self.out_shape[-1]

    def counts(self) -> dict[str, int]:
        """How often each :data:`~sim.vector.VECTOR_OPS` term occurs: ``per_element`` and
        ``per_output`` per output element, ``per_row`` per row, ``per_window`` per input
        element of every pooling window."""
        n = self.elements
        return {"per_element": n, "per_output": n, "per_row": self.rows,
                "per_window": self.window * n}

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind,
                "in_shapes": [list(s) for s in self.in_shapes],
                "out_shape": list(self.out_shape), "window": self.window,
                "params": self.params, "in_bits": list(self.in_bits),
                "out_bits": self.out_bits}


class NetworkTotals:
    """Totals over ``self.layers`` (records with ``cycles`` and ``macs``), for a network whose
    layers run one after another on an array of ``pe_count`` PEs."""

    layers: tuple
    pe_count: int

    @property
    def cycles(self) -> int:
        return sum(lp.cycles for lp in self.layers)

    @property
    def macs(self) -> int:
        return sum(lp.macs for lp in self.layers)

    @property
    def utilization(self) -> float:
        """Fraction (not percent) of PE-cycles doing useful MACs over the network."""
        return self.macs / (self.pe_count * self.cycles)
