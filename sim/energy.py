"""Energy model of the weight-stationary accelerator: per-operation / per-access energies
from a documented table (default Horowitz, ISSCC 2014, 45 nm) applied to per-layer counts.

The model is deliberately decoupled from the traffic model. It consumes
:class:`LayerCounts` — op counts plus bits read/written per (level, operand) — and returns
an :class:`EnergyBreakdown` of named terms in pJ. :func:`counts_from_perf` adapts the analytic
model's per-layer records to :class:`LayerCounts`.

Scaling laws (justified in ``docs/energy.md``):

* adders: piecewise **linear in width** through the table's anchor widths
  (8 and 32 bits by default), extrapolated with the end segments;
* multipliers: ``b1 x b2`` multiplier costs the table's ``n x n`` multiplier energy
  interpolated as a **power law in the product** ``b1 * b2`` (log-log piecewise linear
  through the anchors ``8*8`` and ``32*32``): array-multiplier energy follows the number of
  partial-product bits;
* registers: ``register_bit`` per bit written or read (linear with width);
* SRAM: energy per bit = ``E_64b(size) / 64`` with ``E_64b`` interpolated **log-log** in the
  capacity between the anchors (8 KB, 32 KB, 1 MB) and extrapolated with the end segment's
  exponent (about ``sqrt(size)``); writes cost ``sram_write_over_read`` x reads;
* DRAM: energy per bit = ``dram_64b[use] / 64``.

Per-channel vs per-tensor scaling (whitepaper sec. 2.4.2) differs **only** in the
``params.*`` terms: the traffic model moves ``cols`` lanes of ``(M, S)`` (``mult_bits + 6``
bits each) with every output tile's params beat — DRAM fetch, weight-buffer write/read,
parameter FIFO / per-lane requantizer registers, and a per-lane ``(M, S)`` read for every
requantized vector — instead of one ``(M, S)`` per job latched with ``cmd``.
:func:`per_channel_terms` names the terms.

The vector unit (:func:`vector_energy`, category ``vector``) prices each layer's integer
operations by class (:data:`VECTOR_OP_MIX`: multiplies, adds / compares, shifts, divisions,
table reads, at the lane width ``acc_bits``) plus a result register per operation and its
buffer reads and writes (:func:`sim.analytic.analyze_vector`).
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .config import ArrayConfig
from .traffic import BUFFER_OF, LEVELS, OPERANDS
from .validate import check_int, fail

__all__ = ["EnergyTable", "EnergyTableError", "LayerCounts", "EnergyBreakdown", "load_table",
           "default_table", "layer_energy", "network_energy", "per_channel_terms", "CATEGORIES",
           "category_of", "S_BITS", "DEFAULT_TABLE_PATH", "TABLE_FORMAT", "TABLE_VERSION",
           "requant_op_pj", "acc_bank_bit_pj", "buffer_bytes", "table_from_dict",
           "counts_from_perf", "workloads_energy", "extrapolated_buffers", "VECTOR_OP_MIX",
           "vector_op_pj", "vector_energy"]

DEFAULT_TABLE_PATH = pathlib.Path(__file__).with_name("data") / "energy_horowitz45.json"
#: the table file's ``format`` and the one ``version`` this reader supports (both optional
#: in a file; a missing one means these)
TABLE_FORMAT = "qaccel-energy-table"
TABLE_VERSION = 1

#: width of the requantizer shift ``S`` (SPEC: S in [0, 63])
S_BITS = 6

#: plotting / reporting categories, in stacking order
CATEGORIES = ("mac", "pe_regs", "accumulator", "requant", "buffers", "params", "dram",
              "vector")


class EnergyTableError(ValueError):
    """A malformed energy table; the message names the file and the field."""


# ---- the table ------------------------------------------------------------------------

def _interp(points: list[tuple[float, float]], x: float, log: bool) -> float:
    """Piecewise-linear interpolation through sorted ``points`` (log-log if ``log``),
    extrapolated with the end segments."""
    if len(points) == 1:
        x0, y0 = points[0]
        return y0 * (x / x0) if log else y0
    f = math.log if log else float
    xs = [f(p[0]) for p in points]
    ys = [f(p[1]) for p in points]
    fx = f(x)
    i = 0
    while i < len(xs) - 2 and fx > xs[i + 1]:
        i += 1
    t = (fx - xs[i]) / (xs[i + 1] - xs[i])
    y = ys[i] + t * (ys[i + 1] - ys[i])
    return math.exp(y) if log else y


@dataclass(frozen=True)
class EnergyTable:
    """Per-operation / per-access energies in pJ (see module docstring for the scaling)."""

    name: str
    source: str
    add: tuple[tuple[int, float], ...]            # (width, pJ)
    mult: tuple[tuple[int, float], ...]           # (n for an n x n multiplier, pJ)
    sram_read_64b: tuple[tuple[int, float], ...]  # (capacity in bytes, pJ per 64-bit read)
    sram_write_over_read: float
    dram_64b: float                               # pJ per 64 bits, the chosen point
    dram_64b_range: tuple[float, float]           # (low, high) as published
    register_bit: float
    mux2_bit_over_add_bit: float
    path: str = ""

    # -- scaling laws --
    def add_pj(self, bits: int) -> float:
        """One ``bits``-wide integer addition."""
        return _interp(list(self.add), bits, log=False)

    def mult_pj(self, b1: int, b2: int) -> float:
        """One ``b1 x b2`` integer multiplication (power law in ``b1 * b2``)."""
        pts = [(n * n, e) for n, e in self.mult]
        return _interp(pts, b1 * b2, log=True)

    def sram_bit_pj(self, capacity_bytes: float, write: bool = False) -> float:
        """Energy per bit read (or written) from an SRAM of ``capacity_bytes``."""
        e64 = _interp(list(self.sram_read_64b), capacity_bytes, log=True)
        return e64 / 64.0 * (self.sram_write_over_read if write else 1.0)

    def sram_extrapolated(self, capacity_bytes: float) -> bool:
        """True if ``capacity_bytes`` lies outside the table's SRAM anchors."""
        return not (self.sram_read_64b[0][0] <= capacity_bytes <= self.sram_read_64b[-1][0])

    def dram_bit_pj(self) -> float:
        return self.dram_64b / 64.0

    def mux2_bit_pj(self) -> float:
        """A 2:1 multiplexer bit, relative to one adder bit at 32 bits."""
        return self.mux2_bit_over_add_bit * self.add_pj(32) / 32.0

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "path": self.path,
                "add": dict(self.add), "mult": dict(self.mult),
                "sram_read_64b": dict(self.sram_read_64b),
                "sram_write_over_read": self.sram_write_over_read,
                "dram_64b": self.dram_64b, "dram_64b_range": list(self.dram_64b_range),
                "register_bit": self.register_bit,
                "mux2_bit_over_add_bit": self.mux2_bit_over_add_bit}


_REQUIRED = ("add", "mult", "sram_read_64b", "dram_64b", "register_bit")


def _positive(where: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value <= 0:
        raise EnergyTableError(f"{where}: field '{name}' must be a positive number, "
                               f"not {value!r}")
    return float(value)


def _points(where: str, name: str, value, min_points: int, key_what: str,
            increasing: bool) -> tuple[tuple[int, float], ...]:
    if not isinstance(value, dict) or len(value) < min_points:
        raise EnergyTableError(f"{where}: field '{name}' must be an object mapping {key_what} "
                               f"to pJ with at least {min_points} entries, not {value!r}")
    pts = []
    for k, v in value.items():
        try:
            key = int(k)
        except (TypeError, ValueError):
            raise EnergyTableError(f"{where}: field '{name}' key {k!r} is not an integer "
                                   f"({key_what})") from None
        if key < 1:
            raise EnergyTableError(f"{where}: field '{name}' key {k!r} must be >= 1")
        pts.append((key, _positive(where, f"{name}.{k}", v)))
    pts.sort()
    for (k0, e0), (k1, e1) in zip(pts, pts[1:]):
        if increasing and not e1 > e0:
            raise EnergyTableError(f"{where}: field '{name}' must increase with {key_what}: "
                                   f"{k0} -> {e0} pJ but {k1} -> {e1} pJ")
    return tuple(pts)


def table_from_dict(data: dict, where: str = "<dict>") -> EnergyTable:
    """Validate ``data`` (the JSON layout of ``sim/data/energy_horowitz45.json``)."""
    if not isinstance(data, dict):
        raise EnergyTableError(f"{where}: top level must be a JSON object")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise EnergyTableError(f"{where}: missing field(s) {missing}; required: {list(_REQUIRED)}")
    known = set(_REQUIRED) | {"format", "version", "name", "source", "unit",
                              "sram_write_over_read", "mux2_bit_over_add_bit", "notes"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise EnergyTableError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    if data.get("format", TABLE_FORMAT) != TABLE_FORMAT:
        raise EnergyTableError(f"{where}: field 'format' must be {TABLE_FORMAT!r}, not "
                               f"{data['format']!r}")
    version = data.get("version", TABLE_VERSION)
    if isinstance(version, bool) or version != TABLE_VERSION:
        raise EnergyTableError(f"{where}: field 'version' must be {TABLE_VERSION} (the "
                               f"version this reader supports), not {version!r}")
    if data.get("unit", "pJ") != "pJ":
        raise EnergyTableError(f"{where}: field 'unit' must be \"pJ\", not {data['unit']!r}")
    add = _points(where, "add", data["add"], 2, "bit width", increasing=True)
    if _interp(list(add), 1, log=False) <= 0:
        raise EnergyTableError(f"{where}: field 'add' extrapolates to a non-positive energy "
                               f"at 1 bit; anchors {dict(add)} are too steep")
    mult = _points(where, "mult", data["mult"], 2, "operand width n (n x n)", increasing=True)
    sram = _points(where, "sram_read_64b", data["sram_read_64b"], 2, "capacity in bytes",
                   increasing=True)
    dram = data["dram_64b"]
    if isinstance(dram, dict):
        for k in ("low", "high"):
            if k not in dram:
                raise EnergyTableError(f"{where}: field 'dram_64b' needs 'low' and 'high' "
                                       f"(pJ per 64 bits) and 'use'; missing {k!r}")
        lo = _positive(where, "dram_64b.low", dram["low"])
        hi = _positive(where, "dram_64b.high", dram["high"])
        if hi < lo:
            raise EnergyTableError(f"{where}: field 'dram_64b' has high {hi} < low {lo}")
        use = dram.get("use", "mid")
        choices = {"low": lo, "high": hi, "mid": (lo + hi) / 2}
        if use not in choices:
            raise EnergyTableError(f"{where}: field 'dram_64b.use' must be one of "
                                   f"{sorted(choices)}, not {use!r}")
        dram_e, dram_range = choices[use], (lo, hi)
    else:
        dram_e = _positive(where, "dram_64b", dram)
        dram_range = (dram_e, dram_e)
    return EnergyTable(
        name=str(data.get("name", "custom")), source=str(data.get("source", "")),
        add=add, mult=mult, sram_read_64b=sram,
        sram_write_over_read=_positive(where, "sram_write_over_read",
                                       data.get("sram_write_over_read", 1.0)),
        dram_64b=dram_e, dram_64b_range=dram_range,
        register_bit=_positive(where, "register_bit", data["register_bit"]),
        mux2_bit_over_add_bit=_positive(where, "mux2_bit_over_add_bit",
                                        data.get("mux2_bit_over_add_bit", 0.5)),
        path=where)


def load_table(path: str | pathlib.Path | None = None) -> EnergyTable:
    """Load and validate an energy table (JSON). ``None``: the default Horowitz 45 nm table."""
    p = pathlib.Path(path) if path is not None else DEFAULT_TABLE_PATH
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"energy table {p} does not exist") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EnergyTableError(f"{p}: not valid JSON: {exc}") from None
    return table_from_dict(data, where=str(p))


_DEFAULT: EnergyTable | None = None


def default_table() -> EnergyTable:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_table(None)
    return _DEFAULT


# ---- counts in, energy out ------------------------------------------------------------

@dataclass(frozen=True)
class LayerCounts:
    """What the energy model needs from a traffic model, for one layer.

    ``bits`` maps ``"level.operand.read"`` / ``"level.operand.write"`` (level in
    :data:`LEVELS`, operand in :data:`OPERANDS`) to bits moved; missing keys are 0.
    :func:`counts_from_perf` fills it from ``sim.analytic.LayerPerf``.
    """

    name: str
    macs: int            # useful multiply-accumulates (busy PE-cycles)
    acc_updates: int     # accumulate-stage lane additions (acc_bits wide)
    outputs: int         # requantizer lane operations (multiply, round, shift, clamp)
    cycles: int = 0
    bits: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self):
        for k in ("macs", "acc_updates", "outputs", "cycles"):
            check_int("LayerCounts", k, getattr(self, k), 0)
        for key, v in self.bits.items():
            parts = str(key).split(".")
            if len(parts) != 3 or parts[0] not in LEVELS or parts[1] not in OPERANDS \
                    or parts[2] not in ("read", "write"):
                raise fail("LayerCounts", "bits", f"keyed 'level.operand.read|write' with "
                           f"level in {LEVELS}, operand in {OPERANDS}", key,
                           shown=f"key {key!r}")
            check_int("LayerCounts", f"bits[{key!r}]", v, 0)

    def b(self, level: str, operand: str, rw: str) -> int:
        return int(self.bits.get(f"{level}.{operand}.{rw}", 0))


@dataclass(frozen=True)
class EnergyBreakdown:
    """Named energy terms in pJ for one layer (or a sum of layers)."""

    name: str
    terms: dict[str, float]
    cycles: int = 0
    macs: int = 0

    @property
    def total_pj(self) -> float:
        return float(sum(self.terms.values()))

    def by_category(self) -> dict[str, float]:
        out = dict.fromkeys(CATEGORIES, 0.0)
        for k, v in self.terms.items():
            out[category_of(k)] += v
        return out

    def __add__(self, other: EnergyBreakdown) -> EnergyBreakdown:
        terms = dict(self.terms)
        for k, v in other.terms.items():
            terms[k] = terms.get(k, 0.0) + v
        return EnergyBreakdown(name="total", terms=terms, cycles=self.cycles + other.cycles,
                               macs=self.macs + other.macs)


def category_of(term: str) -> str:
    head = term.split(".", 1)[0]
    return {"mac": "mac", "pe": "pe_regs", "acc": "accumulator", "requant": "requant",
            "buffer": "buffers", "params": "params", "dram": "dram", "vector": "vector"}[head]


def buffer_bytes(cfg: ArrayConfig, operand: str) -> int:
    """Capacity of the on-chip buffer holding ``operand`` (:data:`sim.traffic.BUFFER_OF`:
    requantizer parameters share the weight buffer; psums reach a buffer only in spilled
    K-split chains, in the output buffer)."""
    if operand not in OPERANDS:
        raise ValueError(f"operand must be one of {OPERANDS}, not {operand!r}")
    return getattr(cfg, BUFFER_OF[operand]) * 1024


def acc_bank_bit_pj(cfg: ArrayConfig, table: EnergyTable, write: bool = False) -> float:
    """One bit of one column's accumulator bank (``acc_depth x acc_bits``): an SRAM of that
    size by the SRAM law, but never cheaper than a register bit."""
    bank_bytes = cfg.acc_depth * cfg.acc_bits / 8.0
    return max(table.register_bit, table.sram_bit_pj(bank_bytes, write=write))


def requant_op_pj(cfg: ArrayConfig, table: EnergyTable) -> dict[str, float]:
    """Energy of requantizing one accumulator: ``(acc*M + R) >> S``, ``+ z_y``, clamp."""
    p = cfg.acc_bits + cfg.mult_bits
    return {
        "requant.mult": table.mult_pj(cfg.acc_bits, cfg.mult_bits),
        # rounding add of R = 1 << (S-1) at full product width
        "requant.round": table.add_pj(p),
        # barrel shifter: S_BITS stages of p-bit 2:1 muxes
        "requant.shift": S_BITS * p * table.mux2_bit_pj(),
        # + z_y and the two clamp comparisons, at the shifted value's width (acc_bits)
        "requant.clamp": 3 * table.add_pj(cfg.acc_bits),
        # the two pipeline registers (acc_bits + product) and the output register
        "requant.regs": (2 * cfg.acc_bits + cfg.mult_bits + cfg.a_bits) * table.register_bit,
    }


# ---- the vector unit ----------------------------------------------------------------------

#: per :data:`sim.vector.VECTOR_OPS` term of each kind, its operations by class (they sum
#: to the VECTOR_OPS count; read from the integer kernels of :mod:`sim.vector`):
#: ``mult`` a lane multiply, ``add`` an add / subtract / compare / min / max / abs / clamp,
#: ``shift`` a barrel shift, ``div`` an integer division (softmax's ``2^31 // sum``,
#: LayerNorm's ``// (N std)`` and the integer-Newton square root), ``lut`` a table read,
#: ``copy`` a move (an embedding row element fetched to the lane, a selected token; only
#: its result register, ``vector.regs``).
VECTOR_OP_MIX = {
    "lut": {"per_element": {"lut": 1}},
    # (a - z_a) M_a + (b - z_b) M_b, + R, >> S, + z_y and clamp
    "add": {"per_element": {"mult": 2, "add": 4, "shift": 1}},
    "relu": {"per_element": {"add": 1}},
    "maxpool2d": {"per_window": {"add": 1}},
    # window sum, then the requantizer's multiply, + R, >> S, clamp
    "avgpool2d": {"per_window": {"add": 1}, "per_output": {"mult": 1, "add": 2, "shift": 1}},
    "global_avgpool": {"per_window": {"add": 1},
                       "per_output": {"mult": 1, "add": 2, "shift": 1}},
    # row max, - max, grid shift, z = -q // ln2 (a multiply by the constant's reciprocal),
    # p = q + z ln2, the exp polynomial (add, square, add), >> z, row sum, e * factor, + R,
    # >> shift, clamp; per row the division 2^31 // sum and its guard
    "softmax": {"per_element": {"mult": 4, "add": 9, "shift": 3},
                "per_row": {"div": 1, "add": 1}},
    # grid shift, |q|, min, the erf polynomial (add, square, add), sign, + 1, x * (..),
    # requantize (multiply, + R, >> S, clamp)
    "gelu": {"per_element": {"mult": 4, "add": 8, "shift": 2}},
    # row sum, - mean, c^2, sum, N c - d, << , // (N std), * gamma, + beta, requantize;
    # per row 32 integer-Newton steps (division, add, shift) and 3 more adds
    "layernorm": {"per_element": {"mult": 4, "add": 7, "shift": 2, "div": 1},
                  "per_row": {"div": 32, "add": 35, "shift": 32}},
    "embedding": {"per_element": {"copy": 1}},
    "position_embedding": {"per_element": {"copy": 1}},
    "select": {"per_element": {"copy": 1}},
    # masked sum (multiply by the 0/1 mask, add) per input; per output: multiply, + n R,
    # division by the token count, + z_y, clamp
    "mean": {"per_window": {"mult": 1, "add": 1},
             "per_output": {"mult": 1, "add": 3, "div": 1}},
}


def vector_op_pj(cfg: ArrayConfig, table: EnergyTable, in_bits: int = 8,
                 out_bits: int = 8) -> dict[str, float]:
    """Energy (pJ) of one vector-unit operation of each class on ``cfg``'s lanes, which
    are ``acc_bits`` wide like the accumulators: ``mult`` a ``mult_bits x acc_bits``
    multiply (the requantizer's), ``add`` an ``acc_bits`` add, ``shift`` an
    ``S_BITS``-stage barrel shifter, ``div`` ``acc_bits`` subtract steps (restoring
    division), ``lut`` an ``out_bits`` read of a ``2^in_bits``-entry table (SRAM law,
    never below a register), ``copy`` nothing beyond ``regs``, the ``acc_bits`` result
    register every operation writes."""
    b = cfg.acc_bits
    lut_bytes = (1 << in_bits) * out_bits / 8.0
    return {"mult": table.mult_pj(b, cfg.mult_bits), "add": table.add_pj(b),
            "shift": S_BITS * b * table.mux2_bit_pj(), "div": b * table.add_pj(b),
            "lut": out_bits * max(table.register_bit, table.sram_bit_pj(lut_bytes)),
            "copy": 0.0,
            "regs": b * table.register_bit}


def vector_energy(cfg: ArrayConfig, vp, table: EnergyTable | None = None) -> EnergyBreakdown:
    """Energy terms (pJ) of one vector-unit layer (a ``sim.analytic.VectorPerf``):
    ``vector.<class>`` for its operations by :data:`VECTOR_OP_MIX`, ``vector.regs`` (one
    result register per operation), ``vector.buffer`` and ``vector.dram`` (its buffer
    and DRAM reads and writes, priced as the array's). ``ValueError`` for a kind without
    an operation mix."""
    t = table if table is not None else default_table()
    if vp.kind not in VECTOR_OP_MIX:
        raise ValueError(f"vector-unit layer {vp.name!r}: no operation mix for kind "
                         f"{vp.kind!r} in sim.energy.VECTOR_OP_MIX (known: "
                         f"{sorted(VECTOR_OP_MIX)})")
    pj = vector_op_pj(cfg, t, vp.in_bits[0], vp.out_bits)
    n = dict.fromkeys(("mult", "add", "shift", "div", "lut", "copy"), 0)
    for term, mix in VECTOR_OP_MIX[vp.kind].items():
        for cls, k in mix.items():
            n[cls] += k * vp.counts[term]
    terms = {f"vector.{cls}": count * pj[cls] for cls, count in n.items() if cls != "copy"}
    terms["vector.regs"] = vp.ops * pj["regs"]
    for level in ("buffer", "dram"):
        terms[f"vector.{level}"] = sum(
            vp.traffic.reads(level, op) * _level_bit_pj(cfg, t, level, op, False)
            + vp.traffic.writes(level, op) * _level_bit_pj(cfg, t, level, op, True)
            for op in OPERANDS)
    return EnergyBreakdown(name=vp.name, terms=terms, cycles=vp.cycles, macs=0)


def extrapolated_buffers(cfg: ArrayConfig, table: EnergyTable) -> list[str]:
    """The ``ArrayConfig`` buffer fields whose capacity lies outside the table's SRAM
    anchors, i.e. whose energy per bit is extrapolated (reported, not an error)."""
    return [f for f in ("weight_buffer_kib", "act_buffer_kib", "out_buffer_kib")
            if table.sram_extrapolated(getattr(cfg, f) * 1024)]


def per_channel_terms() -> tuple[str, ...]:
    """The only terms in which a per-channel build differs from the per-tensor one
    (given the same traffic for the other operands): parameter movement."""
    return tuple(f"params.{lv}" for lv in LEVELS)


def _level_bit_pj(cfg: ArrayConfig, t: EnergyTable, level: str, operand: str,
                  write: bool) -> float:
    if level == "pe":
        return t.register_bit
    if level == "acc":
        # psums live in the accumulator banks; bias/(M, S) in the parameter FIFO and the
        # requantizer's per-lane registers
        return acc_bank_bit_pj(cfg, t, write) if operand == "psums" else t.register_bit
    if level == "buffer":
        return t.sram_bit_pj(buffer_bytes(cfg, operand), write=write)
    return t.dram_bit_pj()


def layer_energy(cfg: ArrayConfig, counts: LayerCounts,
                 table: EnergyTable | None = None) -> EnergyBreakdown:
    """Energy terms (pJ) of one layer's counts on ``cfg``.

    Terms: ``mac.mult``/``mac.add`` per MAC; ``acc.add`` per accumulate;
    ``requant.*`` per requantized output; and for every level and operand the bits read
    and written times that level's energy per bit (``pe.*``, ``acc.*``, ``buffer.*``,
    ``dram.*``, and ``params.<level>`` for bias and ``(M, S)``).
    """
    t = table if table is not None else default_table()
    c = counts
    terms: dict[str, float] = {
        "mac.mult": c.macs * t.mult_pj(cfg.w_bits, cfg.a_bits),
        "mac.add": c.macs * t.add_pj(cfg.acc_bits),
        "acc.add": c.acc_updates * t.add_pj(cfg.acc_bits),
    }
    for k, e in requant_op_pj(cfg, t).items():
        terms[k] = c.outputs * e
    for level in LEVELS:
        for operand in OPERANDS:
            e = (c.b(level, operand, "read") * _level_bit_pj(cfg, t, level, operand, False)
                 + c.b(level, operand, "write") * _level_bit_pj(cfg, t, level, operand, True))
            key = f"params.{level}" if operand == "params" else f"{level}.{operand}"
            terms[key] = e
    return EnergyBreakdown(name=c.name, terms=terms, cycles=c.cycles, macs=c.macs)


def network_energy(cfg: ArrayConfig, layers: Iterable[LayerCounts],
                   table: EnergyTable | None = None) -> tuple[list[EnergyBreakdown],
                                                              EnergyBreakdown]:
    """Per-layer breakdowns and their sum."""
    per = [layer_energy(cfg, c, table) for c in layers]
    total = EnergyBreakdown(name="total", terms={})
    for b in per:
        total = total + b
    return per, total


# ---- adapter to the analytic model ------------------------------------------------------

def counts_from_perf(lp) -> LayerCounts:
    """:class:`LayerCounts` of a ``sim.analytic.LayerPerf`` (all its jobs)."""
    bits = {}
    for level, ops in lp.traffic.to_dict().items():
        for operand, acc in ops.items():
            if acc["reads"]:
                bits[f"{level}.{operand}.read"] = int(acc["reads"])
            if acc["writes"]:
                bits[f"{level}.{operand}.write"] = int(acc["writes"])
    return LayerCounts(name=lp.name, macs=int(lp.macs), acc_updates=int(lp.acc_adds),
                       outputs=int(lp.requant_ops), cycles=int(lp.cycles), bits=bits)


def workloads_energy(cfg: ArrayConfig, workloads, table: EnergyTable | None = None,
                     mapper=None, vectors=()):
    """Analytic model + energy model for a list of ``GemmWorkload`` (and of vector-unit
    ``VectorWorkload`` s): ``(NetworkPerf, per-layer breakdowns, total breakdown)``, the
    vector layers' breakdowns after the GEMM layers'. ``mapper(cfg, w)``: each layer's
    mapping (``None``: the fixed nest), as in :func:`.analytic.analyze_network`."""
    from .analytic import analyze_network

    perf = analyze_network(cfg, workloads, mapper, vectors)
    per, total = network_energy(cfg, [counts_from_perf(lp) for lp in perf.layers], table)
    for vp in perf.vectors:
        per.append(vector_energy(cfg, vp, table))
        total = total + per[-1]
    return perf, per, total
