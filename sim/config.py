"""The one hardware configuration object shared by RTL, cycle model, analytic model and CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from .validate import check_acc_bits, check_bool, check_int

__all__ = ["ArrayConfig"]

_BOOL_FIELDS = ("a_signed", "per_channel")
# field -> (min, max) inclusive; acc_bits also obeys w_bits + a_bits <= acc_bits and
# acc_bits + mult_bits <= 62 (validate.check_acc_bits)
_RANGES = {
    "rows": (2, 256),
    "cols": (2, 256),
    "w_bits": (2, 16),
    "a_bits": (2, 16),
    "acc_bits": (4, 60),
    "mult_bits": (1, 32),
    "acc_depth": (1, 65536),
    "dim_bits": (4, 24),
    "weight_buffer_kib": (1, 1 << 20),
    "act_buffer_kib": (1, 1 << 20),
    "out_buffer_kib": (1, 1 << 20),
    "vector_lanes": (0, 4096),
}
#: what a field's value means beyond its range (appended to the ValueError)
_WHY = {"vector_lanes": "0 = one lane per array column"}


@dataclass(frozen=True)
class ArrayConfig:
    """Every hardware parameter of the weight-stationary systolic accelerator.

    Parameters
    ----------
    rows : int
        PE rows, the reduction dimension K of one tile. In [2, 256].
    cols : int
        PE columns, the output channels N of one tile. In [2, 256].
    w_bits : int
        Signed symmetric weight width. In [2, 16].
    a_bits : int
        Activation width (inputs and requantized outputs). In [2, 16].
    a_signed : bool
        Activations are signed (zero-point 0) if true, else unsigned (asymmetric).
    acc_bits : int
        Two's-complement accumulator / partial-sum width; wraps on overflow.
        At least ``w_bits + a_bits`` (one product always fits), and
        ``acc_bits + mult_bits <= 62``.
    mult_bits : int
        Width of the unsigned requantization multiplier ``M``. In [1, 32].
    per_channel : bool
        Requantizer scaling ``(M, S)`` per output channel (true) or per tensor.
    acc_depth : int
        Entries per column accumulator bank: the longest T-tile. In [1, 65536].
    dim_bits : int
        Width of the job-dimension counters in the RTL: ``T, K, N < 2**dim_bits``.
    weight_buffer_kib, act_buffer_kib, out_buffer_kib : int
        On-chip buffer capacities used by the analytic traffic/energy model.
    vector_lanes : int
        Lanes of the vector unit that runs the non-GEMM ops of integer networks
        (LayerNorm, softmax, GELU/SiLU tables, residual adds, pooling): integer
        operations per cycle. 0 (default) = ``cols``, one lane per array column (the
        width of the requantizer's output). In [0, 4096]. Not part of the RTL (the
        analytic and energy models only; :meth:`rtl_key` ignores it).
    """

    rows: int = 4
    cols: int = 4
    w_bits: int = 8
    a_bits: int = 8
    a_signed: bool = False
    acc_bits: int = 32
    mult_bits: int = 16
    per_channel: bool = False
    acc_depth: int = 64
    dim_bits: int = 16
    weight_buffer_kib: int = 64
    act_buffer_kib: int = 64
    out_buffer_kib: int = 64
    vector_lanes: int = 0

    def __post_init__(self):
        # numpy scalars (e.g. from sweeps over np.arange) become plain Python values
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.bool_ | np.integer):
                object.__setattr__(self, f.name, value.item())
        for name in _BOOL_FIELDS:
            check_bool("ArrayConfig", name, getattr(self, name))
        for name, (lo, hi) in _RANGES.items():
            check_int("ArrayConfig", name, getattr(self, name), lo, hi, _WHY.get(name, ""))
        check_acc_bits("ArrayConfig", self.w_bits, self.a_bits, self.acc_bits, self.mult_bits)

    # ---- integer ranges -------------------------------------------------------------
    @property
    def w_range(self) -> tuple[int, int]:
        """Inclusive integer range of weights."""
        return -(1 << (self.w_bits - 1)), (1 << (self.w_bits - 1)) - 1

    @property
    def a_range(self) -> tuple[int, int]:
        """Inclusive integer range of activations (inputs and outputs)."""
        if self.a_signed:
            return -(1 << (self.a_bits - 1)), (1 << (self.a_bits - 1)) - 1
        return 0, (1 << self.a_bits) - 1

    @property
    def acc_range(self) -> tuple[int, int]:
        """Inclusive range of the two's-complement accumulator."""
        return -(1 << (self.acc_bits - 1)), (1 << (self.acc_bits - 1)) - 1

    @property
    def mult_range(self) -> tuple[int, int]:
        """Inclusive range of the requantization multiplier ``M``."""
        return 0, (1 << self.mult_bits) - 1

    @property
    def vector_unit_lanes(self) -> int:
        """Lanes of the vector unit: ``vector_lanes``, or ``cols`` when it is 0."""
        return self.vector_lanes or self.cols

    @property
    def max_dim(self) -> int:
        """Largest T, K or N one job may have."""
        return (1 << self.dim_bits) - 1

    # ---- identity -------------------------------------------------------------------
    def replace(self, **changes) -> ArrayConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ArrayConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"ArrayConfig has no field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def rtl_key(self) -> str:
        """Short stable hash of the fields that change the generated RTL (build caching):
        not the buffer sizes nor the vector unit, which only the models see."""
        rtl = {k: v for k, v in self.to_dict().items()
               if not k.endswith("_kib") and not k.startswith("vector_")}
        return hashlib.sha256(json.dumps(rtl, sort_keys=True).encode()).hexdigest()[:12]

    def tag(self) -> str:
        """Human-readable name, e.g. ``4x4_w8a8u_acc32_m16_pt_d64``."""
        sign = "s" if self.a_signed else "u"
        scal = "pc" if self.per_channel else "pt"
        return (f"{self.rows}x{self.cols}_w{self.w_bits}a{self.a_bits}{sign}_acc{self.acc_bits}"
                f"_m{self.mult_bits}_{scal}_d{self.acc_depth}")
