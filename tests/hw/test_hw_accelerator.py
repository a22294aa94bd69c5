"""Whole GEMM jobs on the Amaranth ``Accelerator``: every output integer against
``sim.reference.reference_gemm`` and the cycle count against ``sim.schedule.gemm_cycles``."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qaccel.hw.accelerator import Accelerator
from qaccel.hw.amaranth_sim import run_job
from qaccel.sim.config import ArrayConfig
from qaccel.sim.job import random_job
from qaccel.sim.reference import reference_gemm, reference_spill_chain
from qaccel.sim.schedule import beat_cycles, gemm_cycles, params_fifo_depth
from qaccel.sim.streams import (
    job_beats,
    out_beats_to_matrix,
    pack_cmd,
    pack_lanes,
    pack_params,
    scramble_dont_cares,
    unpack_lanes,
)


def check_job(cfg: ArrayConfig, T: int, K: int, N: int, seed: int, *, gaps: float = 0.0,
              extreme: bool = False, relu: bool | None = None):
    rng = np.random.default_rng(seed)
    job = random_job(cfg, T, K, N, rng, extreme=extreme, relu=relu)
    ref = reference_gemm(cfg, job)
    expect = job_beats(cfg, job, ref.y).out
    run = run_job(cfg, job, gaps=gaps, seed=seed)
    assert run.out.shape == expect.shape
    bad = np.argwhere(run.out != expect)
    assert bad.size == 0, f"{len(bad)} wrong outputs, first at beat/lane {bad[0].tolist()}: " \
                          f"{run.out[tuple(bad[0])]} != {expect[tuple(bad[0])]}"
    if gaps == 0.0:
        assert run.stalls == 0
        assert run.cycles == gemm_cycles(cfg, T, K, N)
        for name, cycles in beat_cycles(cfg, T, K, N).items():
            assert np.array_equal(run.handshakes[name], cycles), name
    else:
        assert run.cycles > gemm_cycles(cfg, T, K, N)
    return job, ref, run


CASES = {
    # name: (config, (T, K, N))
    "4x4_w8a8_pt_partial_TKN": (ArrayConfig(acc_depth=4), (11, 9, 10)),
    "3x5_w2a4u": (ArrayConfig(rows=3, cols=5, w_bits=2, a_bits=4, acc_bits=16, acc_depth=4),
                  (9, 7, 12)),
    "4x4_w8a8s_per_channel": (ArrayConfig(a_signed=True, per_channel=True, acc_depth=6),
                              (13, 10, 7)),
    "2x3_w4a8_pc_deep": (ArrayConfig(rows=2, cols=3, w_bits=4, per_channel=True, acc_depth=16),
                         (5, 5, 8)),
    "5x2_rows_gt_cols": (ArrayConfig(rows=5, cols=2, a_signed=True, acc_depth=3), (7, 11, 3)),
    "2x2_depth1": (ArrayConfig(rows=2, cols=2, acc_depth=1), (3, 3, 3)),
    "single_tile": (ArrayConfig(), (1, 1, 1)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_job_outputs_and_cycles(name):
    cfg, (T, K, N) = CASES[name]
    job, ref, _run = check_job(cfg, T, K, N, seed=len(name))
    if T * N > 20:
        # the job is informative: outputs spread, not all clamped to one value
        assert len(np.unique(ref.y)) > 3


def test_job_multiple_tiles_everywhere():
    cfg = ArrayConfig(rows=3, cols=2, acc_depth=4, per_channel=True)
    T, K, N = 10, 8, 5      # TT = 3, KT = 3, NT = 3, all partial at the end
    check_job(cfg, T, K, N, seed=11)


@pytest.mark.parametrize("relu", [False, True])
def test_acc16_wrap_extreme(relu):
    cfg = ArrayConfig(acc_bits=16, acc_depth=8)
    job, ref, _run = check_job(cfg, 9, 13, 6, seed=5 + relu, extreme=True, relu=relu)
    assert np.any(ref.acc != ref.acc_exact), "the job must overflow a 16-bit accumulator"


@pytest.mark.parametrize("cfg,shape,gaps", [
    (ArrayConfig(per_channel=True, acc_depth=4), (10, 9, 9), 0.35),
    (ArrayConfig(rows=3, cols=5, w_bits=2, a_bits=4, acc_bits=12, acc_depth=4), (6, 7, 11),
     0.5),
])
def test_back_pressure_random_gaps(cfg, shape, gaps):
    _job, _ref, run = check_job(cfg, *shape, seed=23, gaps=gaps)
    assert run.stalls > 0


def test_params_fifo_depth_bound():
    assert params_fifo_depth(ArrayConfig(rows=4, cols=4)) == 4
    assert params_fifo_depth(ArrayConfig(rows=2, cols=256)) == 3
    assert params_fifo_depth(ArrayConfig(rows=16, cols=2)) == 3


def test_back_to_back_jobs_and_zero_dim_cmd():
    """Two jobs on one machine (cmd accepted only when idle), with a T = 0 command in
    between that is consumed without output."""
    cfg = ArrayConfig(rows=2, cols=3, acc_depth=4, per_channel=True)
    rng = np.random.default_rng(4)
    jobs = [random_job(cfg, 5, 3, 4, rng), random_job(cfg, 3, 5, 2, rng)]
    dut = Accelerator(cfg)
    queues = {"cmd": [], "weight": [], "act": [], "params": []}
    expect = []
    zero_cmd = pack_cmd(cfg, dict(T=0, K=3, N=3, z_y=0, relu=False, accumulate=False,
                                  emit=True, load=False, raw=False))
    for i, job in enumerate(jobs):
        beats = job_beats(cfg, job, reference_gemm(cfg, job).y)
        queues["cmd"].append(pack_cmd(cfg, beats.cmd))
        if i == 0:
            queues["cmd"].append(zero_cmd)
        queues["weight"] += [pack_lanes(r, cfg.w_bits) for r in beats.weight]
        queues["act"] += [pack_lanes(r, cfg.a_bits) for r in beats.act]
        queues["params"] += [pack_params(cfg, beats, nt) for nt in range(beats.bias.shape[0])]
        expect.append(beats.out)
    expect = np.concatenate(expect)
    got, cmd_cycles, out_cycles = [], [], []

    async def tb(ctx):
        pos = dict.fromkeys(queues, 0)
        ctx.set(dut.out.ready, 1)
        for cycle in range(400):
            for name, q in queues.items():
                port = getattr(dut, name)
                ctx.set(port.valid, pos[name] < len(q))
                if pos[name] < len(q):
                    ctx.set(port.payload.as_value(), q[pos[name]])
            fired = {n: pos[n] < len(q) and ctx.get(getattr(dut, n).ready)
                     for n, q in queues.items()}
            if fired["cmd"]:
                cmd_cycles.append((cycle, ctx.get(dut.busy)))
            if ctx.get(dut.out.valid):
                got.append(ctx.get(dut.out.payload.as_value()))
                out_cycles.append(cycle)
            await ctx.tick()
            for n, f in fired.items():
                pos[n] += bool(f)
            if len(got) == len(expect):
                break

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    out = np.stack([unpack_lanes(w, cfg.cols, cfg.a_bits, cfg.a_signed) for w in got])
    assert np.array_equal(out, expect)
    assert [busy for _c, busy in cmd_cycles] == [0, 0, 0]
    n0 = len(job_beats(cfg, jobs[0]).out)
    c0 = cmd_cycles[0][0]
    assert out_cycles[n0 - 1] - c0 == gemm_cycles(cfg, jobs[0].T, jobs[0].K, jobs[0].N)
    # the T = 0 command is taken the cycle after job 0 ends, job 1 the cycle after that
    assert cmd_cycles[1][0] == out_cycles[n0 - 1] + 1
    assert cmd_cycles[2][0] == cmd_cycles[1][0] + 1
    assert out_cycles[-1] - cmd_cycles[2][0] == gemm_cycles(cfg, jobs[1].T, jobs[1].K,
                                                              jobs[1].N)


def test_accelerator_rejects_non_config():
    with pytest.raises(ValueError, match=r"^Accelerator.cfg must be an ArrayConfig, not "
                                         r"\{'rows': 4\}$"):
        Accelerator({"rows": 4})


@pytest.mark.parametrize(("cfg", "shape", "k_tile"), [
    (ArrayConfig(rows=3, cols=2, acc_depth=12, per_channel=True), (4, 11, 5), 3),
    (ArrayConfig(rows=2, cols=3, acc_depth=8, a_signed=True, acc_bits=18), (4, 9, 6), 4),
])
def test_k_split_chain_matches_cycle_model(cfg, shape, k_tile):
    """A K-split chain back to back on one Accelerator (partial sums kept in the bank):
    no output before the last job, its outputs == the reference of the whole job, every
    job's cycles and handshakes == the cycle model's."""
    from qaccel.hw.amaranth_sim import run_jobs
    from qaccel.sim.cycle import simulate_chain
    from qaccel.sim.job import split_k

    job = random_job(cfg, *shape, np.random.default_rng(sum(shape)), extreme=True)
    chain = split_k(cfg, job, k_tile)
    runs = run_jobs(cfg, chain)
    models = simulate_chain(cfg, chain, trace=True)
    for sub, run, model in zip(chain, runs, models):
        assert np.array_equal(run.out, model.out_beats)
        assert run.cycles == model.cycles == gemm_cycles(cfg, sub.T, sub.K, sub.N)
        for name in ("act", "weight", "params", "out"):
            assert np.array_equal(run.handshakes[name], getattr(model.trace, name)), name
    assert [r.out.shape[0] for r in runs[:-1]] == [0] * (len(chain) - 1)
    assert np.array_equal(job_beats(cfg, job, reference_gemm(cfg, job).y).out, runs[-1].out)
    # random valid / ready gaps: the same outputs, every job only slower
    slow = run_jobs(cfg, chain, gaps=0.3, seed=7)
    assert np.array_equal(slow[-1].out, runs[-1].out)
    assert all(s.cycles > r.cycles for s, r in zip(slow, runs))


# ---- partial-sum spill: load / raw jobs, psum_in / psum_out streams ------------------------

def _psum_in_cycles(cfg: ArrayConfig, T: int, K: int, N: int) -> np.ndarray:
    """No stalls: the psum_in beat of a vector is taken in the accumulate cycle of its first
    K pass, R + C cycles after that pass's activation beat (independent of the model)."""
    from qaccel.sim.schedule import tiling

    til = tiling(cfg, T, K, N)
    act = beat_cycles(cfg, T, K, N)["act"]
    first_k = np.repeat(til.pass_coords()[:, 2] == 0, til.pass_lengths())
    return act[first_k] + cfg.rows + cfg.cols


SPILL_CFGS = [
    ArrayConfig(rows=3, cols=2, acc_depth=4, per_channel=True, acc_bits=16),
    ArrayConfig(rows=2, cols=3, acc_depth=3, a_signed=True, acc_bits=18),
    ArrayConfig(rows=4, cols=4, acc_depth=5, w_bits=4, mult_bits=12),
]


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(ci=st.integers(0, len(SPILL_CFGS) - 1), T=st.integers(1, 9), K=st.integers(1, 9),
       N=st.integers(1, 8), load=st.booleans(), raw=st.booleans(), extreme=st.booleans(),
       seed=st.integers(0, 2**16))
def test_load_raw_job_matches_cycle_model(ci, T, K, N, load, raw, extreme, seed):
    """Random load / raw jobs, every don't-care scrambled: out and psum_out beats, the cycle
    count and every stream's handshake cycles == the cycle model (== gemm_cycles: the flags
    cost nothing); the model == the numpy reference; psum_in taken at the first K pass's
    accumulate cycle; with random stream gaps and stalls the same beats, no fewer cycles."""
    import dataclasses

    from qaccel.hw.amaranth_sim import run_beats
    from qaccel.sim.cycle import simulate_beats

    cfg = SPILL_CFGS[ci]
    rng = np.random.default_rng(seed)
    job = random_job(cfg, T, K, N, rng, extreme=extreme)
    psum = rng.integers(*cfg.acc_range, endpoint=True, size=(T, N)) if load else None
    job = dataclasses.replace(job, psum=psum, raw=raw)
    ref = reference_gemm(cfg, job)
    beats = scramble_dont_cares(cfg, job_beats(cfg, job), rng)
    run = run_beats(cfg, [beats])[0]
    model = simulate_beats(cfg, beats, trace=True)
    assert np.array_equal(model.y, ref.y)
    assert np.array_equal(run.psum_out if raw else run.out, model.out_beats)
    assert (run.out if raw else run.psum_out).shape == (0, cfg.cols)
    assert run.cycles == model.cycles == gemm_cycles(cfg, T, K, N)
    for name in ("act", "weight", "params", "out", "psum_in", "psum_out"):
        assert np.array_equal(run.handshakes[name], getattr(model.trace, name)), name
    if load:
        assert np.array_equal(run.handshakes["psum_in"], _psum_in_cycles(cfg, T, K, N))
    else:
        assert run.handshakes["psum_in"].size == 0
    if raw:     # psum_out in the cycles the out beats would take
        assert np.array_equal(run.handshakes["psum_out"], beat_cycles(cfg, T, K, N)["out"])
    # random gaps on every input (psum_in too) and stalls on out / psum_out: same beats
    slow = run_beats(cfg, [beats], gaps=0.3, seed=seed)[0]
    assert np.array_equal(slow.out, run.out) and np.array_equal(slow.psum_out, run.psum_out)
    assert slow.cycles >= run.cycles


@pytest.mark.parametrize(("cfg", "shape", "k_tile", "raw_end"), [
    (SPILL_CFGS[0], (9, 10, 5), 4, False),      # T > acc_depth, N % cols != 0
    (SPILL_CFGS[1], (7, 7, 8), 2, True),        # ends raw: the chain's sums, not requantized
    (SPILL_CFGS[2], (11, 13, 6), 4, False),
])
def test_spill_chain_matches_cycle_model(cfg, shape, k_tile, raw_end):
    """A whole spill chain on one Accelerator, the host feeding each job's psum_out back as
    the next job's psum_in: every job's beats, cycles and handshakes == the cycle model's,
    the last job's outputs == the reference of the unsplit job; with random stream gaps and
    stalls the same outputs, every job slower."""
    import dataclasses

    from qaccel.hw.amaranth_sim import run_spill_chain
    from qaccel.sim.cycle import simulate

    job = random_job(cfg, *shape, np.random.default_rng(sum(shape)), extreme=True)
    job = dataclasses.replace(job, raw=raw_end)
    chain = reference_spill_chain(cfg, job, k_tile)
    assert len(chain) >= 3 and not any(j.chained for j in chain)
    runs = run_spill_chain(cfg, chain)
    prev = None
    for sub, run in zip(chain, runs):
        if prev is not None:        # the model loads what the RTL sent
            sub = dataclasses.replace(sub, psum=out_beats_to_matrix(cfg, prev.psum_out,
                                                                   sub.T, sub.N))
        model = simulate(cfg, sub, trace=True)
        assert np.array_equal(run.psum_out if sub.raw else run.out, model.out_beats)
        assert run.cycles == model.cycles == gemm_cycles(cfg, sub.T, sub.K, sub.N)
        for name in ("act", "weight", "params", "out", "psum_in", "psum_out"):
            assert np.array_equal(run.handshakes[name], getattr(model.trace, name)), name
        prev = run
    expect = job_beats(cfg, job, reference_gemm(cfg, job).y)
    assert np.array_equal(runs[-1].psum_out if raw_end else runs[-1].out,
                          expect.psum_out if raw_end else expect.out)
    slow = run_spill_chain(cfg, chain, gaps=0.3, seed=3)
    for s, r in zip(slow, runs):
        assert np.array_equal(s.out, r.out) and np.array_equal(s.psum_out, r.psum_out)
        assert s.cycles > r.cycles


def test_spill_chain_refuses_a_job_that_does_not_load():
    from qaccel.hw.amaranth_sim import run_spill_chain

    cfg = SPILL_CFGS[0]
    job = random_job(cfg, 3, 4, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"jobs\[1\] must load the raw sums of jobs\[0\]"):
        run_spill_chain(cfg, [job, job])


def test_sim_run_spill_chain_with_the_rtl_as_simulate_fn():
    """``sim.cycle.run_spill_chain`` driving the Amaranth Accelerator (its ``simulate_fn``):
    every job's sums / outputs and cycles == the cycle model's run of the same chain, and
    the chain's result == the reference of the unsplit job."""
    from types import SimpleNamespace

    from qaccel.sim.cycle import run_spill_chain

    cfg = SPILL_CFGS[2]
    job = random_job(cfg, 12, 11, 7, np.random.default_rng(12), extreme=True)
    runs = []

    def on_rtl(c, sub):
        run = run_job(c, sub)
        runs.append(run)
        beats = run.psum_out if sub.raw else run.out
        return SimpleNamespace(y=out_beats_to_matrix(c, beats, sub.T, sub.N),
                               cycles=run.cycles)

    rtl = run_spill_chain(cfg, job, 4, on_rtl)
    model = run_spill_chain(cfg, job, 4)
    assert len(rtl) == len(model) == 3
    for r, m in zip(rtl, model):
        assert np.array_equal(r.y, m.y) and r.cycles == m.cycles
    assert np.array_equal(rtl[-1].y, reference_gemm(cfg, job).y)
    assert [run.psum_out.shape[0] > 0 for run in runs] == [True, True, False]
