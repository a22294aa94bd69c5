"""Analytic latency and traffic model of the weight-stationary accelerator (closed form).

Cycles
------
One GEMM job takes exactly :func:`sim.schedule.gemm_cycles` cycles — the same closed form
the RTL and the cycle model (``sim/cycle.py``) implement. A layer of ``repeat`` jobs (the
groups of a grouped / depthwise convolution, the batch x heads of an attention matmul)
runs them as consecutive, non-overlapping jobs: ``cycles = repeat * gemm_cycles(T, K, N)``.
A PE is busy when it multiplies a real operand pair, so ``busy = MACs = repeat * T*K*N``
and ``utilization = busy / (rows * cols * cycles)``.

Traffic
-------
Every count is in BITS, so bit-widths change it: weights ``w_bits``, activations and
outputs ``a_bits``, partial sums / accumulators and bias ``acc_bits``, per-channel ``M``
``mult_bits`` and ``S`` 6 bits (per tensor: one ``(M, S)`` per job in ``cmd``). With
``NT, TT, KT`` the tile counts of :func:`sim.schedule.tiling`, ``R x C`` the array,
``P = NT*TT*KT`` passes and ``slots = NT*KT*T*R*C`` PE-cycles that hold a valid token,
per job (all on-chip counts are physical: full ``R``/``C`` lanes, as the streams carry them;
DRAM counts are the tensors' real sizes):

=========== =========================================================================
level       reads / writes
=========== =========================================================================
``pe``      weights: ``2*P*R*C`` register writes (shadow, then active on swap),
            ``slots`` reads; activations and psums: ``slots`` reads and writes each.
``acc``     psums: the accumulator bank is read and written for every non-final K pass,
            ``NT*T*(KT-1)*C`` each; params: bias read at the first K pass and ``M, S`` at
            the last (``NT*T*C`` lanes each; per tensor one ``M, S`` per vector).
``buffer``  reads = what the streams carry (``sim/streams.py``): weights ``P*R*C``,
            activations ``NT*KT*T*R``, params ``NT*C`` lanes; outputs written
            ``NT*T*C``. Buffer writes (fills) equal the DRAM reads; output-buffer reads
            (drain) equal the DRAM writes.
``dram``    see the reuse policy below. Partial sums never leave the chip: K is the
            innermost loop, so a T-tile's accumulators finish before the next starts.
=========== =========================================================================

Reuse policy (what spills to DRAM, given ``ArrayConfig.*_buffer_kib``); passes run
``for nt: for tt: for kt``:

* **weights** (weight buffer, with the params): the K x C weight column of one n-tile is
  used by every T-tile of that n-tile. If it fits (``K * min(N, C) * w_bits`` bits), each
  weight is fetched from DRAM once per job; otherwise every pass re-fetches its tile:
  ``TT`` times the weights.
* **activations** (activation buffer): every n-tile streams the whole input. If the job's
  input (``GemmWorkload.input_elems * a_bits``: the feature map for a convolution,
  expanded by im2col on the buffer's read side, ``T*K`` for a GEMM) fits, it is fetched
  once; otherwise once per n-tile (``NT`` times).
* **outputs** are written to DRAM once; **params** are read once per job.
* Layers exchange activations through DRAM (no inter-layer fusion).

Vector unit
-----------
The non-GEMM ops of an integer network (:class:`sim.workload.VectorWorkload`: LayerNorm,
softmax, GELU/SiLU tables, residual adds, pooling) run on a vector unit of
``L = ArrayConfig.vector_unit_lanes`` lanes (default one per array column), one integer
operation per lane and cycle. A layer of ``ops`` operations (:data:`sim.vector.VECTOR_OPS`,
the executor's :func:`~sim.executor.vector_costs`) takes ``ceil(ops / L)`` cycles,
**serialized** with the array: each op needs whole rows of its producer's output (a score
row for softmax, a hidden row for LayerNorm) and its consumer waits for it, and layers run
one after another here, so there is no independent array work to hide it behind (an
overlapped unit would save at most these cycles). Traffic: each input element is read from
the activation buffer and each output element written to the output buffer at its
bit-width, LayerNorm's gamma / beta (``params``) read from the weight buffer at
``acc_bits``. Vector layers add **no DRAM traffic** for activations: the tensors they
read and write are the neighbouring GEMM layers' outputs and inputs, which the GEMM layers
already move through DRAM once; the vector unit works on them on chip. The exception are
embedding tables (:data:`TABLE_KINDS`), network parameters too large for a buffer: each
looked-up row is fetched from DRAM (params, ``out_bits`` per element) into the weight
buffer.

A buffer smaller than one tile — weights ``min(K,R)*min(N,C)*w_bits``, activations
``min(T,D)*min(K,R)*a_bits``, outputs ``min(T,D)*min(N,C)*a_bits`` — is an error naming
the layer and the ``ArrayConfig`` field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .config import ArrayConfig
from .mapping import (
    S_BITS,
    Mapping,
    compulsory_bits,
    dram_bits,
    fixed_mapping,
    param_lane_bits,
    plan,
)
from .schedule import gemm_cycles, tiling
from .traffic import BUFFER_OF, LEVELS, OPERANDS, Access, Traffic
from .workload import GemmWorkload, NetworkTotals, VectorWorkload

__all__ = ["LEVELS", "OPERANDS", "BUFFER_OF", "Access", "Traffic", "LayerPerf", "NetworkPerf",
           "analyze_layer", "analyze_network", "param_lane_bits", "check_buffers", "check_dims",
           "JobCounts", "job_counts", "VectorPerf", "analyze_vector",
           "TABLE_KINDS"]

def _kib_bits(kib: int) -> int:
    return kib * 1024 * 8


def check_buffers(cfg: ArrayConfig, w: GemmWorkload) -> None:
    """Raise ``ValueError`` if a buffer cannot hold one tile of ``w``."""
    R, C, D = cfg.rows, cfg.cols, cfg.acc_depth
    need = {
        "weight_buffer_kib": (min(w.K, R) * min(w.N, C) * cfg.w_bits,
                              f"one {min(w.K, R)}x{min(w.N, C)} weight tile at {cfg.w_bits} bits"),
        "act_buffer_kib": (min(w.T, D) * min(w.K, R) * cfg.a_bits,
                           f"one {min(w.T, D)}x{min(w.K, R)} activation tile at "
                           f"{cfg.a_bits} bits"),
        "out_buffer_kib": (min(w.T, D) * min(w.N, C) * cfg.a_bits,
                           f"one {min(w.T, D)}x{min(w.N, C)} output tile at {cfg.a_bits} bits"),
    }
    for fld, (bits, what) in need.items():
        have = _kib_bits(getattr(cfg, fld))
        if bits > have:
            raise ValueError(f"layer {w.name!r}: ArrayConfig.{fld}={getattr(cfg, fld)} "
                             f"({have} bits) is too small for {what} ({bits} bits)")
    check_dims(cfg, w)


def check_dims(cfg: ArrayConfig, w: GemmWorkload) -> None:
    """Raise ``ValueError`` if a GEMM dimension of ``w`` exceeds ``cfg.max_dim``."""
    if max(w.T, w.K, w.N) > cfg.max_dim:
        dim = max(("T", w.T), ("K", w.K), ("N", w.N), key=lambda kv: kv[1])
        raise ValueError(f"layer {w.name!r}: GEMM dimension {dim[0]}={dim[1]} exceeds "
                         f"{cfg.max_dim} (ArrayConfig.dim_bits={cfg.dim_bits})")


@dataclass(frozen=True)
class LayerPerf:
    """One layer (``repeat`` jobs) on the accelerator. Counts cover all jobs."""

    name: str
    op: str
    T: int
    K: int
    N: int
    repeat: int
    cycles: int              # repeat * cycles_per_job
    cycles_per_job: int
    macs: int                # = busy PE-cycles
    utilization: float       # macs / (rows * cols * cycles)
    passes: int              # weight-tile passes, all jobs
    pe_slots: int            # PE-cycles holding a valid token (incl. padded lanes)
    acc_adds: int            # accumulate-stage lane additions
    requant_ops: int         # requantizer lane operations (multiply + shift + clamp)
    weights_refetched: bool  # weights crossed DRAM more than once
    acts_refetched: bool     # input crossed DRAM more than once
    traffic: Traffic
    mapping: Mapping | None = None
    jobs: int = 1            # array jobs, all groups
    compulsory_bits: int = 0  # least DRAM traffic (sim.mapping.compulsory_bits)

    @property
    def busy(self) -> int:
        return self.macs

    @property
    def dram_bits(self) -> int:
        return self.traffic.total("dram")

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "T": self.T, "K": self.K, "N": self.N,
                "repeat": self.repeat, "cycles": self.cycles,
                "cycles_per_job": self.cycles_per_job, "macs": self.macs,
                "utilization": self.utilization, "passes": self.passes,
                "pe_slots": self.pe_slots, "acc_adds": self.acc_adds,
                "requant_ops": self.requant_ops, "weights_refetched": self.weights_refetched,
                "acts_refetched": self.acts_refetched, "dram_bits": self.dram_bits,
                "compulsory_bits": self.compulsory_bits, "jobs": self.jobs,
                "mapping": None if self.mapping is None else self.mapping.to_dict(),
                "traffic_bits": self.traffic.to_dict()}


@dataclass(frozen=True)
class JobCounts:
    """On-chip counts of ONE array job ``t x K x n`` (the ``pe`` and ``acc`` levels and
    the buffers' stream reads / output writes; no DRAM)."""

    cycles: int
    passes: int
    slots: int
    acc_adds: int
    requant_ops: int
    bits: np.ndarray          # Traffic.bits layout, read-only


@lru_cache(maxsize=65536)
def job_counts(cfg: ArrayConfig, t: int, K: int, n: int, accumulate: bool = False,
               emit: bool = True, load: bool = False, raw: bool = False) -> JobCounts:
    """:class:`JobCounts` of one ``t x K x n`` job on ``cfg`` (closed form, cached); a job of
    a K-split chain reads its first partial sums from the bank (``accumulate``, no bias)
    or leaves its final sums there (not ``emit``: no requantization, no outputs). A job of
    a spilled chain reads its starting sums from the output buffer (``load``: one
    ``psum_in`` beat of ``C x acc_bits`` per output vector instead of the bias) or sends
    its final sums there unrequantized (``raw``: ``psum_out`` beats of ``C x acc_bits``
    instead of ``out`` beats); the cycles are the same."""
    R, C = cfg.rows, cfg.cols
    til = tiling(cfg, t, K, n)
    NT, KT, P = til.NT, til.KT, til.passes
    slots = NT * KT * t * R * C
    wb, ab, cb = cfg.w_bits, cfg.a_bits, cfg.acc_bits
    pl = param_lane_bits(cfg)
    ms_bits = cfg.mult_bits + S_BITS
    tr = Traffic()
    # PE registers
    tr.add("pe", "weights", reads=slots * wb, writes=2 * P * R * C * wb)
    tr.add("pe", "activations", reads=slots * ab, writes=slots * ab)
    tr.add("pe", "psums", reads=slots * cb, writes=slots * cb)
    # accumulator bank and the parameter registers feeding accumulate / requantize
    partial = NT * t * (KT - 1) * C * cb
    vec = NT * t                                         # finished output vectors
    tr.add("acc", "psums", reads=partial + accumulate * vec * C * cb,
           writes=partial + (not emit) * vec * C * cb)
    rq = emit and not raw                                # requantized outputs
    params_acc = (not (accumulate or load)) * vec * C * cb + rq * (
        vec * C * ms_bits if cfg.per_channel else vec * ms_bits)
    tr.add("acc", "params", reads=params_acc, writes=NT * C * pl)
    # on-chip buffers: what the streams carry, and the output writes
    tr.add("buffer", "weights", reads=P * R * C * wb)
    tr.add("buffer", "activations", reads=NT * KT * t * R * ab)
    tr.add("buffer", "params", reads=NT * C * pl + (0 if cfg.per_channel else ms_bits))
    tr.add("buffer", "outputs", writes=rq * vec * C * ab)
    tr.add("buffer", "psums", reads=load * vec * C * cb, writes=emit * raw * vec * C * cb)
    tr.bits.setflags(write=False)
    return JobCounts(cycles=gemm_cycles(cfg, t, K, n), passes=P, slots=slots,
                     acc_adds=NT * KT * t * C, requant_ops=rq * vec * C, bits=tr.bits)


def analyze_layer(cfg: ArrayConfig, w: GemmWorkload, mapping: Mapping | None = None
                  ) -> LayerPerf:
    """Cycles, utilization, operation counts and per-operand traffic (bits) of one layer
    under ``mapping`` (``None``: the fixed nest, :func:`sim.mapping.fixed_mapping`).

    The mapping's jobs run one after another (``cycles`` = the sum of their
    :func:`sim.schedule.gemm_cycles`); on-chip counts are the sums of the jobs'
    :func:`job_counts`; DRAM traffic is :func:`sim.mapping.dram_bits`. The mapping is not
    checked against the buffers here (:func:`sim.mapping.buffer_needs`; the mapper only
    returns mappings that fit); the fixed nest is (:func:`check_buffers`)."""
    if mapping is None:
        check_buffers(cfg, w)
        m = fixed_mapping(cfg, w)
    else:
        check_dims(cfg, w)
        m = mapping
    p = plan(w, m)
    bits = np.zeros_like(Traffic().bits)
    cyc = passes = slots = adds = rq = 0
    for shape, count in p.shapes:
        jc = job_counts(cfg, *shape)
        bits += count * jc.bits
        cyc += count * jc.cycles
        passes += count * jc.passes
        slots += count * jc.slots
        adds += count * jc.acc_adds
        rq += count * jc.requant_ops
    tr = Traffic(bits)
    dram = dram_bits(cfg, w, m)
    if m.params == "stream":            # DRAM -> parameter FIFO: no buffer fill or read
        tr.bits[LEVELS.index("buffer"), OPERANDS.index("params")] = 0
    for op in ("weights", "activations", "params"):
        tr.add("dram", op, reads=dram[op])
        if op != "params" or m.params != "stream":
            tr.add("buffer", op, writes=dram[op])         # fills
    tr.add("dram", "outputs", writes=dram["outputs"])
    tr.add("buffer", "outputs", reads=dram["outputs"])    # drain
    rep = w.repeat
    macs = w.macs
    cycles = rep * cyc
    return LayerPerf(name=w.name, op=w.op, T=w.T, K=w.K, N=w.N, repeat=rep, cycles=cycles,
                     cycles_per_job=cyc, macs=macs,
                     utilization=macs / (cfg.rows * cfg.cols * cycles), passes=rep * passes,
                     pe_slots=rep * slots, acc_adds=rep * adds, requant_ops=rep * rq,
                     weights_refetched=dram["weights"] > w.K * w.N * cfg.w_bits,
                     acts_refetched=dram["activations"] > w.input_elems * cfg.a_bits,
                     traffic=tr * rep, mapping=m, jobs=rep * p.jobs,
                     compulsory_bits=compulsory_bits(cfg, w))


@dataclass(frozen=True)
class VectorPerf:
    """One vector-unit layer on the accelerator (see *Vector unit* above)."""

    name: str
    kind: str
    ops: int                 # integer operations (sim.vector.VECTOR_OPS)
    reads: int               # elements read (inputs and params)
    writes: int              # elements written
    lanes: int
    cycles: int              # ceil(ops / lanes)
    counts: dict             # VECTOR_OPS term -> occurrences (VectorWorkload.counts)
    in_bits: tuple[int, ...]
    out_bits: int
    traffic: Traffic

    @property
    def macs(self) -> int:
        return 0

    @property
    def buffer_bits(self) -> int:
        return self.traffic.total("buffer")

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "ops": self.ops, "reads": self.reads,
                "writes": self.writes, "lanes": self.lanes, "cycles": self.cycles,
                "in_bits": list(self.in_bits), "out_bits": self.out_bits,
                "buffer_bits": self.buffer_bits, "traffic_bits": self.traffic.to_dict()}


#: vector-unit kinds that read a parameter table from DRAM (one element per output element)
TABLE_KINDS = ("embedding", "position_embedding")


def analyze_vector(cfg: ArrayConfig, v: VectorWorkload) -> VectorPerf:
    """Cycles, operations and buffer traffic (bits) of one vector-unit layer on ``cfg``:
    ``ceil(ops / vector_unit_lanes)`` cycles; inputs read at their widths (``v.in_bits``,
    default ``a_bits``), outputs written at ``v.out_bits`` (default ``a_bits``), params at
    ``acc_bits``; no DRAM, except the rows an embedding fetches (:data:`TABLE_KINDS`)."""
    c = v.cost
    lanes = cfg.vector_unit_lanes
    in_bits = v.in_bits or (cfg.a_bits,) * len(v.in_shapes)
    out_bits = v.out_bits or cfg.a_bits
    tr = Traffic()
    tr.add("buffer", "activations",
           reads=sum(math.prod(s) * b for s, b in zip(v.in_shapes, in_bits)))
    tr.add("buffer", "params", reads=v.params * cfg.acc_bits)
    tr.add("buffer", "outputs", writes=c.writes * out_bits)
    if v.kind in TABLE_KINDS:
        fetched = c.writes * out_bits
        tr.add("dram", "params", reads=fetched)
        tr.add("buffer", "params", reads=fetched, writes=fetched)
    tr.bits.setflags(write=False)
    return VectorPerf(name=v.name, kind=v.kind, ops=c.ops, reads=c.reads, writes=c.writes,
                      lanes=lanes, cycles=-(-c.ops // lanes), counts=v.counts(),
                      in_bits=tuple(in_bits), out_bits=out_bits, traffic=tr)


@dataclass(frozen=True)
class NetworkPerf(NetworkTotals):
    """Per-layer results and totals of a network (layers run one after another); the
    vector-unit layers (``vectors``) run between them, serialized with the array."""

    cfg: ArrayConfig
    layers: tuple[LayerPerf, ...]
    vectors: tuple[VectorPerf, ...] = ()

    @property
    def pe_count(self) -> int:
        return self.cfg.rows * self.cfg.cols

    @property
    def array_cycles(self) -> int:
        return sum(lp.cycles for lp in self.layers)

    @property
    def vector_cycles(self) -> int:
        return sum(vp.cycles for vp in self.vectors)

    @property
    def cycles(self) -> int:
        return self.array_cycles + self.vector_cycles

    @property
    def traffic(self) -> Traffic:
        total = Traffic()
        for lp in (*self.layers, *self.vectors):
            total = total + lp.traffic
        return total

    @property
    def dram_bits(self) -> int:
        return self.traffic.total("dram")

    @property
    def compulsory_bits(self) -> int:
        return sum(lp.compulsory_bits for lp in self.layers)

    def totals(self) -> dict:
        return {"layers": len(self.layers), "cycles": self.cycles, "macs": self.macs,
                "utilization": self.utilization, "dram_bits": self.dram_bits,
                "compulsory_bits": self.compulsory_bits,
                "pe_slots": sum(lp.pe_slots for lp in self.layers),
                "acc_adds": sum(lp.acc_adds for lp in self.layers),
                "requant_ops": sum(lp.requant_ops for lp in self.layers),
                "array_cycles": self.array_cycles, "vector_cycles": self.vector_cycles,
                "vector_ops": sum(vp.ops for vp in self.vectors),
                "vector_buffer_bits": sum(vp.buffer_bits for vp in self.vectors),
                "vector_lanes": self.cfg.vector_unit_lanes,
                "traffic_bits": self.traffic.to_dict()}

    def to_dict(self) -> dict:
        return {"config": self.cfg.to_dict(), "model": "analytic",
                "layers": [lp.to_dict() for lp in self.layers],
                "vector_unit": [vp.to_dict() for vp in self.vectors], "totals": self.totals()}


def analyze_network(cfg: ArrayConfig, gemms: Iterable[GemmWorkload] | Sequence[GemmWorkload],
                    mapper: Callable[[ArrayConfig, GemmWorkload], Mapping] | None = None,
                    vectors: Iterable[VectorWorkload] = ()) -> NetworkPerf:
    """:func:`analyze_layer` on every workload, in order, each under ``mapper(cfg, w)``
    (``None``: the fixed nest; e.g. :func:`sim.mapper.search_mapping`), and
    :func:`analyze_vector` on every vector-unit workload."""
    layers = tuple(analyze_layer(cfg, g, None if mapper is None else mapper(cfg, g))
                   for g in gemms)
    if not layers:
        raise ValueError("analyze_network: no layers")
    return NetworkPerf(cfg=cfg, layers=layers,
                       vectors=tuple(analyze_vector(cfg, v) for v in vectors))
