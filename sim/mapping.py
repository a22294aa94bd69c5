"""A layer's mapping: how its GEMM is cut into array jobs and what stays in the buffers.

The array runs :class:`sim.job.GemmJob` jobs, each with its own fixed pass nest
``for nt: for tt: for kt`` (:mod:`sim.schedule`). A :class:`Mapping` is the host-side
schedule around them, for one GEMM job of a layer (a grouped layer repeats it per group):

* **tiles** -- the output pixels ``T`` are cut into *slabs* of ``t_tile`` rows of the
  im2col matrix (for a convolution a multiple of ``out_w``: whole output rows, whose input
  rows plus the kernel's halo are the slab's DRAM footprint,
  :meth:`sim.workload.ConvGeometry.slab_elems`), the output channels ``N`` into
  ``n_tile``-wide weight tiles. One job computes one (slab, weight tile) pair with the
  whole reduction ``K`` -- or, with ``k_tile`` (K-splitting), a *chain* of jobs, one per
  ``k_tile`` rows of the weights, run back to back: the partial sums stay in the
  accumulator bank between them (:class:`sim.job.GemmJob` ``accumulate`` / ``emit``; the
  chain's ``t x ceil(n / cols)`` sums must fit the bank's ``acc_depth`` entries), or in
  the output buffer (``psums = "buffer"``, below); partial sums never go to DRAM. A chunk
  of a convolution's ``K = (c, kh, kw)`` reads the input channels it touches.
* **loop order** -- ``"slab_outer"`` (``for slab: for n-tile: job``) or ``"n_outer"``
  (``for n-tile: for slab: job``).
* **residency** -- what each buffer holds:

  ========== ========== ==============================================================
  operand    residency  meaning (DRAM traffic)
  ========== ========== ==============================================================
  weights    ``layer``  all ``K x N`` weights (and params) stay for the layer: read once
  weights    ``tile``   the job's weight tile stays while it is used: once per job
                        (``slab_outer``) or once per n-tile across all slabs (``n_outer``)
  weights    ``pass``   the weights stream pass by pass: once per internal T-tile of a
                        job (``ceil(t / acc_depth)`` times per job; once per chain in the
                        bank, ``ceil(t / acc_depth)`` times per spilled chain)
  inputs     ``layer``  the layer's whole input footprint stays: read once
  inputs     ``slab``   a slab stays while its jobs use it: once per slab
                        (``slab_outer``) or once per slab and n-tile (``n_outer``; with
                        ``k_tile`` only the job's chunk of the slab is held)
  inputs     ``pass``   the slab (chunk) streams once per internal n-tile of each job
  params     ``held``   bias (and per-channel ``M, S``) travel with the weights and share
                        the weight buffer: read as often as the weights' residency says
                        (a chain keeps its ``n`` channels' params while it runs)
  params     ``stream`` never in the weight buffer: every job reads its n-tile's params
                        from DRAM straight into the parameter FIFO (frees the buffer for
                        weights that fill it exactly)
  psums      ``bank``   a K-split chain keeps its sums in the accumulator bank
  psums      ``buffer`` a *spilled* chain keeps its ``t x n`` sums in the output buffer at
                        ``acc_bits``: each job but the last sends them raw (``psum_out``),
                        each but the first loads them (``psum_in``); no bank limit, no DRAM
  ========== ========== ==============================================================

  Outputs are written once; per tensor, one ``(M, S)`` per job travels in its ``cmd``.

:func:`fixed_mapping` is the nest every layer used before mappings existed (one job; the
input re-fetched per n-tile when it does not fit) -- the one SCALE-Sim compatibility and
the cycle-exact contract tests are written against. :func:`buffer_needs` gives the bits
each buffer must hold, :func:`dram_bits` the DRAM traffic in closed form and
:func:`mapping_steps` the explicit ordered list of transfers and jobs the cycle model
executes (:func:`sim.cycle.run_mapping`). The search lives in :mod:`sim.mapper`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from .config import ArrayConfig
from .validate import check_choice, check_int, fail
from .workload import GemmWorkload

__all__ = ["ORDERS", "WEIGHT_RESIDENCY", "INPUT_RESIDENCY", "PARAMS_RESIDENCY",
           "PSUM_RESIDENCY", "Mapping", "Plan", "plan",
           "fixed_mapping", "buffer_needs", "dram_bits", "compulsory_bits", "mapping_steps",
           "Step", "param_lane_bits", "S_BITS", "check_bank"]

ORDERS = ("slab_outer", "n_outer")
WEIGHT_RESIDENCY = ("layer", "tile", "pass")
INPUT_RESIDENCY = ("layer", "slab", "pass")
PARAMS_RESIDENCY = ("held", "stream")
PSUM_RESIDENCY = ("bank", "buffer")
#: width of the requantizer shift ``S``
S_BITS = 6


def param_lane_bits(cfg: ArrayConfig) -> int:
    """Bits of one output channel's params beat lane: bias, plus ``M, S`` per channel."""
    return cfg.acc_bits + (cfg.mult_bits + S_BITS if cfg.per_channel else 0)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Mapping:
    """Tiles, loop order and residency of one layer (see the module docstring).

    Parameters
    ----------
    t_tile : int
        Output pixels (im2col rows) per input slab, ``1..T``; a convolution's slabs are
        whole output rows (a multiple of ``out_w``) or all of ``T``.
    n_tile : int
        Output channels per job, ``1..N``.
    order : str
        ``"slab_outer"`` or ``"n_outer"``.
    weights : str
        Weight residency: ``"layer"``, ``"tile"`` or ``"pass"``.
    inputs : str
        Input residency: ``"layer"``, ``"slab"`` or ``"pass"``.
    k_tile : int
        Reduction rows per job of a K-split chain; 0 (or ``>= K``): one job per pair with
        the whole ``K``.
    params : str
        ``"held"``: the params of the channels the weight buffer serves are kept there with
        the weights; ``"stream"``: they never occupy the weight buffer -- every job reads
        its n-tile's params beats from DRAM straight into the parameter FIFO.
    psums : str
        Where a K-split chain keeps its partial sums between jobs: ``"bank"`` (the
        accumulator bank, ``t_tile * ceil(n_tile / cols) <= acc_depth``) or ``"buffer"``
        (the output buffer at ``acc_bits``: each job but the last sends its sums *raw*,
        each but the first *loads* its starting sums -- no bank limit).
    """

    t_tile: int
    n_tile: int
    order: str = "slab_outer"
    weights: str = "tile"
    inputs: str = "slab"
    k_tile: int = 0
    params: str = "held"
    psums: str = "bank"

    def __post_init__(self):
        check_int("Mapping", "t_tile", self.t_tile, 1)
        check_int("Mapping", "n_tile", self.n_tile, 1)
        check_choice("Mapping", "order", self.order, ORDERS)
        check_choice("Mapping", "weights", self.weights, WEIGHT_RESIDENCY)
        check_choice("Mapping", "inputs", self.inputs, INPUT_RESIDENCY)
        check_int("Mapping", "k_tile", self.k_tile, 0)
        check_choice("Mapping", "params", self.params, PARAMS_RESIDENCY)
        check_choice("Mapping", "psums", self.psums, PSUM_RESIDENCY)

    def splits(self, w: GemmWorkload) -> bool:
        """The jobs are K-split chains on ``w``."""
        return 0 < self.k_tile < w.K

    def spills(self, w: GemmWorkload) -> bool:
        """The jobs are K-split chains passing their partial sums through the output
        buffer (``psums = "buffer"``) on ``w``."""
        return self.psums == "buffer" and self.splits(w)

    def check(self, w: GemmWorkload) -> None:
        """Raise ``ValueError`` naming the layer and the field if the tiles do not fit
        ``w``'s shape."""
        owner = f"Mapping(layer {w.name!r})"
        check_int(owner, "t_tile", self.t_tile, 1, w.T)
        check_int(owner, "n_tile", self.n_tile, 1, w.N)
        g = w.geometry
        if g is not None and g.out_w and self.t_tile % g.out_w and self.t_tile != w.T:
            raise fail(owner, "t_tile", f"a multiple of out_w = {g.out_w} (whole output "
                       f"rows) or T = {w.T}", self.t_tile)

    def to_dict(self) -> dict:
        return {"t_tile": self.t_tile, "n_tile": self.n_tile, "order": self.order,
                "weights": self.weights, "inputs": self.inputs, "k_tile": self.k_tile,
                "params": self.params, "psums": self.psums}

    def label(self) -> str:
        """Short text, e.g. ``t196 n64 slab_outer W:tile A:slab`` (``k288`` when K-split,
        ``P:stream`` for streamed params, ``S:buffer`` for sums spilled to the output
        buffer)."""
        k = f" k{self.k_tile}" if self.k_tile else ""
        extra = (" P:stream" if self.params == "stream" else "") + \
            (" S:buffer" if self.psums == "buffer" and self.k_tile else "")
        return (f"t{self.t_tile} n{self.n_tile}{k} {self.order} W:{self.weights} "
                f"A:{self.inputs}{extra}")


def _slab_footprint(w: GemmWorkload, t0: int, t1: int) -> int:
    """Input elements a slab of im2col rows ``t0 .. t1-1`` reads from DRAM."""
    g = w.geometry
    if g is None or not (g.out_h and g.out_w):
        return (t1 - t0) * w.K if w.input_elems == w.T * w.K else \
            _ceil_div(w.input_elems * (t1 - t0), w.T)
    return g.slab_elems(t0 // g.out_w, _ceil_div(t1, g.out_w))


def _chunk_feet(w: GemmWorkload, foot: int, chunks: tuple[int, ...]) -> tuple[int, ...]:
    """Input elements each K chunk of a slab with footprint ``foot`` reads: a convolution's
    ``K = (c, kh, kw)`` chunk reads the channels it touches; a GEMM its columns."""
    if len(chunks) == 1:
        return (foot,)
    g = w.geometry
    out, k0 = [], 0
    if g is not None and g.out_h and g.out_w:
        taps, per_ch = g.kh * g.kw, foot // (g.in_ch // g.groups)
        for k in chunks:
            out.append((((k0 + k - 1) // taps) - (k0 // taps) + 1) * per_ch)
            k0 += k
        return tuple(out)
    return tuple(_ceil_div(foot * k, w.K) for k in chunks)


@dataclass(frozen=True)
class Plan:
    """What a mapping means for one workload: slab lengths and footprints, n-tile widths,
    the K chunks of a chain (``(K,)`` unsplit) with each slab's chunk footprints, and the
    job shapes ``(t, k, n, accumulate, emit, load, raw) -> count`` it runs (per group job;
    a bank chain's jobs accumulate / do not emit, a spilled chain's load / send raw sums,
    :class:`sim.job.GemmJob`)."""

    slabs: tuple[tuple[int, int], ...]      # (t, footprint elements)
    ntiles: tuple[int, ...]
    shapes: tuple[tuple[tuple[int, int, int, bool, bool], int], ...]
    chunks: tuple[int, ...] = ()
    chunk_feet: tuple[tuple[int, ...], ...] = ()   # per slab, per chunk
    footprint_sum: int = 0
    footprint_max: int = 0
    chunk_foot_sum: int = 0
    chunk_foot_max: int = 0

    @property
    def jobs(self) -> int:
        return len(self.slabs) * len(self.ntiles) * len(self.chunks)


@lru_cache(maxsize=32768)
def _slabs(w: GemmWorkload, geometry, t_tile: int) -> tuple[tuple[int, int], ...]:
    T = w.T
    return tuple((min(T, t0 + t_tile) - t0, _slab_footprint(w, t0, min(T, t0 + t_tile)))
                 for t0 in range(0, T, t_tile))


@lru_cache(maxsize=32768)
def _plan(w: GemmWorkload, geometry, t_tile: int, n_tile: int, k_tile: int,
          spill: bool = False) -> Plan:
    N, K = w.N, w.K
    slabs = _slabs(w, geometry, t_tile)
    ntiles = tuple(min(N, n0 + n_tile) - n0 for n0 in range(0, N, n_tile))
    chunks = tuple(min(K, k0 + k_tile) - k0 for k0 in range(0, K, k_tile))
    last = len(chunks) - 1
    cnt = Counter()
    tc, nc = Counter(t for t, _ in slabs), Counter(ntiles)
    for t, a in tc.items():
        for n, b in nc.items():
            for c, k in enumerate(chunks):
                if spill:
                    cnt[(t, k, n, False, True, c > 0, c < last)] += a * b
                else:
                    cnt[(t, k, n, c > 0, c == last, False, False)] += a * b
    fc = Counter(f for _, f in slabs)
    feet = {f: _chunk_feet(w, f, chunks) for f in fc}
    return Plan(slabs=slabs, ntiles=ntiles, shapes=tuple(sorted(cnt.items())), chunks=chunks,
                chunk_feet=tuple(feet[f] for _, f in slabs),
                footprint_sum=sum(f * c for f, c in fc.items()), footprint_max=max(fc),
                chunk_foot_sum=sum(sum(feet[f]) * c for f, c in fc.items()),
                chunk_foot_max=max(max(v) for v in feet.values()))


def plan(w: GemmWorkload, m: Mapping) -> Plan:
    """The slabs, n-tiles, K chunks and job shapes of ``m`` on ``w`` (checked, cached)."""
    m.check(w)
    return _plan(w, w.geometry, m.t_tile, m.n_tile, m.k_tile if m.splits(w) else w.K,
                 m.spills(w))


def check_bank(cfg: ArrayConfig, w: GemmWorkload, m: Mapping) -> None:
    """``ValueError`` naming the layer and ``k_tile`` if ``m`` K-splits ``w`` with chains
    whose sums do not fit the accumulator bank (``t_tile * ceil(n_tile / cols) >
    acc_depth``; spilled chains, ``psums = "buffer"``, keep none there)."""
    if m.splits(w) and not m.spills(w):
        need = min(m.t_tile, w.T) * _ceil_div(min(m.n_tile, w.N), cfg.cols)
        if need > cfg.acc_depth:
            raise fail(f"Mapping(layer {w.name!r})", "k_tile", "0 (no K split)", m.k_tile,
                       f"a K-split chain keeps t_tile x ceil(n_tile / cols) = {need} sums in "
                       f"the {cfg.acc_depth}-entry accumulator bank")


def fixed_mapping(cfg: ArrayConfig, w: GemmWorkload) -> Mapping:
    """The fixed nest: one job (``for nt: for tt: for kt`` over the whole layer); an
    n-tile's ``K x cols`` weight column is kept if it fits, else re-fetched per pass; the
    input is kept if it fits, else re-fetched per n-tile."""
    w_fits = w.K * min(w.N, cfg.cols) * cfg.w_bits <= cfg.weight_buffer_kib * 8192
    x_fits = w.input_elems * cfg.a_bits <= cfg.act_buffer_kib * 8192
    return Mapping(t_tile=w.T, n_tile=w.N, order="n_outer",
                   weights="tile" if w_fits else "pass", inputs="slab" if x_fits else "pass")


def buffer_needs(cfg: ArrayConfig, w: GemmWorkload, m: Mapping) -> dict[str, int]:
    """Bits each buffer (``ArrayConfig`` field) must hold for ``m`` on ``w``: the
    resident operands, or one array tile where an operand streams. The weight buffer
    also holds the params of the channels its weights serve (unless they stream); the
    output buffer, a spilled chain's ``t x n`` partial sums at ``acc_bits``."""
    p = plan(w, m)
    R, C, D = cfg.rows, cfg.cols, cfg.acc_depth
    K = w.K
    k = max(p.chunks)
    wb, ab = cfg.w_bits, cfg.a_bits
    pl = 0 if m.params == "stream" else param_lane_bits(cfg)
    n, t = min(m.n_tile, w.N), min(m.t_tile, w.T)
    # a chain keeps its n channels' params; a whole-K job needs the current column's
    chain_pl = n * pl if len(p.chunks) > 1 else min(n, C) * pl
    if m.weights == "layer":
        wneed = K * w.N * wb + w.N * pl
    elif m.weights == "tile" and m.order == "n_outer" and len(p.slabs) > 1:
        wneed = K * n * wb + n * pl                  # kept across the slabs
    elif m.weights == "tile":
        wneed = k * min(n, C) * wb + chain_pl        # the job's current column
    else:
        wneed = min(k, R) * min(n, C) * wb + chain_pl
    if m.inputs == "layer":
        aneed = w.input_elems * ab
    elif m.inputs == "slab" and m.order == "slab_outer":
        aneed = p.footprint_max * ab
    elif m.inputs == "slab":
        aneed = p.chunk_foot_max * ab                # the job's chunk of the slab
    else:
        aneed = min(t, D) * min(k, R) * ab
    oneed = min(t, D) * min(n, C) * ab
    if m.spills(w):             # the last job turns each sum into its output in place
        oneed = max(oneed, t * n * cfg.acc_bits)
    return {"weight_buffer_kib": wneed, "act_buffer_kib": aneed, "out_buffer_kib": oneed}


def dram_bits(cfg: ArrayConfig, w: GemmWorkload, m: Mapping) -> dict[str, int]:
    """DRAM traffic of ONE group job in bits per operand (``weights``, ``activations``,
    ``params`` read; ``outputs`` written), closed form (see the module docstring)."""
    p = plan(w, m)
    D, C = cfg.acc_depth, cfg.cols
    W = w.K * w.N * cfg.w_bits
    S, J, KC = len(p.slabs), len(p.ntiles), len(p.chunks)
    slab_outer = m.order == "slab_outer"
    if m.weights == "layer":
        dw, pvec = W, 1
    elif m.weights == "tile":
        dw, pvec = (S * W, S) if slab_outer else (W, 1)
    else:
        dw, pvec = sum(_ceil_div(t, D) for t, _ in p.slabs) * W, S
    if m.inputs == "layer":
        dx = w.input_elems
    elif m.inputs == "slab":
        dx = p.footprint_sum if slab_outer else p.chunk_foot_sum * J
    else:
        dx = p.chunk_foot_sum * sum(_ceil_div(n, C) for n in p.ntiles)
    if m.params == "stream":                   # every job reads its n-tile's params
        pvec = S * KC
    params = pvec * w.N * param_lane_bits(cfg) + (0 if cfg.per_channel
                                                  else S * J * KC * (cfg.mult_bits + S_BITS))
    return {"weights": dw, "activations": dx * cfg.a_bits, "params": params,
            "outputs": w.T * w.N * cfg.a_bits}


def compulsory_bits(cfg: ArrayConfig, w: GemmWorkload) -> int:
    """The least DRAM traffic of the layer (all groups): every weight and every input
    element it reads fetched once, every output written once (params excluded)."""
    return w.repeat * (w.K * w.N * cfg.w_bits + w.input_elems * cfg.a_bits
                       + w.T * w.N * cfg.a_bits)


@dataclass(frozen=True)
class Step:
    """One step of a mapped layer: ``kind`` ``"load"`` (DRAM -> buffer, kept until its
    ``"evict"``), ``"stream"`` (DRAM -> buffer, consumed by the next job, holding at most
    ``hold`` bits at a time; 0: straight into the parameter FIFO), ``"keep"`` (``bits``
    produced on chip -- a spilled chain's partial sums -- held until the ``"evict"``, no
    DRAM), ``"evict"``, ``"job"`` (run slab ``slab`` x n-tile ``ntile``; ``psums``
    ``"bank"``: a K-split chain's jobs accumulate in the bank, ``"spill"``: they load /
    send raw partial sums) or ``"store"`` (outputs, buffer -> DRAM)."""

    kind: str
    operand: str = ""
    key: tuple = ()
    bits: int = 0
    hold: int = 0
    slab: int = -1
    ntile: int = -1
    psums: str = "bank"


def mapping_steps(cfg: ArrayConfig, w: GemmWorkload, m: Mapping) -> list[Step]:
    """The ordered transfers and jobs of ONE group job of ``w`` under ``m``, enumerated
    loop by loop (independently of :func:`dram_bits`'s closed form). A ``"job"`` step's
    ``key`` is ``(t0, t, n0, n, k0, k)``; the jobs of a K-split chain follow each other
    (``k0 = 0`` starts from bias, ``k0 + k = K`` emits; a spilled chain's partial sums are
    ``"keep"`` steps in the output buffer)."""
    p = plan(w, m)
    check_bank(cfg, w, m)
    R, C, D = cfg.rows, cfg.cols, cfg.acc_depth
    K, wb, ab, pl = w.K, cfg.w_bits, cfg.a_bits, param_lane_bits(cfg)
    ps = m.params == "stream"
    spill = m.spills(w)
    plh = 0 if ps else pl                                # params held with the weights
    ms = 0 if cfg.per_channel else cfg.mult_bits + S_BITS
    n0s = [sum(p.ntiles[:j]) for j in range(len(p.ntiles))]
    k0s = [sum(p.chunks[:c]) for c in range(len(p.chunks))]
    split = len(p.chunks) > 1
    out: list[Step] = []

    def weights(kind, key, wbits, pbits, whold=0, phold=0):
        out.append(Step(kind, "weights", key, wbits, hold=whold))
        if pbits:
            out.append(Step(kind, "params", key, pbits, hold=phold))

    if m.weights == "layer":
        weights("load", ("all",), K * w.N * wb, w.N * plh)
    if m.inputs == "layer":
        out.append(Step("load", "activations", ("all",), w.input_elems * ab))
    S, J = len(p.slabs), len(p.ntiles)
    pairs = ([(s, j) for s in range(S) for j in range(J)] if m.order == "slab_outer"
             else [(s, j) for j in range(J) for s in range(S)])
    kept_tile = m.weights == "tile" and m.order == "n_outer" and S > 1
    for i, (s, j) in enumerate(pairs):
        t, foot = p.slabs[s]
        n = p.ntiles[j]
        nc = min(n, C)
        if kept_tile and s == 0:                       # kept across all slabs
            weights("load", ("tile", j), K * n * wb, n * plh)
        # a chain keeps its channels' params for all its jobs
        chain_params = split and m.weights in ("tile", "pass") and not kept_tile and not ps
        if chain_params:
            out.append(Step("load", "params", ("chain", s, j), n * pl))
        if m.inputs == "slab" and m.order == "slab_outer" and j == 0:
            out.append(Step("load", "activations", ("slab", s), foot * ab))   # over n-tiles
        for c, k in enumerate(p.chunks):
            pk = 0 if chain_params or ps else n * pl
            # weights (and params) of this job
            if m.weights == "tile" and not kept_tile:  # each column kept for the job
                weights("stream", ("job", s, j, c), k * n * wb, pk, k * nc * wb, nc * pl)
            elif m.weights == "pass":                  # re-read for every T-tile
                weights("stream", ("pass", s, j, c), _ceil_div(t, D) * k * n * wb, pk,
                        min(k, R) * nc * wb, nc * pl)
            if ps:                                     # DRAM -> parameter FIFO
                out.append(Step("stream", "params", ("job", s, j, c), n * pl))
            if ms:
                out.append(Step("stream", "params", ("cmd", s, j, c), ms))
            # inputs of this job
            cf = p.chunk_feet[s][c]
            if m.inputs == "slab" and m.order == "n_outer":   # kept for this job only
                out.append(Step("stream", "activations", ("job", s, j, c), cf * ab,
                                hold=cf * ab))
            elif m.inputs == "pass":                   # re-read for every n-tile
                out.append(Step("stream", "activations", ("pass", s, j, c),
                                cf * ab * _ceil_div(n, C), hold=min(t, D) * min(k, R) * ab))
            out.append(Step("job", slab=s, ntile=j, psums="spill" if spill else "bank",
                            key=(sum(x for x, _ in p.slabs[:s]), t, n0s[j], n, k0s[c], k)))
            if spill and c == 0:                       # raw sums, reloaded by the next job
                out.append(Step("keep", "psums", ("pair", s, j), t * n * cfg.acc_bits))
        if spill:
            out.append(Step("evict", "psums", ("pair", s, j)))
        out.append(Step("store", "outputs", ("out", s, j), t * n * ab,
                        hold=min(t, D) * min(n, C) * ab))
        if chain_params:
            out.append(Step("evict", "params", ("chain", s, j)))
        nxt = pairs[i + 1] if i + 1 < len(pairs) else (None, None)
        if kept_tile and nxt[1] != j:
            out.append(Step("evict", "weights", ("tile", j)))
            if not ps:
                out.append(Step("evict", "params", ("tile", j)))
        if m.inputs == "slab" and m.order == "slab_outer" and nxt[0] != s:
            out.append(Step("evict", "activations", ("slab", s)))
    return out
