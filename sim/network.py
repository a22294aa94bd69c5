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

Saved as one ``.npz`` (no pickle) holding the integer arrays and the JSON manifest
(``manifest.json`` as UTF-8 bytes) with :data:`FORMAT_VERSION`. numpy only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from .arith import int_range

__all__ = ["FORMAT_VERSION", "KINDS", "QParams", "IntLayer", "IntNetwork"]

FORMAT_VERSION = 1
KINDS = ("linear", "conv2d", "maxpool2d", "avgpool2d", "global_avgpool", "add", "relu",
         "flatten")
_GEMM_KINDS = ("linear", "conv2d")
_REQUANT_KINDS = ("linear", "conv2d", "avgpool2d", "global_avgpool", "add")
_ARRAYS = ("weight", "bias", "m", "s")
_MANIFEST_KEY = "manifest.json"
#: what reading a damaged archive or member raises (zip structure, CRC, deflate stream,
#: .npy header, truncation, pickled objects refused, an unknown compression method or an
#: encryption flag)
_READ_ERRORS = (OSError, EOFError, ValueError, NotImplementedError, RuntimeError,
                zipfile.BadZipFile, zlib.error)


def _pair(name: str, value) -> tuple[int, int]:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value), int(value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, not {value!r}") from None
    return int(a), int(b)


@dataclass(frozen=True)
class QParams:
    """Quantization parameters of one integer tensor: ``real = scale * (int - zero_point)``."""

    scale: float
    zero_point: int
    bits: int
    signed: bool

    def __post_init__(self):
        if not isinstance(self.bits, int | np.integer) or not 2 <= int(self.bits) <= 16:
            raise ValueError(f"QParams.bits must be an integer in [2, 16], not {self.bits!r}")
        if not isinstance(self.signed, bool | np.bool_):
            raise ValueError(f"QParams.signed must be a bool, not {self.signed!r}")
        if not (isinstance(self.scale, float | int | np.floating)
                and math.isfinite(float(self.scale)) and float(self.scale) > 0):
            raise ValueError(f"QParams.scale must be a finite float > 0, not {self.scale!r}")
        lo, hi = int_range(int(self.bits), bool(self.signed))
        if self.signed and self.zero_point != 0:
            raise ValueError(f"QParams.zero_point must be 0 for signed tensors, "
                             f"not {self.zero_point!r}")
        if not isinstance(self.zero_point, int | np.integer) or isinstance(self.zero_point,
                                                                           bool) \
                or not lo <= int(self.zero_point) <= hi:
            raise ValueError(f"QParams.zero_point must be an integer in [{lo}, {hi}], "
                             f"not {self.zero_point!r}")
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "zero_point", int(self.zero_point))
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "signed", bool(self.signed))

    @property
    def range(self) -> tuple[int, int]:
        return int_range(self.bits, self.signed)

    def quantize(self, x) -> np.ndarray:
        """``clamp(rint(x / scale) + z)`` in float32 (as the torch fake-quantizers)."""
        x = np.asarray(x, dtype=np.float32)
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


def _int_array(name: str, arr, ndim: int | None = None) -> np.ndarray:
    a = np.asarray(arr)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
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

    def __post_init__(self):
        where = f"IntLayer {self.name!r}"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {KINDS}, not {self.kind!r}")
        object.__setattr__(self, "inputs", tuple(int(i) for i in self.inputs))
        object.__setattr__(self, "in_q", tuple(self.in_q))
        n_in = 2 if self.kind == "add" else 1
        if len(self.inputs) != n_in or len(self.in_q) != n_in:
            raise ValueError(f"{where}: kind {self.kind!r} takes {n_in} input(s); got inputs "
                             f"{self.inputs} with {len(self.in_q)} in_q")
        for q in (*self.in_q, self.out_q):
            if not isinstance(q, QParams):
                raise ValueError(f"{where}: in_q/out_q must be QParams, not {q!r}")
        for name in ("kernel", "stride", "padding"):
            object.__setattr__(self, name, _pair(f"{where}: {name}", getattr(self, name)))
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"{where}: kernel/stride must be >= 1 and padding >= 0")
        if not isinstance(self.relu, bool | np.bool_):
            raise ValueError(f"{where}: relu must be a bool, not {self.relu!r}")
        object.__setattr__(self, "relu", bool(self.relu))
        if self.kind in ("maxpool2d", "relu", "flatten") and self.out_q != self.in_q[0]:
            raise ValueError(f"{where}: {self.kind} keeps the input's quantization; out_q "
                             f"must equal in_q[0]")
        for name in _ARRAYS:
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, _int_array(f"{where}: {name}", v))
        if self.kind in _GEMM_KINDS:
            self._check_gemm(where)
        elif self.kind in _REQUANT_KINDS:
            n_m = 2 if self.kind == "add" else 1
            if self.m is None or self.s is None or self.m.shape != (n_m,) \
                    or self.s.shape != (1,):
                raise ValueError(f"{where}: {self.kind} needs m of shape ({n_m},) and s of "
                                 f"shape (1,)")
            if self.weight is not None or self.bias is not None:
                raise ValueError(f"{where}: {self.kind} has no weight/bias")
        else:
            if any(getattr(self, n) is not None for n in _ARRAYS):
                raise ValueError(f"{where}: {self.kind} has no weight/bias/m/s")

    def _check_gemm(self, where: str) -> None:
        if self.weight is None or self.bias is None or self.m is None or self.s is None:
            raise ValueError(f"{where}: {self.kind} needs weight, bias, m and s")
        if not 2 <= int(self.w_bits) <= 16:
            raise ValueError(f"{where}: w_bits must be in [2, 16], not {self.w_bits}")
        ndim = 2 if self.kind == "linear" else 4
        if self.weight.ndim != ndim:
            raise ValueError(f"{where}: weight must be {ndim}-D for {self.kind}, got shape "
                             f"{self.weight.shape}")
        n = self.weight.shape[0]
        if self.kind == "conv2d":
            if self.groups < 1 or n % self.groups:
                raise ValueError(f"{where}: groups={self.groups} must divide C_out={n}")
            object.__setattr__(self, "kernel", tuple(self.weight.shape[2:]))
        elif self.groups != 1:
            raise ValueError(f"{where}: linear layers have groups=1")
        wlo, whi = int_range(int(self.w_bits), True)
        if self.weight.size and (self.weight.min() < wlo or self.weight.max() > whi):
            raise ValueError(f"{where}: weight values must be in [{wlo}, {whi}] "
                             f"(signed {self.w_bits}-bit)")
        if self.bias.shape != (n,):
            raise ValueError(f"{where}: bias must have shape ({n},), got {self.bias.shape}")
        n_m = n if self.per_channel else 1
        for name in ("m", "s"):
            if getattr(self, name).shape != (n_m,):
                raise ValueError(f"{where}: {name} must have shape ({n_m},) "
                                 f"({'per-channel' if self.per_channel else 'per-tensor'}), "
                                 f"got {getattr(self, name).shape}")
        if self.in_q[0].signed and self.in_q[0].zero_point != 0:
            raise ValueError(f"{where}: signed inputs need zero_point 0")

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
             "keepdim": self.keepdim}
        d["arrays"] = [n for n in _ARRAYS if getattr(self, n) is not None]
        return d


@dataclass(frozen=True, eq=False)
class IntNetwork:
    """An ordered integer network. ``output`` indexes the layer producing the output
    (``-1`` in the manifest sense is not allowed here: default the last layer)."""

    layers: tuple[IntLayer, ...]
    input_q: QParams
    input_shape: tuple[int, ...]
    acc_bits: int = 32
    mult_bits: int = 16
    output: int | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        if not self.layers:
            raise ValueError("IntNetwork.layers must not be empty")
        if not isinstance(self.input_q, QParams):
            raise ValueError("IntNetwork.input_q must be QParams")
        for name, lo, hi in (("acc_bits", 4, 60), ("mult_bits", 1, 32)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"IntNetwork.{name} must be an integer in [{lo}, {hi}], "
                                 f"not {v!r}")
        if self.acc_bits + self.mult_bits > 62:
            raise ValueError(f"IntNetwork.acc_bits + mult_bits must be <= 62, got "
                             f"{self.acc_bits} + {self.mult_bits}")
        out = len(self.layers) - 1 if self.output is None else int(self.output)
        if not 0 <= out < len(self.layers):
            raise ValueError(f"IntNetwork.output must index a layer in [0, "
                             f"{len(self.layers) - 1}], not {self.output}")
        object.__setattr__(self, "output", out)
        acc_lo, acc_hi = int_range(self.acc_bits, True)
        mult_hi = (1 << self.mult_bits) - 1
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, IntLayer):
                raise ValueError(f"IntNetwork.layers[{i}] must be an IntLayer")
            where = f"IntNetwork.layers[{i}] ({layer.name!r})"
            for j, src in zip(layer.inputs, layer.in_q):
                if not -1 <= j < i:
                    raise ValueError(f"{where}: input {j} must be -1 (network input) or an "
                                     f"earlier layer in [0, {i - 1}]")
                src_q = self.input_q if j == -1 else self.layers[j].out_q
                if src_q != src:
                    raise ValueError(f"{where}: in_q {src} differs from the quantization "
                                     f"{src_q} of its input {j}")
            if layer.m is not None:
                if layer.m.min() < 0 or layer.m.max() > mult_hi:
                    raise ValueError(f"{where}: m must be in [0, {mult_hi}] "
                                     f"(mult_bits={self.mult_bits})")
                if layer.s.min() < 0 or layer.s.max() > 63:
                    raise ValueError(f"{where}: s must be in [0, 63]")
            if layer.bias is not None and layer.bias.size and (
                    layer.bias.min() < acc_lo or layer.bias.max() > acc_hi):
                raise ValueError(f"{where}: bias must fit the {self.acc_bits}-bit accumulator "
                                 f"[{acc_lo}, {acc_hi}]")

    @property
    def output_q(self) -> QParams:
        return self.layers[self.output].out_q

    def gemm_layers(self) -> list[int]:
        return [i for i, L in enumerate(self.layers) if L.kind in _GEMM_KINDS]

    # ---- manifest ------------------------------------------------------------------------
    def manifest(self) -> dict:
        return {"format": "qaccel-intnet", "format_version": FORMAT_VERSION,
                "input_q": self.input_q.to_dict(), "input_shape": list(self.input_shape),
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
        if man.get("format_version") != FORMAT_VERSION:
            raise err("format_version", f"unsupported version {man.get('format_version')!r}; "
                      f"this reader supports {FORMAT_VERSION}")
        for key in ("input_q", "input_shape", "acc_bits", "mult_bits", "output", "layers"):
            if key not in man:
                raise err(key, "missing")
        if not isinstance(man["layers"], list):
            raise err("layers", "must be a list")
        try:
            input_q = QParams.from_dict(man["input_q"])
        except (ValueError, TypeError) as exc:
            raise err("input_q", str(exc)) from None
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
                    groups=int(d["groups"]), keepdim=bool(d["keepdim"]), **kw))
            except (ValueError, TypeError) as exc:
                raise err(f, str(exc)) from None
        try:
            return cls(layers=tuple(layers), input_q=input_q,
                       input_shape=tuple(man["input_shape"]), acc_bits=man["acc_bits"],
                       mult_bits=man["mult_bits"], output=man["output"],
                       meta=dict(man.get("meta") or {}))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: {exc}") from None
