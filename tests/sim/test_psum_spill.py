"""Partial-sum spill (GemmJob.psum / raw, /work PSUM contract): load and raw jobs on the
cycle model against the numpy reference and the pass schedule, spilled K-split chains
against the unsplit job, and run_mapping's "spill" job steps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from qaccel.sim.arith import bits_for_range
from qaccel.sim.config import ArrayConfig
from qaccel.sim.cycle import run_mapping, run_spill_chain, simulate, simulate_beats
from qaccel.sim.job import GemmJob, random_job
from qaccel.sim.mapping import Step
from qaccel.sim.reference import reference_gemm, reference_spill_chain
from qaccel.sim.schedule import beat_cycles, gemm_cycles, pass_starts, tiling
from qaccel.sim.streams import job_beats, scramble_dont_cares
from strategies import configs

MAX_CYCLES = 2500
SLOW = [HealthCheck.filter_too_much, HealthCheck.too_slow]
# smaller arrays and banks than test_cycle's: chains run several jobs per example
SPILL_CONFIGS = configs(max_dim=7, max_acc_depth=8)


def starting_sums(cfg: ArrayConfig, T: int, N: int, rng, extreme: bool) -> np.ndarray:
    lo, hi = cfg.acc_range
    if extreme:
        return rng.choice(np.array([lo, hi, lo + 1, hi - 1, 0, -1]), size=(T, N))
    return rng.integers(lo, hi, endpoint=True, size=(T, N))


def flagged(cfg: ArrayConfig, job: GemmJob, psum, raw: bool) -> GemmJob:
    return GemmJob.create(cfg, job.x, job.w, job.bias, job.m, job.s, job.z_y, job.relu,
                          psum=psum, raw=raw)


@st.composite
def flag_cases(draw):
    """A random job, with random starting sums (load) and / or raw outputs."""
    cfg = draw(SPILL_CONFIGS)
    T, K, N = (draw(st.integers(1, 30)) for _ in range(3))
    assume(gemm_cycles(cfg, T, K, N) <= MAX_CYCLES)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    extreme = draw(st.booleans())
    plain = random_job(cfg, T, K, N, rng, extreme=extreme)
    load, raw = draw(st.booleans()), draw(st.booleans())
    psum = starting_sums(cfg, T, N, rng, extreme) if load else None
    return cfg, plain, flagged(cfg, plain, psum, raw)


def exact_partial_sums(cfg: ArrayConfig, job: GemmJob) -> np.ndarray:
    """Every exact adder result in array order, the accumulator starting from psum / bias."""
    til = tiling(cfg, job.T, job.K, job.N)
    sums = []
    start = job.psum if job.load else np.broadcast_to(job.bias, (job.T, job.N))
    acc = start.astype(np.int64)
    for kt in range(til.KT):
        ks = slice(kt * cfg.rows, kt * cfg.rows + til.k_len(kt))
        col = np.cumsum(job.x[:, ks, None] * job.w[None, ks, :], axis=1)
        sums.append(col.ravel())
        acc = acc + col[:, -1, :]
        sums.append(acc.ravel())
    return np.concatenate(sums)


def psum_in_cycles(cfg: ArrayConfig, T: int, K: int, N: int) -> np.ndarray:
    """The contract: beat (nt, t) is taken in the accumulate cycle of the vector's first K
    pass, ``s_p + u + rows + cols`` (3 cycles before that pass would send its out beat)."""
    til = tiling(cfg, T, K, N)
    starts = pass_starts(cfg, til)
    D = cfg.acc_depth
    return np.array([starts[til.pass_index(nt, t // D, 0)] + t % D + cfg.rows + cfg.cols
                     for nt in range(til.NT) for t in range(T)], dtype=np.int64)


# ---- (b), (c): one load / raw job -------------------------------------------------------

@settings(max_examples=120, deadline=None, suppress_health_check=SLOW)
@given(flag_cases())
def test_load_raw_job_matches_reference_and_schedule(case):
    """Outputs == the numpy reference (raw: the wrapped sums, also with extreme operands
    that wrap the accumulator); every beat on the schedule of the same job without flags;
    psum_in beats in their first K pass's accumulate cycle; psum_out instead of out."""
    cfg, plain, job = case
    T, K, N = job.T, job.K, job.N
    res = simulate(cfg, job, trace=True)
    ref = reference_gemm(cfg, job)
    np.testing.assert_array_equal(res.y, ref.y)
    if job.raw:
        start = job.psum if job.load else job.bias[None, :]
        lo, hi = cfg.acc_range
        assert ref.y.min() >= lo and ref.y.max() <= hi
        np.testing.assert_array_equal(ref.y, ref.acc)
        np.testing.assert_array_equal((ref.y - start - job.x @ job.w) % (1 << cfg.acc_bits), 0)
    beats = job_beats(cfg, job, ref.y)
    np.testing.assert_array_equal(res.out_beats, beats.psum_out if job.raw else beats.out)
    # timing: exactly the job without flags
    base = simulate(cfg, plain, trace=True)
    assert res.cycles == base.cycles == gemm_cycles(cfg, T, K, N)
    np.testing.assert_array_equal(res.busy, base.busy)
    want = beat_cycles(cfg, T, K, N)
    for name in ("act", "weight", "params"):
        np.testing.assert_array_equal(getattr(res.trace, name), want[name], err_msg=name)
    sent, silent = ("psum_out", "out") if job.raw else ("out", "psum_out")
    np.testing.assert_array_equal(getattr(res.trace, sent), want["out"])
    assert getattr(res.trace, silent).size == 0
    assert getattr(res.trace, sent)[-1] == res.cycles      # busy falls on the last beat
    np.testing.assert_array_equal(res.trace.psum_in,
                                  psum_in_cycles(cfg, T, K, N) if job.load else [])
    # overflow accounting starts from the loaded sums
    exact = exact_partial_sums(cfg, job)
    lo, hi = cfg.acc_range
    leaves = bool(np.any((exact < lo) | (exact > hi)))
    assert (res.overflow_events > 0) == leaves
    assert res.acc_bits_needed == bits_for_range(min(0, exact.min()), max(0, exact.max()))


def test_load_wraps_from_the_accumulator_ends():
    """Starting sums at the accumulator's ends plus positive / negative products wrap."""
    cfg = ArrayConfig(rows=2, cols=3, w_bits=4, a_bits=4, a_signed=True, acc_bits=8,
                      acc_depth=2)
    x = np.full((3, 3), 7)
    w = np.array([[7, -8, 1]] * 3)
    psum = np.array([[127, -128, 0], [120, -120, 5], [-1, 1, 127]])
    job = GemmJob.create(cfg, x, w, np.zeros(3, int), 1, 0, psum=psum, raw=True)
    res = simulate(cfg, job)
    want = ((psum + x @ w + 128) % 256) - 128
    np.testing.assert_array_equal(res.y, want)
    np.testing.assert_array_equal(reference_gemm(cfg, job).y, want)
    assert res.overflow_events > 0
    assert not np.array_equal(want, psum + x @ w)


@settings(max_examples=40, deadline=None, suppress_health_check=SLOW)
@given(flag_cases(), st.integers(0, 2**32 - 1))
def test_dont_care_lanes_and_fields(case, seed):
    """Every don't-care scrambled (``sim.streams.scramble_dont_cares``: psum_in lanes past
    N, bias under load and m / s / z_y / relu under raw, lanes past K / N): the same beats,
    cycles and psum_in handshakes; psum_in is truncated to acc_bits like the other ports."""
    cfg, _plain, job = case
    assume(job.load or job.raw)
    rng = np.random.default_rng(seed)
    beats = job_beats(cfg, job)
    clean = simulate_beats(cfg, beats, trace=True)
    noisy = scramble_dont_cares(cfg, beats, rng)
    # high bits past acc_bits on every psum_in lane: the port truncates them
    high = rng.integers(-3, 4, size=noisy.psum_in.shape).astype(np.int64) << cfg.acc_bits
    noisy = simulate_beats(cfg, dataclasses.replace(noisy, psum_in=noisy.psum_in + high),
                           trace=True)
    np.testing.assert_array_equal(noisy.out_beats, clean.out_beats)
    np.testing.assert_array_equal(noisy.y, reference_gemm(cfg, job).y)
    assert noisy.cycles == clean.cycles
    np.testing.assert_array_equal(noisy.trace.psum_in, clean.trace.psum_in)


def test_beats_validation():
    cfg = ArrayConfig(rows=2, cols=2, acc_depth=8)
    job = random_job(cfg, 3, 3, 3, np.random.default_rng(0))
    beats = job_beats(cfg, flagged(cfg, job, np.zeros((3, 3), int), False))
    assert beats.psum_in.shape == (6, 2)
    with pytest.raises(ValueError, match=r"psum_in beats must have shape \(6, 2\), got "
                                         r"\(5, 2\)"):
        simulate_beats(cfg, dataclasses.replace(beats, psum_in=beats.psum_in[:-1]))
    with pytest.raises(ValueError, match=r"psum_in beats must have shape \(0, 2\)"):
        simulate_beats(cfg, dataclasses.replace(beats, cmd={**beats.cmd, "load": False}))
    with pytest.raises(ValueError, match=r"cmd\.load and cmd\.accumulate exclude each other"):
        simulate_beats(cfg, dataclasses.replace(beats, cmd={**beats.cmd, "accumulate": True}))
    with pytest.raises(ValueError, match=r"cmd\.raw requires cmd\.emit"):
        simulate_beats(cfg, dataclasses.replace(
            beats, cmd={**beats.cmd, "raw": True, "emit": False}))
    cmd = {k: v for k, v in beats.cmd.items() if k != "raw"}
    with pytest.raises(ValueError, match=r"cmd beat lacks field 'raw'"):
        simulate_beats(cfg, dataclasses.replace(beats, cmd=cmd))


# ---- (a): spilled K-split chains --------------------------------------------------------

@st.composite
def spill_cases(draw):
    """Any job (T may exceed acc_depth: several T-tiles; N need not fill the columns),
    cut along K into a spilled chain."""
    cfg = draw(SPILL_CONFIGS)
    T = draw(st.integers(1, 3 * cfg.acc_depth + 2))
    K = draw(st.integers(2, 30))
    N = draw(st.integers(1, 3 * cfg.cols + 1))
    k_tile = draw(st.integers(1, K - 1))
    n_jobs = -(-K // k_tile)
    assume(gemm_cycles(cfg, T, k_tile, N) * n_jobs <= 2 * MAX_CYCLES)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    job = random_job(cfg, T, K, N, rng, extreme=draw(st.booleans()))
    return cfg, job, k_tile


@settings(max_examples=80, deadline=None, suppress_health_check=SLOW)
@given(spill_cases())
def test_spill_chain_gives_the_unsplit_outputs(case):
    """First job from bias sending raw sums, middle jobs loading and sending raw, the last
    loading and requantizing: the last job's outputs == the unsplit job's, bit for bit;
    each job on the schedule of its own shape; the raw sums passed along are the exact
    wrapped prefix sums."""
    cfg, job, k_tile = case
    T, K, N = job.T, job.K, job.N
    results = run_spill_chain(cfg, job, k_tile, trace=True)
    assert len(results) == -(-K // k_tile)
    whole = simulate(cfg, job)
    np.testing.assert_array_equal(results[-1].y, whole.y)
    np.testing.assert_array_equal(results[-1].y, reference_gemm(cfg, job).y)
    acc_bits = cfg.acc_bits
    for i, res in enumerate(results):
        k0 = i * k_tile
        k = min(k_tile, K - k0)
        last = i == len(results) - 1
        prefix = job.bias + job.x[:, :k0 + k] @ job.w[:k0 + k]
        if not last:        # raw sums: wrap(bias + x[:, :k0+k] @ w[:k0+k])
            np.testing.assert_array_equal(res.y, ((prefix + (1 << acc_bits - 1))
                                                  % (1 << acc_bits)) - (1 << acc_bits - 1))
        assert res.cycles == gemm_cycles(cfg, T, k, N)
        want = beat_cycles(cfg, T, k, N)
        np.testing.assert_array_equal(res.trace.psum_out if not last else res.trace.out,
                                      want["out"])
        np.testing.assert_array_equal(res.trace.psum_in,
                                      psum_in_cycles(cfg, T, k, N) if i else [])
        assert res.useful_macs == T * k * N

    # the chain spelled out job by job: the same flags and outputs through simulate
    psum = None
    for i, k0 in enumerate(range(0, K, k_tile)):
        last = k0 + k_tile >= K
        sub = GemmJob.create(cfg, job.x[:, k0:k0 + k_tile], job.w[k0:k0 + k_tile], job.bias,
                             job.m, job.s, job.z_y, job.relu, psum=psum, raw=not last)
        assert (sub.load, sub.raw, sub.chained) == (i > 0, not last, False)
        r = simulate(cfg, sub)
        np.testing.assert_array_equal(r.y, results[i].y)
        psum = r.y


def test_spill_chain_checks_its_arguments():
    cfg = ArrayConfig(rows=2, cols=2, acc_depth=4)
    job = random_job(cfg, 3, 5, 3, np.random.default_rng(1))
    with pytest.raises(ValueError, match=r"run_spill_chain\.k_tile must be >= 1, not 0"):
        run_spill_chain(cfg, job, 0)
    chained = GemmJob.create(cfg, job.x[:1], job.w, job.bias, job.m, job.s, emit=False)
    with pytest.raises(ValueError, match=r"run_spill_chain\.job must be an unchained job"):
        run_spill_chain(cfg, chained, 2)
    # k_tile >= K: the one job; a custom simulate_fn sees every job of the chain
    assert np.array_equal(run_spill_chain(cfg, job, 9)[0].y, simulate(cfg, job).y)
    seen = []

    def fn(c, j):
        seen.append((j.K, j.load, j.raw))
        return simulate(c, j)

    run_spill_chain(cfg, job, 2, fn)
    assert seen == [(2, False, True), (2, True, True), (1, True, False)]



@settings(max_examples=60, deadline=None, suppress_health_check=SLOW)
@given(flag_cases(), st.data())
def test_reference_spill_chain_ends_at_the_unsplit_output(case, data):
    """``sim.reference.reference_spill_chain``: ceil(K / k_tile) jobs of ``k_tile`` rows,
    the first loading ``job.psum`` (if ``job`` loads), each later one the reference sums of
    the job before, all raw but the last (which keeps ``job.raw``); the last job's
    reference output == the unsplit job's."""
    cfg, _plain, job = case
    k_tile = data.draw(st.integers(1, job.K + 1))
    chain = reference_spill_chain(cfg, job, k_tile)
    assert [j.K for j in chain] == [min(k_tile, job.K - k0) for k0 in range(0, job.K, k_tile)]
    assert [j.load for j in chain] == [job.load] + [True] * (len(chain) - 1)
    assert [j.raw for j in chain] == [True] * (len(chain) - 1) + [job.raw]
    if job.load:
        np.testing.assert_array_equal(chain[0].psum, job.psum)
    for prev, nxt in zip(chain, chain[1:]):
        np.testing.assert_array_equal(nxt.psum, reference_gemm(cfg, prev).y)
    np.testing.assert_array_equal(reference_gemm(cfg, chain[-1]).y, reference_gemm(cfg, job).y)


def test_reference_spill_chain_refuses_a_bad_k_tile():
    cfg = ArrayConfig(rows=2, cols=2, acc_depth=4)
    job = random_job(cfg, 3, 5, 3, np.random.default_rng(1))
    with pytest.raises(ValueError, match=r"reference_spill_chain\.k_tile must be >= 1, not 0"):
        reference_spill_chain(cfg, job, 0)
    with pytest.raises(ValueError, match=r"reference_spill_chain\.k_tile"):
        reference_spill_chain(cfg, job, -2)

# ---- (f): run_mapping with "spill" job steps ----------------------------------------------

def spill_steps(T: int, K: int, N: int, t_tile: int, n_tile: int, k_tile: int,
                interleave: bool) -> list:
    """Job steps of spilled chains over (t0, n0) blocks; ``interleave`` runs the chains'
    k-chunks round robin (chunk 0 of every block, then chunk 1, ...)."""
    blocks = [(t0, min(t_tile, T - t0), n0, min(n_tile, N - n0))
              for t0 in range(0, T, t_tile) for n0 in range(0, N, n_tile)]
    chunks = [(k0, min(k_tile, K - k0)) for k0 in range(0, K, k_tile)]
    order = ([(b, c) for c in chunks for b in blocks] if interleave
             else [(b, c) for b in blocks for c in chunks])
    return [Step("job", key=(*b, *c), psums="spill") for b, c in order]


@settings(max_examples=30, deadline=None, suppress_health_check=SLOW)
@given(SPILL_CONFIGS, st.integers(1, 12), st.integers(2, 14), st.integers(1, 12),
       st.integers(0, 2**32 - 1), st.data())
def test_run_mapping_spill_steps(cfg, T, K, N, seed, data):
    t_tile = data.draw(st.integers(1, T))
    n_tile = data.draw(st.integers(1, N))
    k_tile = data.draw(st.integers(1, K))
    interleave = data.draw(st.booleans())
    cfg = cfg.replace(out_buffer_kib=64, act_buffer_kib=64, weight_buffer_kib=64)
    steps = spill_steps(T, K, N, t_tile, n_tile, k_tile, interleave)
    assume(sum(gemm_cycles(cfg, *_tkn(s.key)) for s in steps) <= 3 * MAX_CYCLES)
    job = random_job(cfg, T, K, N, np.random.default_rng(seed), extreme=data.draw(st.booleans()))
    res = run_mapping(cfg, job, steps)
    np.testing.assert_array_equal(res.y, reference_gemm(cfg, job).y)
    assert res.jobs == len(steps)
    assert res.cycles == sum(gemm_cycles(cfg, *_tkn(s.key)) for s in steps)
    assert res.useful_macs == T * K * N


def _tkn(key):
    _t0, t, _n0, n, _k0, k = key
    return t, k, n


def test_run_mapping_spill_errors_and_keep():
    cfg = ArrayConfig(rows=2, cols=2, acc_depth=2, out_buffer_kib=1)
    job = random_job(cfg, 4, 6, 3, np.random.default_rng(4))
    steps = spill_steps(4, 6, 3, 4, 3, 2, False)
    # the partial sums kept in the output buffer: held without DRAM traffic, capacity checked
    psum_bits = 4 * 3 * cfg.acc_bits
    kept = ([steps[0], Step("keep", "psums", ("pair", 0, 0), psum_bits)] + steps[1:]
            + [Step("evict", "psums", ("pair", 0, 0))])
    res = run_mapping(cfg, job, kept)
    np.testing.assert_array_equal(res.y, reference_gemm(cfg, job).y)
    assert res.peak_bits["out_buffer_kib"] == psum_bits and res.dram_bits == {}
    too_big = [steps[0], Step("keep", "psums", ("pair", 0, 0), 8193)] + steps[1:]
    with pytest.raises(ValueError, match=r"ArrayConfig\.out_buffer_kib=1 \(8192 bits\) "
                                         r"overflows: 8193 bits held"):
        run_mapping(cfg, job, too_big)
    with pytest.raises(ValueError, match=r"spill job \(0, 4, 0, 3, 4, 2\): block \(t0, n0\) = "
                                         r"\(0, 0\) has no partial sums \[4, 3\] up to k0 = 4 "
                                         r"from a previous job \(has \(4, 3\) up to k 2\)"):
        run_mapping(cfg, job, [steps[0], steps[2]])
    with pytest.raises(ValueError, match=r"spill chain of block \(t0, n0\) = \(0, 0\) ends at "
                                         r"k = 4, not K = 6"):
        run_mapping(cfg, job, steps[:2])
    with pytest.raises(ValueError, match=r"spill job \(0, 4, 0, 3, 0, 2\) starts block"):
        run_mapping(cfg, job, [steps[0]] + steps)
    other = dataclasses.replace(steps[0], key=(0, 4, 0, 2, 0, 2))
    with pytest.raises(ValueError, match=r"has no partial sums \[4, 3\] up to k0 = 2 .*"
                                         r"has \(4, 2\) up to k 2"):
        run_mapping(cfg, job, [other] + steps[1:])
    with pytest.raises(ValueError, match=r"Step\.psums must be 'bank' or 'spill', not 'dram'"):
        run_mapping(cfg, job, [dataclasses.replace(steps[0], psums="dram")])
    loading = flagged(cfg, job, np.zeros((4, 3), int), False)
    with pytest.raises(ValueError, match=r"run_mapping\.job must be a whole-layer job"):
        run_mapping(cfg, loading, steps)
