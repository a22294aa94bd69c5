"""The integer-network format: what ``quant.export`` writes and ``sim.executor`` runs.

An :class:`IntNetwork` is an ordered list of :class:`IntLayer` s. Layer ``i`` reads the
outputs of earlier layers (``inputs``; ``-1`` is the network input) and produces tensor
``i``. Every tensor is an integer tensor with its quantization parameters
(:class:`QParams`: ``real = scale * (int - zero_point)``). The arithmetic is the SPEC's:

- ``linear`` / ``conv2d`` (stride, padding filled with the input zero-point, groups, so
  depthwise too): ``W_int`` signed ``w_bits``, ``bias_int`` with the zero-point term folded
  in (``round(b / (s_w s_x)) - z_x * sum_k W_int[n, k]``), accumulator wraps to
  ``acc_bits``, requantized with ``(M, S)`` per tensor or per output channel, optional
  fused ReLU (``lo = z_y``).
- ``maxpool2d``, ``relu``, ``flatten``: exact on the integer grid (output params = input).
- ``avgpool2d`` / ``global_avgpool``: ``acc = sum(x - z_x)`` over the window, requantized
  with one ``(M, S)`` approximating ``s_x / (n s_y)``.
- ``add``: ``acc = M[0] (x0 - z0) + M[1] (x1 - z1)`` with a shared shift ``S``,
  ``y = clamp(z_y + ((acc + R) >> S), lo, hi)``, optional fused ReLU.
- ``lut`` (vector unit, :mod:`sim.vector`): ``y = table[x - x_min]``, one output code per
  input code (``2^bits`` entries); ``func`` names the elementwise function it holds.
- ``layernorm`` (vector unit): ``n = i_layernorm(x - z_x)`` over the last axis, then
  ``acc = n * weight + bias`` (``weight`` the integer gamma ``[C]``, ``bias`` beta on the
  grid ``s_gamma 2^-LN_FRAC_BITS``), requantized with ``(M, S)``.
- ``softmax`` (vector unit): ``i_softmax(x - z_x, s_x)`` over the last axis; the output is
  unsigned with scale ``2^-bits`` and zero-point 0. An optional second input ``-2`` is the
  network's attention mask (:data:`MASK_Q` codes 0/1, broadcast to the scores): masked
  positions get probability 0.
- ``matmul``: activation x activation, ``acc = (x0 - z0) @ (x1 - z1)`` over the last axis of
  ``x0`` and the second-to-last of ``x1`` (batched), wraps to ``acc_bits``, requantized with
  one ``(M, S)`` (a constant factor such as ``1 / sqrt(d)`` folded into it).
- ``gelu`` (vector unit): ``q = i_gelu(x - z_x, s_x)`` (I-BERT integer erf polynomial),
  requantized with one ``(M, S)`` for ``scale(i_gelu) / s_y`` (inputs too wide for a table).
- ``transpose``: swaps the last two axes; ``reshape``: to ``(batch, *shape)`` (one entry
  of ``shape`` may be ``-1``: the sequence length, taken from the input);
  ``permute``: axes in the order ``perm`` (``perm[0] = 0``, the batch stays first);
  ``select``: index ``index`` of axis ``axis`` (e.g. the CLS token); all exact, output
  params = input (attention heads, poolers).
- ``embedding`` (vector unit, a table read): ``y = table[ids]`` with ``table`` ``[V, D]``
  already on the output grid ``out_q`` (the float rows quantized once at export); the input
  is a token-id network input (:data:`IDS_Q` marks it; ids must be in ``[0, V)``).
- ``position_embedding``: ``y[b, p] = table[p]`` for ``p < S``, with ``S`` the length of
  axis 1 of the input (any tensor with a sequence axis); the ``[L, D]`` table is sliced
  per length (position ids ``arange(S)``, and constant token-type ids, folded in).
- ``mean`` (vector unit): mean over ``axis`` of ``x - z_x``; with a mask input (``[B, S]``
  0/1, aligned with axes 0 and ``axis``) only the kept positions count:
  ``acc = sum mask (x - z_x)``, ``n = max(sum mask, 1)``,
  ``y = clamp(z_y + floor((acc M + n R) / (n 2^S)), lo, hi)`` -- the requantizer's
  add-``R``-and-shift, divided by ``n`` (``n = 1`` is the requantizer), ``(M, S)`` for
  ``s_x / s_y``.

Network inputs (:class:`NetInput`) have a kind: ``act`` (quantized activations, ``q``),
``ids`` (token ids, int64) or ``mask`` (0/1, :data:`MASK_Q`); ``-1 - k`` is input ``k``
as a layer input. Their per-sample ``shape`` may hold ``-1`` (the variable sequence
length, one size per run). A softmax's 2-D mask ``[B, S]`` applies to the last axis.

Saved as one ``.npz`` (no pickle) holding the integer arrays and the JSON manifest
(``manifest.json`` as UTF-8 bytes) with :data:`FORMAT_VERSION`. numpy only.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from .arith import int_range
from .validate import (
    PRODUCT_LIMIT,
    check_bool,
    check_choice,
    check_int,
    check_number,
    fail,
)

__all__ = ["FORMAT_VERSION", "READ_VERSIONS", "KINDS", "INPUT_KINDS", "MASK_Q", "IDS_Q",
           "QParams", "NetInput", "IntLayer", "IntNetwork"]

FORMAT_VERSION = 3
#: versions :meth:`IntNetwork.load` reads (2 added the ``lut`` kind, ``table`` and ``func``;
#: 3 the ``inputs`` list (token ids, masks, variable lengths), ``embedding``,
#: ``position_embedding``, ``mean``, ``select`` and the ``axis`` / ``index`` fields)
READ_VERSIONS = (1, 2, 3)
KINDS = ("linear", "conv2d", "maxpool2d", "avgpool2d", "global_avgpool", "add", "relu",
         "flatten", "lut", "layernorm", "softmax", "matmul", "transpose", "reshape",
         "permute", "gelu", "embedding", "position_embedding", "mean", "select")
INPUT_KINDS = ("act", "ids", "mask")
_GEMM_KINDS = ("linear", "conv2d")
_REQUANT_KINDS = ("linear", "conv2d", "avgpool2d", "global_avgpool", "add", "matmul",
                  "gelu", "mean")
#: the quantization of an attention-mask input (input index ``-2``): codes 0 (masked) / 1
_SAME_Q_KINDS = ("maxpool2d", "relu", "flatten", "transpose", "reshape", "permute",
                 "select")
_ARRAYS = ("weight", "bias", "m", "s", "table")
_MANIFEST_KEY = "manifest.json"
#: what reading a damaged archive or member raises (zip structure, CRC, deflate stream,
#: .npy header, truncation, pickled objects refused, an unknown compression method or an
#: encryption flag)
_READ_ERRORS = (OSError, EOFError, ValueError, NotImplementedError, RuntimeError,
                zipfile.BadZipFile, zlib.error)


def _pair(owner: str, name: str, value, lo: int) -> tuple[int, int]:
    """``value`` (an int or a pair of ints, each >= ``lo``) as an ``(h, w)`` pair."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise fail(owner, name, f"an int or a pair of ints >= {lo}", value) from None
    return check_int(owner, name, a, lo), check_int(owner, name, b, lo)


@dataclass(frozen=True)
class QParams:
    """Quantization parameters of one integer tensor: ``real = scale * (int - zero_point)``."""

    scale: float
    zero_point: int
    bits: int
    signed: bool

    def __post_init__(self):
        bits = check_int("QParams", "bits", self.bits, 2, 16)
        signed = check_bool("QParams", "signed", self.signed)
        scale = check_number("QParams", "scale", self.scale, positive=True)
        if signed:
            zero_point = check_int("QParams", "zero_point", self.zero_point)
            if zero_point != 0:
                raise fail("QParams", "zero_point", "0", zero_point,
                           "signed tensors are symmetric")
        else:
            zero_point = check_int("QParams", "zero_point", self.zero_point,
                                   *int_range(bits, signed))
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zero_point)
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "signed", signed)

    @property
    def range(self) -> tuple[int, int]:
        return int_range(self.bits, self.signed)

    def quantize(self, x) -> np.ndarray:
        """``clamp(rint(x / scale) + z)`` in float32 (as the torch fake-quantizers);
        ``ValueError`` for NaN, which has no integer code."""
        x = np.asarray(x, dtype=np.float32)
        if np.isnan(x).any():
            raise ValueError(f"cannot quantize NaN to an integer ({int(np.isnan(x).sum())} "
                             f"NaN value(s) in an array of shape {x.shape})")
        q = np.rint(x / np.float32(self.scale)) + np.float32(self.zero_point)
        lo, hi = self.range
        return np.clip(q, lo, hi).astype(np.int64)

    def dequantize(self, q) -> np.ndarray:
        return self.scale * (np.asarray(q, dtype=np.float64) - self.zero_point)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QParams:
        if not isinstance(d, dict):
            raise ValueError(f"QParams must be an object, not {d!r}")
        missing = {"scale", "zero_point", "bits", "signed"} - set(d)
        if missing:
            raise ValueError(f"QParams is missing {sorted(missing)}")
        return cls(d["scale"], d["zero_point"], d["bits"], d["signed"])


#: the quantization of an attention-mask input: codes 0 (masked) / 1
MASK_Q = QParams(1.0, 0, 2, False)
#: marks a token-id input (``in_q`` of an ``embedding``); the ids are checked against the
#: table's rows, not against this range
IDS_Q = QParams(1.0, 0, 16, False)


@dataclass(frozen=True)
class NetInput:
    """One network input: ``name``, ``kind`` (:data:`INPUT_KINDS`), per-sample ``shape``
    (``-1``: the variable sequence length) and quantization ``q`` (:data:`MASK_Q` for masks,
    :data:`IDS_Q` for token ids)."""

    name: str
    kind: str
    shape: tuple[int, ...]
    q: QParams

    def __post_init__(self):
        owner = f"NetInput({self.name!r})"
        check_choice(owner, "kind", self.kind, INPUT_KINDS)
        try:
            shape = tuple(self.shape)
        except TypeError:
            raise fail(owner, "shape", "a sequence of sizes >= 1 or -1", self.shape) from None
        for d in shape:
            if check_int(owner, "shape", d, -1) == 0:
                raise fail(owner, "shape", "sizes >= 1 or -1 (variable)", d)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "name", str(self.name))
        want = {"mask": MASK_Q, "ids": IDS_Q}.get(self.kind)
        if not isinstance(self.q, QParams) or want is not None and self.q != want:
            raise fail(owner, "q", "a QParams" if want is None else str(want), self.q)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape),
                "q": self.q.to_dict()}

    @classmethod
    def from_dict(cls, d) -> NetInput:
        if not isinstance(d, dict) or {"name", "kind", "shape", "q"} - set(d):
            raise ValueError(f"an input must be an object with name, kind, shape and q, "
                             f"not {d!r}")
        return cls(d["name"], d["kind"], tuple(d["shape"]), QParams.from_dict(d["q"]))


def _int_array(owner: str, name: str, arr) -> np.ndarray:
    a = np.asarray(arr)
    if not np.issubdtype(a.dtype, np.integer):
        raise fail(owner, name, "an integer array", None, shown=f"dtype {a.dtype}")
    a = a.astype(np.int64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class IntLayer:
    """One integer layer. See the module docstring for each ``kind``'s arithmetic.

    ``weight`` is ``[N, K]`` (linear) or ``[C_out, C_in / groups, kh, kw]`` (conv2d);
    ``bias`` ``[N]``; ``m``/``s`` ``[N]`` when ``per_channel`` else ``[1]`` (``add``: ``m``
    is ``[2]``, ``s`` ``[1]``). ``kernel``/``stride``/``padding`` are (h, w) pairs.
    """

    name: str
    kind: str
    inputs: tuple[int, ...]
    in_q: tuple[QParams, ...]
    out_q: QParams
    relu: bool = False
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    m: np.ndarray | None = None
    s: np.ndarray | None = None
    w_bits: int = 8
    per_channel: bool = False
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    keepdim: bool = True
    table: np.ndarray | None = None
    func: str = ""
    shape: tuple[int, ...] = ()
    perm: tuple[int, ...] = ()
    axis: int = 1
    index: int = 0

    def __post_init__(self):
        owner = f"IntLayer({self.name!r})"
        check_choice(owner, "kind", self.kind, KINDS)
        n_in = 2 if self.kind in ("add", "matmul") else 1
        if self.kind in ("softmax", "mean") and len(tuple(self.inputs)) == 2:
            n_in = 2                                   # values and the (attention) mask
        inputs = tuple(check_int(owner, "inputs", i) for i in self.inputs)
        in_q = tuple(self.in_q)
        if len(inputs) != n_in:
            raise fail(owner, "inputs", f"{n_in} layer index(es) for kind {self.kind!r}",
                       inputs)
        if len(in_q) != n_in or not all(isinstance(q, QParams) for q in in_q):
            raise fail(owner, "in_q", f"{n_in} QParams for kind {self.kind!r}", in_q)
        if not isinstance(self.out_q, QParams):
            raise fail(owner, "out_q", "a QParams", self.out_q)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "in_q", in_q)
        for name, lo in (("kernel", 1), ("stride", 1), ("padding", 0)):
            object.__setattr__(self, name, _pair(owner, name, getattr(self, name), lo))
        for name in ("relu", "per_channel", "keepdim"):
            object.__setattr__(self, name, check_bool(owner, name, getattr(self, name)))
        object.__setattr__(self, "w_bits", check_int(owner, "w_bits", self.w_bits, 2, 16))
        object.__setattr__(self, "groups", check_int(owner, "groups", self.groups, 1))
        if self.kind in _SAME_Q_KINDS and self.out_q != in_q[0]:
            raise fail(owner, "out_q", f"in_q[0] (a {self.kind} keeps the input's "
                       "quantization)", self.out_q)
        for name in _ARRAYS:
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, _int_array(owner, name, v))
        object.__setattr__(self, "func", str(self.func))
        shape = tuple(check_int(owner, "shape", v, -1) for v in self.shape)
        if 0 in shape or shape.count(-1) > 1:
            raise fail(owner, "shape", "sizes >= 1 and at most one -1 (the sequence length)",
                       shape)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "axis", check_int(owner, "axis", self.axis, 1))
        object.__setattr__(self, "index", check_int(owner, "index", self.index, 0))
        perm = tuple(check_int(owner, "perm", v, 0) for v in self.perm)
        if self.kind == "permute" and (not perm or perm[0] != 0
                                       or sorted(perm) != list(range(len(perm)))):
            raise fail(owner, "perm", "a permutation of 0..n-1 starting with 0", perm)
        if self.kind == "reshape" and not self.shape:
            raise fail(owner, "shape", "the per-sample output shape", self.shape)
        object.__setattr__(self, "perm", perm)
        if self.kind in _GEMM_KINDS:
            self._check_gemm(owner)
            return
        if self.kind in _REQUANT_KINDS:
            shapes = {"m": (2 if self.kind == "add" else 1,), "s": (1,)}
            absent = ("weight", "bias", "table")
        elif self.kind == "layernorm":
            if self.weight is None or self.weight.ndim != 1:
                raise fail(owner, "weight", "the integer gamma [C] for kind 'layernorm'",
                           None if self.weight is None else self.weight.shape)
            shapes = {"bias": self.weight.shape, "m": (1,), "s": (1,)}
            absent = ("table",)
        elif self.kind == "softmax":
            q = self.out_q
            if q.signed or q.zero_point != 0 or q.scale != 2.0 ** -q.bits:
                raise fail(owner, "out_q", f"unsigned, zero-point 0, scale 2^-{q.bits}",
                           q, "softmax outputs")
            shapes, absent = {}, _ARRAYS
        elif self.kind in ("embedding", "position_embedding"):
            if self.table is None or self.table.ndim != 2 or not self.table.size:
                raise fail(owner, "table", f"a non-empty [rows, D] table for kind "
                           f"{self.kind!r}", None if self.table is None else self.table.shape)
            if self.kind == "embedding" and in_q[0] != IDS_Q:
                raise fail(owner, "in_q", f"(IDS_Q,) (token ids) for kind {self.kind!r}",
                           in_q)
            lo, hi = self.out_q.range
            t = self.table
            if t.min() < lo or t.max() > hi:
                raise fail(owner, "table", f"in [{lo}, {hi}]", int(t.min() if t.min() < lo
                                                                   else t.max()),
                           "the output type")
            shapes, absent = {}, ("weight", "bias", "m", "s")
        elif self.kind == "lut":
            shapes = {"table": (1 << in_q[0].bits,)}
            absent = ("weight", "bias", "m", "s")
            lo, hi = self.out_q.range
            t = self.table
            if t is not None and t.size and (t.min() < lo or t.max() > hi):
                raise fail(owner, "table", f"in [{lo}, {hi}]", int(t.min() if t.min() < lo
                                                                   else t.max()),
                           "the output type")
        else:
            shapes, absent = {}, _ARRAYS
        for name, shape in shapes.items():
            arr = getattr(self, name)
            if arr is None or arr.shape != shape:
                raise fail(owner, name, f"of shape {shape} for kind {self.kind!r}",
                           None if arr is None else arr.shape)
        for name in absent:
            if getattr(self, name) is not None:
                raise fail(owner, name, f"None for kind {self.kind!r}", None,
                           shown=f"an array of shape {getattr(self, name).shape}")

    def _check_gemm(self, owner: str) -> None:
        for name in ("weight", "bias", "m", "s"):
            if getattr(self, name) is None:
                raise fail(owner, name, f"an integer array for kind {self.kind!r}", None)
        if self.table is not None:
            raise fail(owner, "table", f"None for kind {self.kind!r}", None,
                       shown=f"an array of shape {self.table.shape}")
        ndim = 2 if self.kind == "linear" else 4
        if self.weight.ndim != ndim:
            raise fail(owner, "weight", f"{ndim}-D for kind {self.kind!r}", None,
                       shown=f"shape {self.weight.shape}")
        n = self.weight.shape[0]
        if self.kind == "conv2d":
            if n % self.groups:
                raise fail(owner, "groups", f"a divisor of C_out = {n}", self.groups)
            object.__setattr__(self, "kernel", tuple(self.weight.shape[2:]))
        elif self.groups != 1:
            raise fail(owner, "groups", "1 for a linear layer", self.groups)
        wlo, whi = int_range(self.w_bits, True)
        if self.weight.size and (self.weight.min() < wlo or self.weight.max() > whi):
            bad = int(self.weight.min() if self.weight.min() < wlo else self.weight.max())
            raise fail(owner, "weight", f"in [{wlo}, {whi}]", bad,
                       f"signed {self.w_bits}-bit weights")
        if self.bias.shape != (n,):
            raise fail(owner, "bias", f"of shape {(n,)}", self.bias.shape)
        n_m = n if self.per_channel else 1
        for name in ("m", "s"):
            if getattr(self, name).shape != (n_m,):
                raise fail(owner, name, f"of shape {(n_m,)}", getattr(self, name).shape,
                           "per-channel" if self.per_channel else "per-tensor")

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    # ---- (de)serialisation -------------------------------------------------------------
    def manifest(self) -> dict:
        d = {"name": self.name, "kind": self.kind, "inputs": list(self.inputs),
             "in_q": [q.to_dict() for q in self.in_q], "out_q": self.out_q.to_dict(),
             "relu": self.relu, "w_bits": int(self.w_bits), "per_channel": self.per_channel,
             "kernel": list(self.kernel), "stride": list(self.stride),
             "padding": list(self.padding), "groups": int(self.groups),
             "keepdim": self.keepdim, "func": self.func, "shape": list(self.shape),
             "perm": list(self.perm), "axis": self.axis, "index": self.index}
        d["arrays"] = [n for n in _ARRAYS if getattr(self, n) is not None]
        return d


@dataclass(frozen=True, eq=False)
class IntNetwork:
    """An ordered integer network. ``output`` indexes the layer producing the output
    (``-1`` in the manifest sense is not allowed here: default the last layer).

    ``inputs`` lists the network inputs (:class:`NetInput`; layer input ``-1 - k`` is
    ``inputs[k]``). Without it, the network has one activation input (``input_q``,
    ``input_shape``) and, with ``mask_shape``, a mask input (``-2``); with it,
    ``input_q``, ``input_shape`` and ``mask_shape`` are derived (its first input, its first
    mask) and must not be given."""

    layers: tuple[IntLayer, ...]
    input_q: QParams | None = None
    input_shape: tuple[int, ...] | None = None
    acc_bits: int = 32
    mult_bits: int = 16
    output: int | None = None
    meta: dict = field(default_factory=dict)
    mask_shape: tuple[int, ...] | None = None
    inputs: tuple[NetInput, ...] | None = None

    def _set_inputs(self) -> None:
        if self.inputs is not None:
            ins = tuple(self.inputs)
            if not ins or not all(isinstance(v, NetInput) for v in ins):
                raise fail("IntNetwork", "inputs", "a non-empty sequence of NetInput", ins)
            if len({v.name for v in ins}) != len(ins):
                raise fail("IntNetwork", "inputs", "inputs with distinct names",
                           [v.name for v in ins])
            masks = [v for v in ins if v.kind == "mask"]
            derived = {"input_q": ins[0].q, "input_shape": ins[0].shape,
                       "mask_shape": masks[0].shape if masks else None}
            for name, value in derived.items():
                # given too (dataclasses.replace passes the derived fields back): equal
                given = getattr(self, name)
                if given is not None and (tuple(given) if name != "input_q" else given) \
                        != value:
                    raise fail("IntNetwork", name, f"None or {value!r} (derived from inputs)",
                               given)
                object.__setattr__(self, name, value)
            object.__setattr__(self, "inputs", ins)
            return
        if self.mask_shape is not None:
            object.__setattr__(self, "mask_shape", tuple(
                check_int("IntNetwork", "mask_shape", d, 1) for d in self.mask_shape))
        try:
            shape = tuple(self.input_shape)
        except TypeError:
            raise fail("IntNetwork", "input_shape", "a sequence of sizes >= 1",
                       self.input_shape) from None
        object.__setattr__(self, "input_shape",
                           tuple(check_int("IntNetwork", "input_shape", d, 1) for d in shape))
        if not isinstance(self.input_q, QParams):
            raise fail("IntNetwork", "input_q", "a QParams", self.input_q)
        ins = (NetInput("x", "act", self.input_shape, self.input_q),)
        if self.mask_shape is not None:
            ins += (NetInput("mask", "mask", self.mask_shape, MASK_Q),)
        object.__setattr__(self, "inputs", ins)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise fail("IntNetwork", "layers", "a non-empty sequence of IntLayer", ())
        self._set_inputs()
        check_int("IntNetwork", "mult_bits", self.mult_bits, 1, 32)
        check_int("IntNetwork", "acc_bits", self.acc_bits, 4, PRODUCT_LIMIT - self.mult_bits,
                  why=f"acc_bits + mult_bits <= {PRODUCT_LIMIT} with mult_bits = "
                      f"{self.mult_bits}")
        n = len(self.layers)
        out = check_int("IntNetwork", "output", n - 1 if self.output is None else self.output,
                        0, n - 1, why="a layer index")
        object.__setattr__(self, "output", out)
        acc_lo, acc_hi = int_range(self.acc_bits, True)
        mult_hi = (1 << self.mult_bits) - 1
        for i, layer in enumerate(self.layers):
            owner = f"IntNetwork.layers[{i}]"
            if not isinstance(layer, IntLayer):
                raise fail("IntNetwork", f"layers[{i}]", "an IntLayer", layer)
            n_in = len(self.inputs)
            for k, (j, src) in enumerate(zip(layer.inputs, layer.in_q)):
                check_int(owner, "inputs", j, -n_in, i - 1,
                          why=f"{layer.name!r}: -1 - k (network input k of {n_in}) or an "
                              "earlier layer")
                kind = self.inputs[-j - 1].kind if j < 0 else "act"
                if kind == "mask" and not (layer.kind in ("softmax", "mean") and k == 1
                                           or layer.kind == "position_embedding"):
                    raise fail(owner, "inputs", "a mask input only as the second input of "
                               "a softmax or mean", layer.inputs, repr(layer.name))
                if (kind == "ids") != (layer.kind == "embedding") and \
                        layer.kind != "position_embedding":
                    raise fail(owner, "inputs", "token ids as the input of an embedding, "
                               "and only there", layer.inputs, repr(layer.name))
                src_q = self.inputs[-j - 1].q if j < 0 else self.layers[j].out_q
                if src_q != src:
                    raise fail(owner, f"in_q[{k}]", f"the quantization {src_q} of its input "
                               f"{j}", src, repr(layer.name))
            for name, lo, hi, why in (("m", 0, mult_hi, f"mult_bits = {self.mult_bits}"),
                                      ("s", 0, 63, "shift"),
                                      ("bias", acc_lo, acc_hi,
                                       f"{self.acc_bits}-bit accumulator")):
                arr = getattr(layer, name)
                if arr is not None and arr.size and (arr.min() < lo or arr.max() > hi):
                    bad = int(arr.min() if arr.min() < lo else arr.max())
                    raise fail(owner, name, f"in [{lo}, {hi}]", bad, f"{layer.name!r}: {why}")

    @property
    def output_q(self) -> QParams:
        return self.layers[self.output].out_q

    def gemm_layers(self) -> list[int]:
        return [i for i, L in enumerate(self.layers) if L.kind in _GEMM_KINDS]

    # ---- manifest ------------------------------------------------------------------------
    def manifest(self) -> dict:
        return {"format": "qaccel-intnet", "format_version": FORMAT_VERSION,
                "inputs": [v.to_dict() for v in self.inputs],
                "acc_bits": self.acc_bits, "mult_bits": self.mult_bits,
                "output": self.output, "meta": self.meta,
                "layers": [L.manifest() for L in self.layers]}

    def save(self, path) -> pathlib.Path:
        """Write ``path`` (``.npz`` appended if missing): integer arrays ``L{i}.{name}``
        plus the UTF-8 JSON manifest under ``manifest.json``. No pickled objects."""
        path = pathlib.Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        arrays = {}
        for i, L in enumerate(self.layers):
            for n in _ARRAYS:
                v = getattr(L, n)
                if v is not None:
                    arrays[f"L{i}.{n}"] = np.asarray(v, dtype=np.int64)
        text = json.dumps(self.manifest(), indent=1, sort_keys=True)
        arrays[_MANIFEST_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        return path

    @classmethod
    def load(cls, path) -> IntNetwork:
        """Read a network written by :meth:`save`. A file that is not such a network (not
        a zip, a damaged member, a missing member, a bad manifest or format version) is a
        ``ValueError`` that names the file, and the member or manifest field."""
        path = pathlib.Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such integer network file")
        try:
            data = np.load(path, allow_pickle=False)
        except _READ_ERRORS as exc:
            raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: not an .npz archive (a single .npy array)")

        def member(key: str) -> np.ndarray:
            try:
                return data[key]
            except _READ_ERRORS as exc:
                raise ValueError(f"{path}: member {key!r} is damaged or unreadable "
                                 f"({type(exc).__name__}: {exc})") from None

        with data:
            if _MANIFEST_KEY not in data.files:
                raise ValueError(f"{path}: missing '{_MANIFEST_KEY}' (not a qaccel integer "
                                 "network)")
            try:
                man = json.loads(member(_MANIFEST_KEY).tobytes().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path}: manifest.json is not valid JSON ({exc})") from None
            arrays = {k: member(k) for k in data.files if k != _MANIFEST_KEY}
        return cls.from_manifest(man, arrays, source=str(path))

    @classmethod
    def from_manifest(cls, man, arrays: dict, source: str = "<manifest>") -> IntNetwork:
        def err(fieldname: str, msg: str) -> ValueError:
            return ValueError(f"{source}: manifest field '{fieldname}': {msg}")

        if not isinstance(man, dict):
            raise err("<root>", "must be a JSON object")
        if man.get("format") != "qaccel-intnet":
            raise err("format", f"must be 'qaccel-intnet', not {man.get('format')!r}")
        if man.get("format_version") not in READ_VERSIONS:
            raise err("format_version", f"unsupported version {man.get('format_version')!r}; "
                      f"this reader supports {READ_VERSIONS}")
        legacy = man["format_version"] < 3        # one activation input (+ a mask)
        for key in (("input_q", "input_shape") if legacy else ("inputs",)) + \
                ("acc_bits", "mult_bits", "output", "layers"):
            if key not in man:
                raise err(key, "missing")
        if not isinstance(man["layers"], list):
            raise err("layers", "must be a list")
        input_q = inputs = None
        try:
            if legacy:
                input_q = QParams.from_dict(man["input_q"])
            elif not isinstance(man["inputs"], list):
                raise err("inputs", "must be a list")
            else:
                inputs = tuple(NetInput.from_dict(v) for v in man["inputs"])
        except (ValueError, TypeError) as exc:
            if isinstance(exc, ValueError) and str(exc).startswith(source):
                raise
            raise err("input_q" if legacy else "inputs", str(exc)) from None
        layers = []
        required = ("name", "kind", "inputs", "in_q", "out_q", "relu", "w_bits",
                    "per_channel", "kernel", "stride", "padding", "groups", "keepdim",
                    "arrays")
        for i, d in enumerate(man["layers"]):
            f = f"layers[{i}]"
            if not isinstance(d, dict):
                raise err(f, "must be an object")
            for key in required:
                if key not in d:
                    raise err(f"{f}.{key}", "missing")
            if d["kind"] not in KINDS:
                raise err(f"{f}.kind", f"must be one of {KINDS}, not {d['kind']!r}")
            if not isinstance(d["arrays"], list):
                raise err(f"{f}.arrays", f"must be a list of array names, not {d['arrays']!r}")
            kw = {}
            for n in d["arrays"]:
                if n not in _ARRAYS:
                    raise err(f"{f}.arrays", f"unknown array {n!r}; known {_ARRAYS}")
                key = f"L{i}.{n}"
                if key not in arrays:
                    raise err(f"{f}.arrays", f"array '{key}' is missing from the file")
                kw[n] = arrays[key]
            try:
                in_q = tuple(QParams.from_dict(q) for q in d["in_q"])
                out_q = QParams.from_dict(d["out_q"])
                layers.append(IntLayer(
                    name=str(d["name"]), kind=d["kind"], inputs=tuple(d["inputs"]),
                    in_q=in_q, out_q=out_q, relu=d["relu"], w_bits=d["w_bits"],
                    per_channel=bool(d["per_channel"]), kernel=tuple(d["kernel"]),
                    stride=tuple(d["stride"]), padding=tuple(d["padding"]),
                    groups=int(d["groups"]), keepdim=bool(d["keepdim"]),
                    func=str(d.get("func", "")), shape=tuple(d.get("shape", ())),
                    perm=tuple(d.get("perm", ())), axis=d.get("axis", 1),
                    index=d.get("index", 0), **kw))
            except (ValueError, TypeError) as exc:
                raise err(f, str(exc)) from None
        try:
            return cls(layers=tuple(layers), input_q=input_q, inputs=inputs,
                       input_shape=tuple(man["input_shape"]) if legacy else None,
                       acc_bits=man["acc_bits"],
                       mask_shape=None if not legacy or man.get("mask_shape") is None
                       else tuple(man["mask_shape"]),
                       mult_bits=man["mult_bits"], output=man["output"],
                       meta=dict(man.get("meta") or {}))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: {exc}") from None
