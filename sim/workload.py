"""GEMM workloads: what one network layer asks of the accelerator (numpy-free, torch-free).

A :class:`GemmWorkload` is ``repeat`` identical GEMM jobs ``Y[T x N] = X[T x K] @ W[K x N]``
run back to back. Convolutions are lowered by im2col (``T`` = output pixels times batch,
``K = kh * kw * in_ch / groups``, ``N = out_ch / groups``); a grouped / depthwise
convolution is ``repeat = groups`` per-group jobs; attention matmuls are ``repeat =
batch * heads`` jobs. The optional :class:`ConvGeometry` keeps the source layer's shape so
traffic models can count the input feature map (not its im2col expansion) in DRAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ConvGeometry", "GemmWorkload", "NetworkTotals", "OP_KINDS", "conv_out_size",
           "conv_workload", "linear_workload", "matmul_workload"]

#: op kinds a workload may carry (informational; the accelerator runs every one as GEMMs)
OP_KINDS = ("gemm", "conv2d", "depthwise", "linear", "matmul")


def _positive(where: str, name: str, value) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{where}: {name} must be a positive integer, not {value!r}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{where}: {name} must be a positive integer, not {value}")
    return value


def _nonneg(where: str, name: str, value) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < 0:
        raise ValueError(f"{where}: {name} must be a non-negative integer, not {value!r}")
    return int(value)


def _pair(value) -> tuple:
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair, not {value!r}")
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


@dataclass(frozen=True)
class GemmWorkload:
    """``repeat`` identical GEMM jobs of shape ``T x K x N``.

    ``input_elems`` is the number of distinct input activations one job reads from
    memory: the job's share of the input feature map for a convolution (im2col expands it
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
        where = f"workload {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"workload name must be a non-empty string, not {self.name!r}")
        for dim in ("T", "K", "N", "repeat"):
            object.__setattr__(self, dim, _positive(where, dim, getattr(self, dim)))
        if self.op not in OP_KINDS:
            raise ValueError(f"{where}: op must be one of {OP_KINDS}, not {self.op!r}")
        if self.input_elems == 0:
            object.__setattr__(self, "input_elems", self.T * self.K)
        else:
            object.__setattr__(self, "input_elems",
                               _positive(where, "input_elems", self.input_elems))

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
    where = f"layer {name!r}"
    in_h, in_w = _positive(where, "in_h", in_h), _positive(where, "in_w", in_w)
    in_ch, out_ch = _positive(where, "in_ch", in_ch), _positive(where, "out_ch", out_ch)
    groups, batch = _positive(where, "groups", groups), _positive(where, "batch", batch)
    kh, kw = (_positive(where, n, v) for n, v in zip(("kh", "kw"), _pair(kernel)))
    sh, sw = (_positive(where, n, v) for n, v in zip(("stride_h", "stride_w"), _pair(stride)))
    ph, pw = (_nonneg(where, n, v) for n, v in zip(("pad_h", "pad_w"), _pair(padding)))
    dh, dw = (_positive(where, n, v)
              for n, v in zip(("dilation_h", "dilation_w"), _pair(dilation)))
    if in_ch % groups or out_ch % groups:
        raise ValueError(f"{where}: groups={groups} must divide in_ch={in_ch} and "
                         f"out_ch={out_ch}")
    out_h = conv_out_size(in_h, kh, sh, ph, dh)
    out_w = conv_out_size(in_w, kw, sw, pw, dw)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"{where}: kernel {kh}x{kw} (dilation {dh}x{dw}) does not fit the "
                         f"padded {in_h}x{in_w} input: output would be {out_h}x{out_w}")
    geom = ConvGeometry(in_h, in_w, in_ch, out_ch, kh, kw, (sh, sw), (ph, pw), (dh, dw),
                        groups, out_h, out_w)
    op = "depthwise" if groups > 1 and groups == in_ch == out_ch else "conv2d"
    return GemmWorkload(name=name, T=batch * out_h * out_w, K=kh * kw * in_ch // groups,
                        N=out_ch // groups, repeat=groups, op=op, geometry=geom,
                        input_elems=batch * in_h * in_w * (in_ch // groups))


def linear_workload(name: str, tokens: int, in_features: int, out_features: int
                    ) -> GemmWorkload:
    """A fully connected layer on ``tokens`` rows: ``T = tokens, K = in, N = out``."""
    return GemmWorkload(name=name, T=tokens, K=in_features, N=out_features, op="linear")


def matmul_workload(name: str, T: int, K: int, N: int, repeat: int = 1) -> GemmWorkload:
    """An activation x activation matmul (e.g. attention's ``Q K^T`` and ``P V``), ``repeat``
    times (batch x heads). The right operand plays the weight role on the array."""
    return GemmWorkload(name=name, T=T, K=K, N=N, repeat=repeat, op="matmul")


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
