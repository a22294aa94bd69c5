"""The per-layer mapper: exhaustive search over a pruned space of :class:`sim.mapping.Mapping`.

Space, per layer (one group job):

* slab sizes ``t_tile``: for a convolution whole output rows -- the divisors and powers of
  two of ``batch * out_h`` rows, and all of them; for a GEMM the divisors of ``T``,
  ``acc_depth`` times powers of two, and ``T``;
* weight tiles ``n_tile``: ``cols`` times the divisors and powers of two of
  ``ceil(N / cols)``, and ``N``;
* the loop orders ``slab_outer`` / ``n_outer`` with the residencies that differ in cost:
  ``slab_outer`` x weights ``layer | tile | pass`` x inputs ``slab | pass``, and
  ``n_outer`` x weights ``tile | pass`` x inputs ``layer | slab | pass``;
* K-splitting: a chain holds less than a whole-K job only in two places -- the weight
  column of ``slab_outer`` x weights ``tile`` and the input slab of ``n_outer`` x inputs
  ``slab`` -- and otherwise moves the same DRAM traffic in more jobs. So for those four
  combinations, where the whole-K mapping overflows a buffer and the pair's sums fit the
  accumulator bank (``t * ceil(n / cols) <= acc_depth``), the space holds the largest
  ``k_tile`` that fits, from ``rows`` times the divisors and powers of two of
  ``ceil(K / rows)`` (a convolution's also whole input channels: multiples of
  ``lcm(rows, kh * kw)``), below ``K`` -- and also the largest fitting one of whole
  input channels (a chunk boundary inside a channel reads it twice). Where the pair's
  sums fit the output buffer at ``acc_bits`` (``t * n * acc_bits``) and the bank is too
  small or a partial-sum bit costs more there, the chain *spills* them to the output
  buffer instead (``psums = "buffer"``: raw sums out, loaded back by the next job);
* params: a mapping is also tried with streamed params (``params = "stream"``: never
  held with the weights, read from DRAM by every job) where held ones overflow only the
  weight buffer, or where streaming reads no more params from DRAM (a whole-K job whose
  weights are re-read per slab anyway, or a single slab): it then skips the weight buffer.

Every candidate is costed by the analytic model's own counts (:func:`sim.analytic.job_counts`
per job shape, :func:`sim.mapping.dram_bits`) priced by the energy model; candidates whose
:func:`sim.mapping.buffer_needs` exceed a buffer are never returned. The objective is
``energy`` (pJ), ``latency`` (cycles; energy breaks ties) or ``edp`` (their product).
For ``energy`` a candidate whose DRAM energy alone reaches the best total so far is not
costed further (exact: on-chip energy is positive).
Results are cached by (layer shape, configuration, objective, energy table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from .analytic import check_dims, job_counts
from .config import ArrayConfig
from .energy import (
    EnergyTable,
    LayerCounts,
    acc_bank_bit_pj,
    buffer_bytes,
    default_table,
    layer_energy,
)
from .mapping import Mapping, buffer_needs, dram_bits, plan
from .traffic import LEVELS, OPERANDS
from .validate import check_choice
from .workload import GemmWorkload

__all__ = ["OBJECTIVES", "MAPPINGS", "MapperResult", "candidate_mappings", "search_mapping",
           "search_layer", "choose_mapping"]

OBJECTIVES = ("energy", "edp", "latency")
#: how a layer is mapped: the fixed nest or the searched mapping
MAPPINGS = ("fixed", "search")

_COMBOS = ([("slab_outer", wr, xr) for wr in ("layer", "tile", "pass")
            for xr in ("slab", "pass")]
           + [("n_outer", wr, xr) for wr in ("tile", "pass")
              for xr in ("layer", "slab", "pass")])

_WHAT = {"weight_buffer_kib": "weights", "act_buffer_kib": "activations",
         "out_buffer_kib": "outputs"}
_LEAST = {"weight_buffer_kib": "one rows x cols weight tile and its channels' params",
          "act_buffer_kib": "one acc_depth x rows activation tile of the smallest slab",
          "out_buffer_kib": "one acc_depth x cols output tile of the smallest slab"}


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _pow2_upto(n: int, start: int = 1) -> list[int]:
    out, v = [], start
    while v <= n:
        out.append(v)
        v *= 2
    return out


def _t_tiles(cfg: ArrayConfig, w: GemmWorkload) -> list[int]:
    g = w.geometry
    if g is not None and g.out_h and g.out_w:
        rows = w.T // g.out_w
        return sorted({r * g.out_w for r in _divisors(rows) + _pow2_upto(rows)} | {w.T})
    return sorted(set(_divisors(w.T)) | {t for t in _pow2_upto(w.T, cfg.acc_depth)} | {w.T})


def _n_tiles(cfg: ArrayConfig, w: GemmWorkload) -> list[int]:
    nt = -(-w.N // cfg.cols)
    return sorted({min(w.N, m * cfg.cols) for m in _divisors(nt) + _pow2_upto(nt)} | {w.N})


def _k_tiles(cfg: ArrayConfig, w: GemmWorkload) -> list[int]:
    kt = -(-w.K // cfg.rows)
    out = {m * cfg.rows for m in _divisors(kt) + _pow2_upto(kt)}
    g = w.geometry
    if g is not None and g.out_h and g.out_w and g.kh * g.kw > 1:
        step = math.lcm(cfg.rows, g.kh * g.kw)
        out |= {step * m for m in _pow2_upto(w.K // step)}
    return sorted(k for k in out if k < w.K)


#: the (order, weights, inputs) combinations where a K split holds less than whole K
_SPLIT_COMBOS = frozenset(c for c in _COMBOS if c[0] == "slab_outer" and c[1] == "tile"
                          or c[0] == "n_outer" and c[2] == "slab")


def _fits(cfg: ArrayConfig, w: GemmWorkload, m: Mapping) -> bool:
    return all(b <= getattr(cfg, f) * 8192 for f, b in buffer_needs(cfg, w, m).items())


def _over(cfg: ArrayConfig, need: dict) -> set[str]:
    """The buffers a :func:`sim.mapping.buffer_needs` result overflows."""
    return {f for f, b in need.items() if b > getattr(cfg, f) * 8192}


def _streamed(cfg: ArrayConfig, w: GemmWorkload, m: Mapping, over: set[str]):
    """``m`` (held params, overflowing the buffers ``over``) with streamed params, if that
    fits and either the held one does not or streaming reads no more params from DRAM
    (it then also skips the weight buffer); else ``None``."""
    if not over:
        # streamed: every job reads its params (slabs x chunks per channel); held: as
        # often as the weights (sim.mapping.dram_bits) -- at least as often only for
        # whole-K jobs whose weights are read per slab anyway (or of a single slab)
        if m.splits(w) or not (m.weights == "pass" or m.order == "slab_outer" and
                               m.weights == "tile" or m.t_tile >= w.T):
            return None
    elif over != {"weight_buffer_kib"}:     # streaming frees only the weight buffer
        return None
    ms = replace(m, params="stream")
    return ms if _fits(cfg, w, ms) else None


def _aligned_k(cfg: ArrayConfig, w: GemmWorkload) -> int:
    """``k_tile`` step of chunks made of whole input channels (``lcm(rows, kh * kw)``;
    ``rows`` for a GEMM or a 1x1 convolution)."""
    g = w.geometry
    if g is not None and g.out_h and g.out_w and g.kh * g.kw > 1:
        return math.lcm(cfg.rows, g.kh * g.kw)
    return cfg.rows


def _chains(cfg: ArrayConfig, w: GemmWorkload, m: Mapping, ks: list[int], fmax: int,
            psums: str) -> list[Mapping]:
    """K-split chains of ``m``'s tiles and residencies keeping their sums in ``psums``:
    for held and for streamed params, the largest fitting ``k_tile`` and the largest
    fitting one of whole input channels (a chunk boundary inside a channel reads it
    twice)."""
    C = cfg.cols
    wcap, acap = cfg.weight_buffer_kib * 8192, cfg.act_buffer_kib * 8192
    n = min(m.n_tile, w.N)
    step = _aligned_k(cfg, w)
    found: dict = {}                     # (params, whole channels) -> mapping
    for k in ks:                         # descending
        # cheap lower bounds of the chunk's holds first (a chunk reads at least its share
        # k / K of the slab)
        if m.weights == "tile" and m.order == "slab_outer" and \
                k * min(n, C) * cfg.w_bits > wcap:
            continue
        if m.inputs == "slab" and m.order == "n_outer" and fmax * k * cfg.a_bits > acap * w.K:
            continue
        mk = replace(m, k_tile=k, psums=psums)
        over = _over(cfg, buffer_needs(cfg, w, mk))
        for v in (mk if not over else None, _streamed(cfg, w, mk, over)):
            if v is None:
                continue
            for key in ((v.params, False), (v.params, True)):
                if key not in found and (not key[1] or k % step == 0):
                    found[key] = v
        if ("held", True) in found:      # smaller chunks fit too, and cost more
            break
    return list(dict.fromkeys(found.values()))


def _spill_cheaper(cfg: ArrayConfig, table: EnergyTable) -> bool:
    """A partial-sum bit costs less in the output buffer than in the accumulator bank."""
    out = buffer_bytes(cfg, "psums")
    return (table.sram_bit_pj(out) + table.sram_bit_pj(out, write=True)
            < acc_bank_bit_pj(cfg, table) + acc_bank_bit_pj(cfg, table, write=True))


def candidate_mappings(cfg: ArrayConfig, w: GemmWorkload, k_split: bool = True,
                       table: EnergyTable | None = None):
    """Every mapping of the pruned space for ``w``: whole-K ones fitting the buffers or
    not, each also with streamed params where that fits and held ones do not, or read
    no fewer params from DRAM; and (``k_split``) K-split chains (see the module
    docstring) only where they fit -- spilled ones where the bank is too small, or where
    a partial-sum bit costs less in the output buffer than in the bank (``table``)."""
    ks = _k_tiles(cfg, w)[::-1] if k_split else []
    C = cfg.cols
    ocap = cfg.out_buffer_kib * 8192
    spill_cheaper = _spill_cheaper(cfg, default_table() if table is None else table)
    for t in _t_tiles(cfg, w):
        for n in _n_tiles(cfg, w):
            bank = t * -(-n // C) <= cfg.acc_depth
            spill = t * n * cfg.acc_bits <= ocap and (spill_cheaper or not bank)
            homes = [h for h, ok in (("bank", bank), ("buffer", spill)) if ok]
            for order, wr, xr in _COMBOS:
                m = Mapping(t_tile=t, n_tile=n, order=order, weights=wr, inputs=xr)
                yield m
                over = _over(cfg, buffer_needs(cfg, w, m))
                ms = _streamed(cfg, w, m, over)
                if ms is not None:
                    yield ms
                if not over or ms is not None or not ks or (order, wr, xr) not in _SPLIT_COMBOS:
                    continue
                fmax = plan(w, m).footprint_max
                for home in homes:
                    yield from _chains(cfg, w, m, ks, fmax, home)


@dataclass(frozen=True)
class MapperResult:
    """The best mapping of a layer and what the search measured of it (one group job)."""

    mapping: Mapping
    energy_pj: float
    cycles: int
    dram_bits: int
    candidates: int          # mappings costed
    fitting: int             # of which fit the buffers


@lru_cache(maxsize=256)
def _unit_prices(cfg: ArrayConfig, table: EnergyTable) -> tuple[float, float, float, np.ndarray]:
    """The energy model's (linear) prices on ``cfg``: pJ per MAC, per accumulator update,
    per requantized output, and per bit of every ``(level, operand, read/write)`` of
    :class:`sim.traffic.Traffic` -- :func:`sim.energy.layer_energy` of unit counts."""
    def one(**kw) -> float:
        kw = {"macs": 0, "acc_updates": 0, "outputs": 0, "bits": {}} | kw
        return layer_energy(cfg, LayerCounts(name="unit", **kw), table).total_pj

    bits = np.zeros((len(LEVELS), len(OPERANDS), 2))
    for i, lv in enumerate(LEVELS):
        for j, op in enumerate(OPERANDS):
            for k, rw in enumerate(("read", "write")):
                bits[i, j, k] = one(bits={f"{lv}.{op}.{rw}": 1})
    return one(macs=1), one(acc_updates=1), one(outputs=1), bits


@lru_cache(maxsize=65536)
def _job_energy(cfg: ArrayConfig, table: EnergyTable, shape: tuple,
                params_stream: bool = False) -> tuple[float, int]:
    """On-chip energy (pJ, no DRAM, no buffer fills / drain) and cycles of one job of
    :class:`sim.mapping.Plan` ``shape`` (its :func:`sim.analytic.job_counts` at the energy
    model's prices); streamed params skip the weight buffer."""
    jc = job_counts(cfg, *shape)
    per_mac, per_add, per_out, per_bit = _unit_prices(cfg, table)
    bits = jc.bits
    if params_stream:
        bits = bits.copy()
        bits[LEVELS.index("buffer"), OPERANDS.index("params")] = 0
    t, K, n = shape[:3]
    e = (t * K * n * per_mac + jc.acc_adds * per_add + jc.requant_ops * per_out
         + float((bits * per_bit).sum()))
    return e, jc.cycles


@lru_cache(maxsize=256)
def _dram_prices(cfg: ArrayConfig, table: EnergyTable) -> dict[str, float]:
    """pJ per DRAM bit of each operand, including its buffer fill (or output drain)."""
    d = table.dram_bit_pj()
    out = {op: d + table.sram_bit_pj(buffer_bytes(cfg, op), write=True)
           for op in ("weights", "activations", "params")}
    out["outputs"] = d + table.sram_bit_pj(buffer_bytes(cfg, "outputs"))
    out["params_stream"] = d                    # DRAM -> parameter FIFO
    return out


def _score(objective: str, energy: float, cycles: int) -> tuple:
    if objective == "energy":
        return (energy, cycles)
    if objective == "latency":
        return (cycles, energy)
    return (energy * cycles, energy)


@lru_cache(maxsize=16384)
def _search(cfg: ArrayConfig, w: GemmWorkload, geometry, objective: str, table: EnergyTable,
            k_split: bool = True) -> MapperResult:
    # ``geometry`` is part of the cache key: GemmWorkload's hash leaves it out
    caps = {f: getattr(cfg, f) * 8192 for f in _WHAT}
    prices = _dram_prices(cfg, table)
    best = best_key = None
    n_cand = n_fit = 0
    least = dict.fromkeys(caps, None)
    for m in candidate_mappings(cfg, w, k_split, table):
        n_cand += 1
        need = buffer_needs(cfg, w, m)
        over = False
        for f, b in need.items():
            if least[f] is None or b < least[f]:
                least[f] = b
            over = over or b > caps[f]
        if over:
            continue
        n_fit += 1
        dram = dram_bits(cfg, w, m)
        ps = m.params == "stream"
        dram_pj = sum(prices["params_stream" if ps and op == "params" else op] * b
                      for op, b in dram.items())
        if objective == "energy" and best_key is not None and dram_pj >= best_key[0]:
            continue            # the DRAM alone costs more than the best mapping's total
        energy, cycles = 0.0, 0
        for shape, count in plan(w, m).shapes:
            e, c = _job_energy(cfg, table, shape, ps)
            energy += count * e
            cycles += count * c
        energy += dram_pj       # summed in this order so that equal costs tie exactly
        key = _score(objective, energy, cycles)
        if best_key is None or key < best_key:
            best_key = key
            best = (m, energy, cycles, sum(dram.values()))
    if best is None:
        f = next(f for f in caps if least[f] > caps[f])
        raise ValueError(f"no mapping fits: the {_WHAT[f]} need at least {least[f]} bits "
                         f"({_LEAST[f]}) but ArrayConfig.{f}={getattr(cfg, f)} holds "
                         f"{caps[f]} bits")
    m, energy, cycles, dram = best
    return MapperResult(mapping=m, energy_pj=energy, cycles=cycles, dram_bits=dram,
                        candidates=n_cand, fitting=n_fit)


def search_layer(cfg: ArrayConfig, w: GemmWorkload, objective: str = "energy",
                 table: EnergyTable | None = None, k_split: bool = True) -> MapperResult:
    """The best fitting mapping of ``w`` on ``cfg`` for ``objective`` (cached by layer
    shape and configuration); ``k_split=False`` leaves K-split chains out. ``ValueError``
    naming the layer, the operand and the buffer when not even one array tile fits."""
    check_choice("search_mapping", "objective", objective, OBJECTIVES)
    check_dims(cfg, w)
    shape = GemmWorkload(name="layer", T=w.T, K=w.K, N=w.N, op=w.op, geometry=w.geometry,
                         input_elems=w.input_elems)
    try:
        return _search(cfg, shape, shape.geometry, objective,
                       default_table() if table is None else table, bool(k_split))
    except ValueError as exc:
        raise ValueError(f"layer {w.name!r}: {exc}") from None


def search_mapping(cfg: ArrayConfig, w: GemmWorkload, objective: str = "energy",
                   table: EnergyTable | None = None) -> Mapping:
    """:func:`search_layer`'s mapping (a ``mapper`` for :func:`sim.analytic.analyze_network`)."""
    return search_layer(cfg, w, objective, table).mapping


def choose_mapping(cfg: ArrayConfig, w: GemmWorkload, mapping: str = "search",
                   objective: str = "energy", table: EnergyTable | None = None
                   ) -> Mapping | None:
    """``None`` (the fixed nest, for :func:`sim.analytic.analyze_layer`) for ``mapping =
    "fixed"``, else :func:`search_mapping`'s choice for ``objective``."""
    check_choice("choose_mapping", "mapping", mapping, MAPPINGS)
    check_choice("choose_mapping", "objective", objective, OBJECTIVES)
    return None if mapping == "fixed" else search_mapping(cfg, w, objective, table)
