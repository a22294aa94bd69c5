"""The cycle-level model against the numpy reference and the pass schedule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from qaccel.sim.arith import bits_for_range
from qaccel.sim.config import ArrayConfig
from qaccel.sim.cycle import new_bank, simulate, simulate_beats, simulate_chain
from qaccel.sim.job import GemmJob, random_job, split_k
from qaccel.sim.reference import reference_gemm
from qaccel.sim.schedule import beat_cycles, gemm_cycles, params_fifo_depth, pass_starts, tiling
from qaccel.sim.streams import job_beats
from strategies import configs

# keep one example's simulation short: the model steps one clock per Python iteration
MAX_CYCLES = 2500


@st.composite
def cases(draw):
    cfg = draw(configs())
    T, K, N = (draw(st.integers(1, 40)) for _ in range(3))
    assume(gemm_cycles(cfg, T, K, N) <= MAX_CYCLES)
    seed = draw(st.integers(0, 2**32 - 1))
    extreme = draw(st.booleans())
    job = random_job(cfg, T, K, N, np.random.default_rng(seed), extreme=extreme)
    return cfg, job



def expected_busy(cfg: ArrayConfig, T: int, K: int, N: int) -> np.ndarray:
    """Busy PEs per cycle: PE (r, c) multiplies (p, t) in cycle s_p + t + r + c + 1."""
    til = tiling(cfg, T, K, N)
    starts = pass_starts(cfg, til)
    total = gemm_cycles(cfg, T, K, N) + 1
    busy = np.zeros(total, dtype=np.int64)
    for p, (nt, tt, kt) in enumerate(til.pass_coords().tolist()):
        t, r, c = np.meshgrid(np.arange(til.tile_len(tt)), np.arange(til.k_len(kt)),
                              np.arange(til.n_len(nt)), indexing="ij")
        busy += np.bincount((starts[p] + t + r + c + 1).ravel(), minlength=total)[:total]
    return busy


def exact_partial_sums(cfg: ArrayConfig, job: GemmJob) -> np.ndarray:
    """Every exact adder result in the order the array adds: down each PE column
    (rows of one K tile), then into the accumulator starting from the bias."""
    til = tiling(cfg, job.T, job.K, job.N)
    sums = []
    acc = np.broadcast_to(job.bias, (job.T, job.N)).astype(np.int64)
    for kt in range(til.KT):
        ks = slice(kt * cfg.rows, kt * cfg.rows + til.k_len(kt))
        col = np.cumsum(job.x[:, ks, None] * job.w[None, ks, :], axis=1)   # [T, k, N]
        sums.append(col.ravel())
        acc = acc + col[:, -1, :]
        sums.append(acc.ravel())
    return np.concatenate(sums)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                   HealthCheck.too_slow])
@given(cases())
def test_cycle_model_matches_reference_and_schedule(case):
    cfg, job = case
    T, K, N = job.T, job.K, job.N
    res = simulate(cfg, job, trace=True)
    ref = reference_gemm(cfg, job)
    # outputs, bit-exact, also as the out stream of sim/streams.py
    np.testing.assert_array_equal(res.y, ref.y)
    np.testing.assert_array_equal(res.out_beats, job_beats(cfg, job, ref.y).out)
    # timing: closed form and beat by beat
    assert res.cycles == gemm_cycles(cfg, T, K, N)
    want = beat_cycles(cfg, T, K, N)
    for stream in ("act", "weight", "params", "out"):
        np.testing.assert_array_equal(getattr(res.trace, stream), want[stream], err_msg=stream)
    assert res.trace.out[-1] == res.cycles
    assert res.trace.params_fifo_peak <= params_fifo_depth(cfg)
    assert res.trace.psum_in.size == res.trace.psum_out.size == 0    # no load, no raw
    # busy PEs
    assert res.busy.shape == (res.cycles + 1,)
    assert res.busy.sum() == T * K * N == res.useful_macs
    np.testing.assert_array_equal(res.busy, expected_busy(cfg, T, K, N))
    assert res.utilization == pytest.approx(T * K * N / (cfg.rows * cfg.cols * res.cycles))
    # overflow accounting
    exact = exact_partial_sums(cfg, job)
    lo, hi = cfg.acc_range
    leaves = bool(np.any((exact < lo) | (exact > hi)))
    assert (res.overflow_events > 0) == leaves
    assert res.acc_bits_needed == bits_for_range(exact.min(), exact.max())
    assert (res.acc_bits_needed > cfg.acc_bits) == leaves


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                  HealthCheck.too_slow])
@given(cases(), st.integers(0, 2**32 - 1))
def test_dont_care_lanes_are_ignored(case, seed):
    """Act lanes past K, weight rows/lanes past K/N and params lanes past N are don't-care."""
    cfg, job = case
    T, K, N = job.T, job.K, job.N
    til = tiling(cfg, T, K, N)
    assume(K % cfg.rows or N % cfg.cols)
    rng = np.random.default_rng(seed)
    beats = job_beats(cfg, job)
    clean = simulate_beats(cfg, beats)

    def garbage(arr, keep, lo, hi):
        noisy = rng.integers(lo, hi, endpoint=True, size=arr.shape)
        return np.where(keep, arr, noisy)

    kt = np.tile(np.repeat(np.tile(np.arange(til.KT), til.TT), cfg.rows), til.NT)
    k_of_w = kt * cfg.rows + np.tile(np.arange(cfg.rows), til.passes)          # weight beat row
    n_of_lane = (np.repeat(til.pass_coords()[:, 0], cfg.rows)[:, None] * cfg.cols
                 + np.arange(cfg.cols))
    weight = garbage(beats.weight, (k_of_w[:, None] < K) & (n_of_lane < N), *cfg.w_range)
    act_kt = np.concatenate([np.repeat(np.arange(til.KT), til.tile_len(tt))
                             for tt in range(til.TT)])
    act_k = np.tile(act_kt, til.NT)[:, None] * cfg.rows + np.arange(cfg.rows)
    act = garbage(beats.act, act_k < K, *cfg.a_range)
    lane_n = np.arange(til.NT)[:, None] * cfg.cols + np.arange(cfg.cols)
    fields = {"weight": weight, "act": act,
              "bias": garbage(beats.bias, lane_n < N, *cfg.acc_range)}
    if cfg.per_channel:
        fields["m"] = garbage(beats.m, lane_n < N, *cfg.mult_range)
        fields["s"] = garbage(beats.s, lane_n < N, 0, 63)
    noisy = simulate_beats(cfg, dataclasses.replace(beats, **fields))
    np.testing.assert_array_equal(noisy.out_beats, clean.out_beats)
    np.testing.assert_array_equal(noisy.busy, clean.busy)
    assert (noisy.cycles, noisy.overflow_events, noisy.acc_bits_needed) == \
        (clean.cycles, clean.overflow_events, clean.acc_bits_needed)


@pytest.mark.parametrize("per_channel", [False, True])
def test_beats_are_truncated_to_port_widths(per_channel):
    """Like the RTL's ports, simulate_beats keeps only the payload field's bits."""
    cfg = ArrayConfig(rows=3, cols=2, w_bits=4, a_bits=5, a_signed=True, acc_bits=12,
                      mult_bits=7, per_channel=per_channel, acc_depth=3)
    job = random_job(cfg, 5, 7, 3, np.random.default_rng(4), extreme=True)
    beats = job_beats(cfg, job)
    k = np.int64(3)       # add multiples of 2**bits: the low bits stay the same
    fields = {"weight": beats.weight + (k << 4), "act": beats.act - (k << 5),
              "bias": beats.bias + (k << 12)}
    if per_channel:
        fields.update(m=beats.m + (k << 7), s=beats.s + (k << 6))
        cmd = beats.cmd
    else:
        cmd = {**beats.cmd, "m": beats.cmd["m"] + (1 << 7), "s": beats.cmd["s"] + (1 << 6)}
    wide = simulate_beats(cfg, dataclasses.replace(beats, cmd=cmd, **fields))
    clean = simulate_beats(cfg, beats)
    np.testing.assert_array_equal(wide.out_beats, clean.out_beats)
    np.testing.assert_array_equal(clean.y, reference_gemm(cfg, job).y)
    assert wide.overflow_events == clean.overflow_events


def test_overflow_events_counted_per_adder():
    """Two rows of 255 * 127 in a 16-bit accumulator: row 1's PE add wraps (64770 needs
    17 bits), the accumulator add of bias 0 and the wrapped column sum does not."""
    cfg = ArrayConfig(rows=2, cols=2, w_bits=8, a_bits=8, acc_bits=16, acc_depth=4)
    job = GemmJob.create(cfg, [[255, 255]], [[127], [127]], [0], 1, 0)
    res = simulate(cfg, job)
    column = 255 * 127 * 2
    assert column > cfg.acc_range[1]
    assert res.overflow_events == 1
    assert res.acc_bits_needed == column.bit_length() + 1
    np.testing.assert_array_equal(res.y, reference_gemm(cfg, job).y)


@pytest.mark.parametrize("w", [[127, -128], [-128, 127]])
@pytest.mark.parametrize("acc_bits", [16, 32])
def test_acc_bits_needed_sees_partial_sums_inside_a_column(w, acc_bits):
    """The widest value lives between PE rows only: row 0 holds 255 * w[0], the column sum
    and the accumulator are small."""
    cfg = ArrayConfig(rows=2, cols=2, w_bits=8, a_bits=8, acc_bits=acc_bits, acc_depth=4)
    job = GemmJob.create(cfg, [[255, 255]], [[w[0]], [w[1]]], [0], 1, 0)
    res = simulate(cfg, job)
    row0, column = 255 * w[0], 255 * (w[0] + w[1])
    assert bits_for_range(min(row0, column), max(row0, column)) > bits_for_range(column, 0)
    assert res.acc_bits_needed == bits_for_range(min(row0, column, 0), max(row0, column, 0))
    assert res.overflow_events == 0


def test_wrapping_accumulator_across_k_tiles():
    """Extreme operands over many K tiles in the narrowest legal accumulator: the model
    wraps like the reference and counts the events."""
    cfg = ArrayConfig(rows=3, cols=4, w_bits=4, a_bits=4, a_signed=True, acc_bits=8,
                      acc_depth=5)
    rng = np.random.default_rng(7)
    job = random_job(cfg, 11, 29, 9, rng, extreme=True)
    res = simulate(cfg, job)
    ref = reference_gemm(cfg, job)
    np.testing.assert_array_equal(res.y, ref.y)
    assert res.overflow_events > 0
    assert res.acc_bits_needed > cfg.acc_bits
    assert res.acc_bits_needed >= ref.acc_bits_needed()


def test_wide_accumulator_never_overflows():
    cfg = ArrayConfig(rows=5, cols=3, w_bits=16, a_bits=16, acc_bits=46, mult_bits=16,
                      per_channel=True, acc_depth=3)
    job = random_job(cfg, 7, 23, 8, np.random.default_rng(1), extreme=True)
    res = simulate(cfg, job)
    assert res.overflow_events == 0
    assert res.acc_bits_needed <= cfg.acc_bits
    np.testing.assert_array_equal(res.y, reference_gemm(cfg, job).y)


def test_full_utilization_goal():
    """Issue goal: T >= 8 (R + C), K, N multiples of the array: cycles <= 1.05 ideal."""
    cfg = ArrayConfig(rows=4, cols=4, acc_depth=64)
    T, K, N = 64, 8, 8
    res = simulate(cfg, random_job(cfg, T, K, N, np.random.default_rng(3)))
    ideal = T * K * N / (cfg.rows * cfg.cols)
    assert res.cycles <= 1.05 * ideal
    assert res.utilization >= 1 / 1.05


def test_trace_is_optional():
    cfg = ArrayConfig(rows=2, cols=3)
    res = simulate(cfg, random_job(cfg, 3, 4, 5, np.random.default_rng(0)))
    assert res.trace is None


def test_result_is_frozen():
    cfg = ArrayConfig(rows=2, cols=2)
    res = simulate(cfg, random_job(cfg, 2, 2, 2, np.random.default_rng(0)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.cycles = 0


def test_job_built_for_another_config_is_rejected():
    per_tensor = ArrayConfig(rows=2, cols=2)
    job = random_job(per_tensor, 3, 3, 3, np.random.default_rng(0))
    # a per-tensor job runs on a per-channel machine: the same (M, S) on every channel
    np.testing.assert_array_equal(simulate(per_tensor.replace(per_channel=True), job).y,
                                  reference_gemm(per_tensor, job).y)
    per_channel = per_tensor.replace(per_channel=True, mult_bits=8)
    job = GemmJob.create(per_channel, [[1]], [[1, 1]], [0, 0], [3, 5], [0, 0])
    with pytest.raises(ValueError, match=r"GemmJob\.m must be one value for every channel "
                                         r"\(a per-tensor machine: ArrayConfig\.per_channel="
                                         r"False\), not \[3, 5\]"):
        simulate(per_tensor, job)
    wide = ArrayConfig(rows=2, cols=2, w_bits=8)
    job = GemmJob.create(wide, [[1]], [[100]], [0], 1, 0)
    with pytest.raises(ValueError, match=r"GemmJob\.w must be in \[-8, 7\]"):
        simulate(wide.replace(w_bits=4), job)


def test_beats_with_wrong_shapes_are_rejected():
    cfg = ArrayConfig(rows=2, cols=2)
    beats = job_beats(cfg, random_job(cfg, 3, 3, 3, np.random.default_rng(0)))
    with pytest.raises(ValueError, match=r"act beats must have shape \(12, 2\)"):
        simulate_beats(cfg, dataclasses.replace(beats, act=beats.act[:-1]))
    with pytest.raises(ValueError, match=r"weight beats must have shape"):
        simulate_beats(cfg, dataclasses.replace(beats, weight=beats.weight[:, :1]))
    with pytest.raises(ValueError, match=r"cmd\.K must be in \[1, 65535\]"):
        simulate_beats(cfg, dataclasses.replace(beats, cmd={**beats.cmd, "K": 0}))



@st.composite
def split_cases(draw):
    """A job that fits the bank whole (ceil(N / cols) * T <= acc_depth), cut along K."""
    cfg = draw(configs())
    N = draw(st.integers(1, 20))
    nt = -(-N // cfg.cols)
    assume(nt <= cfg.acc_depth)
    T = draw(st.integers(1, cfg.acc_depth // nt))
    K = draw(st.integers(2, 30))
    assume(gemm_cycles(cfg, T, K, N) <= MAX_CYCLES)
    job = random_job(cfg, T, K, N, np.random.default_rng(draw(st.integers(0, 2**32 - 1))),
                     extreme=draw(st.booleans()))
    return cfg, job, draw(st.integers(1, K - 1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                  HealthCheck.too_slow])
@given(split_cases())
def test_k_split_chain_matches_reference_and_schedule(case):
    """A K-split chain on one machine (partial sums kept in the bank between jobs): the last
    job's outputs == the numpy reference of the whole job, every beat and cycle count on the
    schedule's closed forms, no output beats before the last job."""
    cfg, job, k_tile = case
    chain = split_k(cfg, job, k_tile)
    assert len(chain) == -(-job.K // k_tile)
    results = simulate_chain(cfg, chain, trace=True)
    assert np.array_equal(results[-1].y, reference_gemm(cfg, job).y)
    for sub, res in zip(chain, results):
        assert res.cycles == gemm_cycles(cfg, sub.T, sub.K, sub.N)
        want = beat_cycles(cfg, sub.T, sub.K, sub.N, emit=sub.emit)
        for name in ("act", "weight", "params", "out"):
            assert np.array_equal(getattr(res.trace, name), want[name]), name
        assert res.useful_macs == sub.T * sub.K * sub.N
        assert res.out_beats.shape[0] == (res.trace.out.size if sub.emit else 0)


def test_accumulate_ignores_bias_and_no_emit_keeps_the_bank():
    """``accumulate`` starts from the bank (bias beats are don't-care); without ``emit``
    the final sums land in entry ``nt * T + t`` and nothing is sent."""
    cfg = ArrayConfig(rows=2, cols=2, acc_depth=6, acc_bits=20, per_channel=True)
    rng = np.random.default_rng(5)
    job = random_job(cfg, 3, 3, 4, rng)
    bank = new_bank(cfg)
    first, last = split_k(cfg, job, 2)
    r0 = simulate(cfg, first, bank=bank)
    sums = first.x @ first.w + first.bias                 # [T, N], no wrap at 20 bits
    for nt in range(2):
        assert np.array_equal(bank[nt * 3:nt * 3 + 3], sums[:, nt * 2:nt * 2 + 2])
    assert r0.out_beats.shape == (0, 2) and not r0.y.any()
    beats = job_beats(cfg, last)
    beats = dataclasses.replace(beats, bias=rng.integers(-999, 999, size=beats.bias.shape))
    r1 = simulate_beats(cfg, beats, bank=bank)
    assert np.array_equal(r1.y, reference_gemm(cfg, job).y)


def test_chained_beats_that_overflow_the_bank_are_rejected():
    cfg = ArrayConfig(rows=2, cols=2, acc_depth=4)
    beats = job_beats(cfg, random_job(cfg, 3, 2, 3, np.random.default_rng(0)))
    beats = dataclasses.replace(beats, cmd=dict(beats.cmd, emit=False))
    with pytest.raises(ValueError, match=r"chained job .* needs ceil\(N / cols\) \* T = 6 "
                                         r"<= acc_depth = 4"):
        simulate_beats(cfg, beats)
