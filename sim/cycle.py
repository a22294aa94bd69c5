"""Cycle-level model of the accelerator: the machine of ``hw/README.md``, register for register.

One GEMM job is fed in as the beats of its streams (:mod:`sim.streams` order, all streams
always valid / ready) and stepped one clock at a time. Every register of the RTL pipeline
has a counterpart here:

==========================  ==============================================================
RTL                          model (numpy state, updated once per cycle)
==========================  ==============================================================
sequencer                    Python counters: pass ``p``, cycle-in-pass ``u`` (mirrors the
                             RTL's counters; ``s_{p+1} = s_p + max(L_p, R, C)``)
input skew (r regs, row r)   ``skew[field, slot, lane]``: a ring of the last ``R`` tokens;
                             row ``r`` reads the token of cycle ``now - r``
PE a / swap / valid          ``pe[field, r, c]``, shifted one column right per cycle
PE psum                      ``psum[0, r, c]`` (acc_bits, wrapped); see *kinds* below
PE w_active / w_shadow       ``w_act[r, c]``, ``w_sh[r, c]``
de-skew (C-1-c regs, col c)  ``dsk[kind, slot, c]``: ring of the last ``C`` bottom rows
tag delay line (R+C regs)    ``tags``: ring of ``R + C`` token tags
accumulator bank D x C       ``acc[kind, t_idx, c]``
parameter FIFO               ``deque`` of ``(bias, M, S)``; depth checked every push
requantizer stage 1 / 2      ``rq_in`` (sum, M, S), ``rq_prod`` (sum * M, S)
raw-sum delay 1 / 2          (a raw job) the same two slots carry the sum itself
output register              ``out_reg`` (``out``, or ``psum_out`` in a raw job)
==========================  ==============================================================

Partial-sum spill (``GemmJob.psum`` / ``raw``, :mod:`sim.streams`): a *load* job's
accumulator base on an output vector's first K pass is its ``psum_in`` beat, consumed in
that accumulate cycle (``bias`` is don't-care); a *raw* job's final sum travels the two
requantizer slots unchanged to the output register and is sent as the ``psum_out`` beat
in the cycle the ``out`` beat would be (lanes past N 0). Neither changes any timing.

A ring buffer of ``n`` entries read ``k`` slots back is exactly a chain of ``k`` registers;
it only avoids moving data. The PE grid is updated with whole-array numpy operations;
the only Python loop is over cycles.

Bookkeeping that the RTL does not need, carried so the model can report it: each lane
also carries ``kn = n_rem`` if it holds a real operand (``valid`` and ``r < K_rem``) else
0, so PE ``(r, c)`` is *busy* iff ``c < kn`` (the definition at the end of hw/README.md).
Overflow events count adder results -- PE ``psum_in + a * w`` and accumulator
``base + psum`` -- that do not fit ``acc_bits``, over busy PEs / real lanes only;
``acc_bits_needed`` is the width of the widest exact adder result.

*Kinds.* The psum, de-skew and accumulator arrays have a leading "kind" axis: kind 0 is
the acc_bits register value. If some adder *can* wrap for this job (judged from the port
widths, K and the bias), kind 1 carries the exact unwrapped value of the same register
alongside, to report ``acc_bits_needed``; otherwise the two are equal and only kind 0
exists.

Example::

    from qaccel.sim.config import ArrayConfig
    from qaccel.sim.job import random_job
    from qaccel.sim.cycle import simulate
    cfg = ArrayConfig(rows=16, cols=16)
    res = simulate(cfg, random_job(cfg, 256, 64, 64, np.random.default_rng(0)), trace=True)
    res.y, res.cycles, res.utilization, res.overflow_events, res.trace.out
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .arith import bits_for_range, rounding_term, wrap
from .config import ArrayConfig
from .job import GemmJob, spill_chain
from .schedule import PIPELINE_TAIL, gemm_cycles, params_fifo_depth, tiling
from .streams import JobBeats, job_beats, out_beats_to_matrix
from .validate import fail

__all__ = ["CycleResult", "StreamTrace", "MappedResult", "simulate", "simulate_beats",
           "simulate_chain", "run_spill_chain", "new_bank", "run_mapping"]

# lane fields carried through the skew registers and the PE grid
_A, _SWAP, _VALID, _KN = range(4)


@dataclass(frozen=True)
class StreamTrace:
    """Cycle (``cmd`` handshake = 0) at which each beat of each stream was accepted,
    in stream order."""

    act: np.ndarray            # [NT * KT * T]
    weight: np.ndarray         # [passes * rows]
    params: np.ndarray         # [NT]
    out: np.ndarray            # [NT * T] ([0] without emit or with raw)
    params_fifo_peak: int      # most parameter-FIFO entries held at once
    psum_in: np.ndarray        # [NT * T] in a load job, else [0]
    psum_out: np.ndarray       # [NT * T] in a raw job (instead of out), else [0]


@dataclass(frozen=True)
class CycleResult:
    """What one job did on the machine."""

    y: np.ndarray              # [T, N] requantized outputs (a raw job: the final sums)
    out_beats: np.ndarray      # [NT * T, cols] the ``out`` stream, in order, or in a raw job
                               # the ``psum_out`` stream ([0, cols] without emit; then ``y``
                               # is all zeros)
    cycles: int                # cycle of the last out (psum_out) beat (cmd handshake = cycle
                               # 0); without emit, the cycle it would have been sent in
    busy: np.ndarray           # [cycles + 1] busy PEs in each cycle
    utilization: float         # useful MACs / (rows * cols * cycles)
    overflow_events: int       # adder results (PE and accumulator) that wrapped
    acc_bits_needed: int       # smallest acc width with no wrap anywhere
    trace: StreamTrace | None = None

    @property
    def useful_macs(self) -> int:
        return int(self.busy.sum())


def new_bank(cfg: ArrayConfig) -> np.ndarray:
    """A fresh accumulator bank (``[acc_depth, cols]`` int64, all 0, as after reset)."""
    return np.zeros((cfg.acc_depth, cfg.cols), dtype=np.int64)


def simulate(cfg: ArrayConfig, job: GemmJob, *, trace: bool = False,
             bank: np.ndarray | None = None) -> CycleResult:
    """Run ``job`` on the cycle-level model of the ``cfg`` machine. ``bank``
    (:func:`new_bank`) is the accumulator bank the job finds and leaves (updated in
    place): pass the same array to the jobs of a K-split chain. An ``accumulate`` (or
    ``load``) job counts overflow events and ``acc_bits_needed`` from the stored (loaded)
    wrapped sums on. A ``raw`` job's ``y`` and ``out_beats`` are its final sums (the
    ``psum_out`` stream); :func:`run_spill_chain` runs a spilled K-split chain."""
    # re-validate: the job may have been built for another configuration
    job = job.for_config(cfg)
    return simulate_beats(cfg, job_beats(cfg, job), trace=trace, bank=bank)


def simulate_chain(cfg: ArrayConfig, jobs, *, trace: bool = False) -> list[CycleResult]:
    """Run ``jobs`` back to back on one machine (one accumulator bank, fresh at the start),
    e.g. a K-split chain from :func:`sim.job.split_k`; one result per job."""
    bank = new_bank(cfg)
    return [simulate(cfg, j, trace=trace, bank=bank) for j in jobs]


def run_spill_chain(cfg: ArrayConfig, job: GemmJob, k_tile: int, simulate_fn=None, *,
                    trace: bool = False) -> list[CycleResult]:
    """Run ``job`` as a K-split chain whose partial sums pass through the host (no bank
    limit): one job per ``k_tile`` rows of ``w`` (the last may be shorter), each but the
    first *loading* the raw sums the previous one sent, each but the last sending its sums
    *raw*; the last requantizes, so its ``y`` is ``job``'s outputs exactly. The first job
    starts from ``bias`` (or ``job.psum`` if ``job`` loads), the last is raw if ``job`` is.

    Parameters
    ----------
    cfg : ArrayConfig
        The machine.
    job : GemmJob
        An unchained job (``accumulate=False``, ``emit=True``).
    k_tile : int
        Reduction rows per job, ``>= 1`` (``>= K``: the one job).
    simulate_fn : callable, optional
        ``simulate_fn(cfg, sub_job) -> result`` with the sums in ``result.y``, e.g. an RTL
        runner; default :func:`simulate` (with ``trace``).
    trace : bool
        Passed to :func:`simulate` when ``simulate_fn`` is not given.

    Returns
    -------
    list
        One result per job, in chain order.
    """
    job = job.for_config(cfg)
    if job.chained:
        raise fail("run_spill_chain", "job", "an unchained job (accumulate=False, emit=True)",
                   None, shown="a chained job")
    if simulate_fn is None:
        def simulate_fn(c, j):
            return simulate(c, j, trace=trace)
    return [res for _, res in spill_chain(cfg, job, k_tile, simulate_fn, "run_spill_chain")]


def _port(values, bits: int, signed: bool) -> np.ndarray:
    """``values`` truncated to a ``bits``-wide port (int64)."""
    v = np.asarray(values, dtype=np.int64)
    return wrap(v, bits) if signed else v & np.int64((1 << bits) - 1)


def _check_beats(cfg: ArrayConfig, beats: JobBeats):
    cmd = beats.cmd
    for key in ("T", "K", "N", "z_y", "relu", "accumulate", "emit", "load", "raw") + (
            () if cfg.per_channel else ("m", "s")):
        if key not in cmd:
            raise ValueError(f"cmd beat lacks field {key!r}")
    T, K, N = (int(cmd[k]) for k in ("T", "K", "N"))
    for name, v in (("T", T), ("K", K), ("N", N)):
        if not 1 <= v <= cfg.max_dim:
            raise ValueError(f"cmd.{name} must be in [1, {cfg.max_dim}], not {v}")
    til = tiling(cfg, T, K, N)
    R, C = cfg.rows, cfg.cols
    if cmd["load"] and cmd["accumulate"]:
        raise ValueError("cmd.load and cmd.accumulate exclude each other (both set the "
                         "starting sums)")
    if cmd["raw"] and not cmd["emit"]:
        raise ValueError("cmd.raw requires cmd.emit (raw sums are the emitted outputs)")
    if (cmd["accumulate"] or not cmd["emit"]) and til.NT * T > cfg.acc_depth:
        raise ValueError(f"a chained job (accumulate or not emit) needs ceil(N / cols) * T = "
                         f"{til.NT * T} <= acc_depth = {cfg.acc_depth} accumulator entries")
    shapes = {"weight": (beats.weight, (til.passes * R, C)),
              "act": (beats.act, (til.NT * til.KT * T, R)),
              "bias": (beats.bias, (til.NT, C)),
              "psum_in": (beats.psum_in, (til.NT * T if cmd["load"] else 0, C))}
    if cfg.per_channel:
        shapes["m"] = (beats.m, (til.NT, C))
        shapes["s"] = (beats.s, (til.NT, C))
    for name, (arr, shape) in shapes.items():
        if arr is None or np.shape(arr) != shape:
            raise ValueError(f"{name} beats must have shape {shape}, got "
                             f"{None if arr is None else np.shape(arr)}")
    return T, K, N, til


def _static_no_wrap(cfg: ArrayConfig, K: int, bias: np.ndarray) -> bool:
    """True when no adder can wrap for any operands the ports can carry: every column
    sum of at most ``min(R, K)`` products and every ``bias + K products`` fits acc_bits.
    Then the wrapped and the exact datapaths are the same numbers and one suffices."""
    (wl, wh), (al, ah) = cfg.w_range, cfg.a_range
    corners = (wl * al, wl * ah, wh * al, wh * ah)
    p_lo, p_hi = min(0, *corners), max(0, *corners)
    lo, hi = cfg.acc_range
    rows = min(cfg.rows, K)
    b_lo, b_hi = min(0, int(bias.min())), max(0, int(bias.max()))
    return (lo <= rows * p_lo and rows * p_hi <= hi
            and lo <= b_lo + K * p_lo and b_hi + K * p_hi <= hi)


def simulate_beats(cfg: ArrayConfig, beats: JobBeats, *, trace: bool = False,
                   bank: np.ndarray | None = None) -> CycleResult:
    """Run the job given as stream beats (as the RTL sees it). Don't-care lanes (act lanes
    past K, weight rows/lanes past K/N, params lanes past N, psum_in lanes past N; bias
    under load, m / s under raw) may hold anything. ``bank``: see :func:`simulate`
    (``None``: a fresh one)."""
    T, K, N, til = _check_beats(cfg, beats)
    R, C, D = cfg.rows, cfg.cols, cfg.acc_depth
    span = max(R, C)
    acc_bits = cfg.acc_bits
    half = np.int64(1) << np.int64(acc_bits - 1)
    mask = (np.int64(1) << np.int64(acc_bits)) - np.int64(1)
    a_min, a_max = cfg.a_range
    z_y = np.int64(_port(beats.cmd["z_y"], cfg.a_bits, cfg.a_signed))
    lo, hi = (z_y if beats.cmd["relu"] else np.int64(a_min)), np.int64(a_max)
    acc_in, emit = bool(beats.cmd["accumulate"]), bool(beats.cmd["emit"])
    load, raw = bool(beats.cmd["load"]), bool(beats.cmd["raw"])
    chained = acc_in or not emit
    if bank is None:
        bank = new_bank(cfg)
    if bank.shape != (D, C):
        raise ValueError(f"bank must have shape {(D, C)}, got {bank.shape}")

    # ports are as wide as the payload fields: wider values are truncated, as in the RTL
    act = _port(beats.act, cfg.a_bits, cfg.a_signed)
    weight = _port(beats.weight, cfg.w_bits, True)
    bias_b = _port(beats.bias, acc_bits, True)
    psum_b = _port(beats.psum_in, acc_bits, True)       # [NT * T, C] in a load job
    if cfg.per_channel:
        m_b = _port(beats.m, cfg.mult_bits, False)
        s_b = _port(beats.s, 6, False)
    else:
        m_pt = _port(beats.cmd["m"], cfg.mult_bits, False)
        s_pt = _port(beats.cmd["s"], 6, False)

    # Datapath "kinds": kind 0 is the acc_bits register value; when some adder may wrap,
    # kind 1 carries the exact (unwrapped) value alongside, for acc_bits_needed.
    may_wrap = acc_in or not _static_no_wrap(cfg, K, psum_b if load else bias_b)
    nk = 2 if may_wrap else 1
    xk = nk - 1

    # ---- sequencer tables (what its counters decode to, per pass) --------------------
    coords = til.pass_coords().tolist()
    lens = til.pass_lengths().tolist()
    lane = np.arange(R)
    col = np.arange(C)
    k_rem = [til.k_len(kt) for (_nt, _tt, kt) in coords]
    n_rem = [til.n_len(nt) for (nt, _tt, _kt) in coords]
    lane_real = [(lane < k).astype(np.int64) for k in k_rem]
    # token fields other than `a`: (swap, valid, kn) for the first beat and for the rest
    tok_tail = []
    for k, n in zip(k_rem, n_rem):
        kn = np.where(lane < k, n, 0)
        tok_tail.append((np.stack([np.ones(R, np.int64), np.ones(R, np.int64), kn]),
                         np.stack([np.zeros(R, np.int64), np.ones(R, np.int64), kn])))

    # ---- registers -----------------------------------------------------------------
    skew = np.zeros((4, R, R), dtype=np.int64)      # [field, slot, lane] a, swap, valid, kn
    skew_slot = [(k - lane) % R for k in range(R)]  # row r reads the token of cycle now - r
    pe = np.zeros((4, R, C), dtype=np.int64)        # [field, r, c] a, swap, valid, kn
    psum = np.zeros((nk, R, C), dtype=np.int64)
    w_act = np.zeros((R, C), dtype=np.int64)
    w_sh = np.zeros((R, C), dtype=np.int64)
    dsk = np.zeros((nk, C, C), dtype=np.int64)      # [kind, slot, col]
    dsk_slot = [(k - (C - 1 - col)) % C for k in range(C)]
    n_tags = R + C
    tags: list = [None] * n_tags
    acc = np.repeat(wrap(bank, acc_bits)[None], nk, axis=0)   # exact kind: as stored
    fifo: deque = deque()
    fifo_depth = params_fifo_depth(cfg)
    fifo_peak = 0
    rq_in = rq_prod = out_reg = None

    n_out = til.NT * T                  # output vectors (beats only with emit)
    out_beats = np.zeros((n_out, C), dtype=np.int64)
    out_cyc = np.zeros(n_out, dtype=np.int64)
    pin_cyc = np.zeros(psum_b.shape[0], dtype=np.int64)
    act_cyc = np.zeros(act.shape[0], dtype=np.int64)
    w_cyc = np.zeros(weight.shape[0], dtype=np.int64)
    prm_cyc = np.zeros(til.NT, dtype=np.int64)
    busy: list[int] = []
    overflow = 0
    # running extremes of exact adder results (0 is neutral: it fits any width)
    pe_lo, pe_hi = np.zeros((R, C), np.int64), np.zeros((R, C), np.int64)
    ac_lo, ac_hi = np.zeros(C, np.int64), np.zeros(C, np.int64)

    count_nonzero, multiply, less = np.count_nonzero, np.multiply, np.less
    maximum, minimum, right_shift = np.maximum, np.minimum, np.right_shift
    p, u = 0, 0
    n_pass = til.passes
    KT1, TT1 = til.KT - 1, til.TT - 1
    a_ptr = w_ptr = prm_ptr = o_ptr = pin_ptr = 0
    limit = 2 * gemm_cycles(cfg, T, K, N) + 4 * (R + C + D) + 64

    cyc = 0
    while True:
        # ================= combinational part of cycle `cyc` =========================
        # -- sequencer (cycle 0 is the cmd handshake; passes start at s_0 = 1); the
        #    accepted activation beat, masked, is the token: it enters the skew ring
        kslot = cyc % R
        tag_new = None
        w_row = None
        push = None
        if cyc >= 1 and p < n_pass:
            nt, tt, kt = coords[p]
            L = lens[p]
            if u < L:
                multiply(act[a_ptr], lane_real[p], out=skew[_A, kslot])
                skew[1:, kslot] = tok_tail[p][0 if u == 0 else 1]
                act_cyc[a_ptr] = cyc
                a_ptr += 1
                addr = nt * T + u if chained else u          # accumulator entry
                tag_new = (kt == 0, kt == KT1, addr, n_rem[p],
                           tt == TT1 and kt == KT1 and u == L - 1)
            else:
                skew[:, kslot] = 0
            if u < R:
                w_row = (u, weight[w_ptr])
                w_cyc[w_ptr] = cyc
                w_ptr += 1
            if u == 0 and tt == 0 and kt == 0:
                b = np.broadcast_to(bias_b[prm_ptr], (nk, C))
                if cfg.per_channel:
                    s_g = s_b[prm_ptr]
                    push = (b, m_b[prm_ptr], s_g, rounding_term(s_g))
                else:
                    push = (b, m_pt, s_pt, rounding_term(s_pt))
                prm_cyc[prm_ptr] = cyc
                prm_ptr += 1
            u += 1
            if u == max(L, span):
                p, u = p + 1, 0
        else:
            skew[:, kslot] = 0

        # -- output register: beat accepted this cycle
        if out_reg is not None:
            out_beats[o_ptr] = out_reg
            out_cyc[o_ptr] = cyc
            o_ptr += 1
            if o_ptr == n_out:
                busy.append(int(count_nonzero(less(col, pe[_KN]))))
                break

        # -- requantizer stage 2: y <= clamp(z_y + ((prod + R_S) >> S), lo, hi)
        #    (raw: the delayed sum itself)
        y_next = None
        if rq_prod is not None:
            prod, s_sh, r_s, nr = rq_prod
            if raw:
                y_next = prod.copy()
            else:
                y_next = minimum(maximum(right_shift(prod + r_s, s_sh) + z_y, lo), hi)
            y_next[nr:] = 0
        # -- requantizer stage 1: prod <= sum * M (raw: the sum, delayed)
        prod_next = None
        if rq_in is not None:
            total, m_g, s_g, r_g, nr = rq_in
            prod_next = (total if raw else total * m_g, s_g, r_g, nr)

        # -- de-skew: column c's bottom psum, C-1-c registers late (slot 0 = no delay)
        dslot = cyc % C
        dsk[:, dslot] = psum[:, R - 1]
        # -- accumulate (cycle alpha): the tag that entered R + C cycles ago
        tslot = cyc % n_tags
        tag = tags[tslot]
        tags[tslot] = tag_new
        rq_next = None
        pop = False
        if tag is not None:
            first_k, last_k, t_idx, nr, group_end = tag
            vec = dsk[:, dsk_slot[dslot], col]               # [kind, C] aligned psums
            if first_k and load:                             # psum_in beat consumed now
                base = psum_b[pin_ptr]
                pin_cyc[pin_ptr] = cyc
                pin_ptr += 1
            elif first_k and not acc_in:
                base = fifo[0][0]
            else:
                base = acc[:, t_idx]
            total = base + vec
            if may_wrap:
                wrapped = ((total[0] + half) & mask) - half
                overflow += int(count_nonzero(wrapped[:nr] != total[0, :nr]))
                total[0] = wrapped
            ex = total[xk, :nr]
            maximum(ac_hi[:nr], ex, out=ac_hi[:nr])
            minimum(ac_lo[:nr], ex, out=ac_lo[:nr])
            if last_k:                      # without emit the requantizer runs unseen
                _b, m_g, s_g, r_g = fifo[0]
                rq_next = (total[0], m_g, s_g, r_g, nr)
            if not last_k or not emit:
                acc[:, t_idx] = total
            pop = group_end

        # -- PE grid: w_eff = swap ? w_shadow : w_active; psum <= psum_in + a * w_eff
        w_eff = np.where(pe[_SWAP], w_sh, w_act)
        new = np.empty((nk, R, C), dtype=np.int64)
        multiply(pe[_A], w_eff, out=new[0])
        if may_wrap:
            new[1] = new[0]
        new[:, 1:] += psum[:, :-1]
        busy_m = less(col, pe[_KN])
        n_busy = int(count_nonzero(busy_m))
        busy.append(n_busy)
        if may_wrap:
            wrapped = ((new[0] + half) & mask) - half
            if n_busy:
                overflow += int(count_nonzero((wrapped != new[0]) & busy_m))
            new[0] = wrapped
        if n_busy:
            maximum(pe_hi, new[xk], out=pe_hi, where=busy_m)
            minimum(pe_lo, new[xk], out=pe_lo, where=busy_m)
        # input skew: PE (r, 0) takes lane r of the token of cycle `cyc - r`
        col0 = skew[:, skew_slot[kslot], lane]

        # ================= clock edge: every register latches ========================
        out_reg = y_next
        rq_prod = prod_next
        rq_in = rq_next
        if pop:
            fifo.popleft()
        if push is not None:
            fifo.append(push)
            fifo_peak = max(fifo_peak, len(fifo))
            if len(fifo) > fifo_depth:
                raise RuntimeError(f"parameter FIFO overflow: {len(fifo)} groups in flight, "
                                   f"depth {fifo_depth}")
        w_act = w_eff                                        # swap: w_active <= w_shadow
        psum = new
        pe[:, :, 1:] = pe[:, :, :-1]                         # a, swap, valid move right
        pe[:, :, 0] = col0
        if w_row is not None:
            w_sh[w_row[0]] = w_row[1]

        cyc += 1
        if cyc > limit:
            raise RuntimeError(f"cycle model did not finish within {limit} cycles")

    busy_arr = np.asarray(busy, dtype=np.int64)
    bank[:] = acc[0]
    if not emit:
        out_beats, out_cyc = out_beats[:0], out_cyc[:0]
        y = np.zeros((T, N), dtype=np.int64)
    else:
        y = out_beats_to_matrix(cfg, out_beats, T, N)
    st = None
    if trace:
        empty = out_cyc[:0]
        st = StreamTrace(act=act_cyc, weight=w_cyc, params=prm_cyc,
                         out=empty if raw else out_cyc, params_fifo_peak=fifo_peak,
                         psum_in=pin_cyc, psum_out=out_cyc if raw else empty)
    x_lo = min(int(pe_lo.min()), int(ac_lo.min()))
    x_hi = max(int(pe_hi.max()), int(ac_hi.max()))
    return CycleResult(y=y, out_beats=out_beats, cycles=cyc, busy=busy_arr,
                       utilization=float(busy_arr.sum()) / (R * C * cyc),
                       overflow_events=overflow, acc_bits_needed=bits_for_range(x_lo, x_hi),
                       trace=st)


@dataclass(frozen=True)
class MappedResult:
    """One group job of a layer run under a mapping: its jobs on the cycle model and its
    transfers through the buffers."""

    y: np.ndarray              # [T, N] outputs, assembled from the jobs
    cycles: int                # sum of the jobs' cycles (jobs never overlap)
    jobs: int
    dram_bits: dict            # operand -> bits moved between DRAM and the buffers
    peak_bits: dict            # ArrayConfig buffer field -> most bits held at once
    useful_macs: int


def run_mapping(cfg: ArrayConfig, job: GemmJob, steps) -> MappedResult:
    """Execute a mapping's ordered steps (:func:`sim.mapping.mapping_steps`) for the
    whole-layer ``job``: every ``"job"`` step runs its slab x n-tile sub-job on the cycle
    model (:func:`simulate`), loads / streams / stores are counted in bits and held in
    their buffer (``sim.traffic.BUFFER_OF``) until evicted (streams for the next job
    only), ``"keep"`` steps (on-chip data, e.g. a spilled chain's partial sums) are held
    without DRAM traffic; a buffer holding more than its capacity raises ``ValueError``
    naming it. The jobs share one accumulator bank. A K-split chain's jobs (``key = (t0,
    t, n0, n, k0, k)``) start from bias when ``k0 = 0`` and requantize into ``y`` at
    ``k0 + k = K``; between, by the step's ``psums`` (default ``"bank"``): ``"bank"`` jobs
    accumulate in the bank and do not emit, ``"spill"`` jobs *load* the raw sums the
    previous job of the same ``(t0, n0)`` block sent and send theirs *raw*
    (:class:`sim.job.GemmJob` ``psum`` / ``raw``). A spill job whose block has no sums up
    to its ``k0`` (or of another shape), or a spill chain left unfinished, raises
    ``ValueError``."""
    from .traffic import BUFFER_OF

    job = job.for_config(cfg)
    if job.chained or job.load or job.raw:
        raise fail("run_mapping", "job", "a whole-layer job (no accumulate, psum or raw; "
                   "emit)", None, shown="a chain or spill job")
    cap = {f: getattr(cfg, f) * 8192 for f in ("weight_buffer_kib", "act_buffer_kib",
                                               "out_buffer_kib")}
    resident: dict = {}                       # (operand, key) -> bits
    transient: list = []                      # (operand, hold) for the next job
    dram: dict = {}
    peak = dict.fromkeys(cap, 0)
    y = np.full((job.T, job.N), np.iinfo(np.int64).min, dtype=np.int64)
    cycles = macs = jobs = 0
    bank = new_bank(cfg)
    spilled: dict = {}                        # (t0, n0) -> (k reached, raw sums [t, n])

    def held(extra) -> None:
        use = dict.fromkeys(cap, 0)
        for (op, _k), b in resident.items():
            use[BUFFER_OF[op]] += b
        for op, b in extra:
            use[BUFFER_OF[op]] += b
        for f, b in use.items():
            peak[f] = max(peak[f], b)
            if b > cap[f]:
                raise ValueError(f"ArrayConfig.{f}={getattr(cfg, f)} ({cap[f]} bits) "
                                 f"overflows: {b} bits held")

    for st in steps:
        if st.kind in ("load", "stream", "store"):
            dram[st.operand] = dram.get(st.operand, 0) + st.bits
        if st.kind in ("load", "keep"):
            resident[(st.operand, st.key)] = st.bits
            held(transient)
        elif st.kind == "stream":
            transient.append((st.operand, st.hold))
        elif st.kind == "evict":
            del resident[(st.operand, st.key)]
        elif st.kind == "store":
            held([(st.operand, st.hold)])
        elif st.kind == "job":
            held(transient)
            transient = []
            t0, t, n0, n, k0, k = st.key
            m = job.m[n0:n0 + n] if np.ndim(job.m) else job.m
            s = job.s[n0:n0 + n] if np.ndim(job.s) else job.s
            last = k0 + k == job.K
            psums = st.psums
            if psums == "bank":
                flags = {"accumulate": k0 > 0, "emit": last}
            elif psums == "spill":
                psum = None
                if k0 > 0:
                    k_done, psum = spilled.pop((t0, n0), (0, None))
                    if k_done != k0 or psum.shape != (t, n):
                        raise ValueError(
                            f"spill job {st.key}: block (t0, n0) = {(t0, n0)} has no partial "
                            f"sums [{t}, {n}] up to k0 = {k0} from a previous job (has "
                            f"{'none' if psum is None else f'{psum.shape} up to k {k_done}'})")
                elif (t0, n0) in spilled:
                    raise ValueError(f"spill job {st.key} starts block (t0, n0) = {(t0, n0)} "
                                     f"again before its chain reached K = {job.K}")
                flags = {"psum": psum, "raw": not last}
            else:
                raise ValueError(f"Step.psums must be 'bank' or 'spill', not {psums!r}")
            sub = GemmJob.create(cfg, job.x[t0:t0 + t, k0:k0 + k], job.w[k0:k0 + k, n0:n0 + n],
                                 job.bias[n0:n0 + n], m, s, z_y=job.z_y, relu=job.relu,
                                 **flags)
            r = simulate(cfg, sub, bank=bank)
            if last:
                y[t0:t0 + t, n0:n0 + n] = r.y
            elif psums == "spill":
                spilled[(t0, n0)] = (k0 + k, r.y)
            cycles += r.cycles
            macs += r.useful_macs
            jobs += 1
        else:
            raise ValueError(f"unknown step kind {st.kind!r}")
    if spilled:
        (t0, n0), (k_done, _sums) = next(iter(spilled.items()))
        raise ValueError(f"spill chain of block (t0, n0) = {(t0, n0)} ends at k = {k_done}, "
                         f"not K = {job.K}: its outputs were never requantized")
    return MappedResult(y=y, cycles=cycles, jobs=jobs, dram_bits=dram, peak_bits=peak,
                        useful_macs=macs)


# the pipeline tail is fixed by the registers above: accumulate -> stage 1 -> stage 2 -> out
assert PIPELINE_TAIL == 3
