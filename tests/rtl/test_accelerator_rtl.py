"""cocotb benches: the RTL (``hw``) against the cycle model (``sim.cycle``) on Icarus and
Verilator. See tests/rtl/README.md for the flow, caching, waveforms and seeds."""

from __future__ import annotations

import pytest
from qaccel.sim.schedule import tiling
from rtl_configs import CONFIGS, BenchConfig, feed_flags, make_jobs, scramble_flags, seed_for

from qaccel.rtl_build import RtlRun, run_jobs

SIMS = ("icarus", "verilator")


def _params():
    for sim in SIMS:
        for name in CONFIGS:
            # one xdist worker per build directory: a (simulator, config) pair is never built
            # twice in parallel (make test runs pytest -n 2 --dist loadgroup)
            yield pytest.param(sim, name, id=f"{sim}-{name}",
                               marks=[pytest.mark.xdist_group(f"rtl-{sim}-{name}")])


def _explain(run: RtlRun) -> str:
    return (f"{run.summary()}\nlog: {run.log}\nrun dir: {run.run_dir}\n"
            f"(re-run with QACCEL_WAVES=1 for waveforms)")


def _check(run: RtlRun, n_jobs: int, cycles_checked: bool) -> None:
    assert len(run.jobs) == n_jobs, f"the bench stopped early\n{_explain(run)}"
    for rec in run.jobs:
        assert rec["error"] is None, f"job {rec['index']}: {rec['error']}\n{_explain(run)}"
        assert rec["n_out_rtl"] == rec["n_out_model"], _explain(run)
        assert rec["outputs_match"], (f"job {rec['index']}: {rec['n_mismatches']} output "
                                      f"integers differ, first {rec['mismatches']}\n"
                                      f"{_explain(run)}")
        if cycles_checked:
            assert rec["rtl_cycles"] == rec["model_cycles"], (
                f"job {rec['index']}: RTL took {rec['rtl_cycles']} cycles, model "
                f"{rec['model_cycles']}\n{_explain(run)}")
            assert rec["handshakes_match"], (f"job {rec['index']}: handshake cycles of "
                                             f"{rec['handshakes_differ']} differ from the "
                                             f"model's\n{_explain(run)}")
        else:
            assert rec["cycles_match"] is None
        # the model itself must agree with the plain numpy reference
        assert rec["model_matches_reference"], f"cycle model != reference\n{_explain(run)}"
    assert run.passed, f"cocotb reported a failure\n{_explain(run)}"


@pytest.mark.parametrize("bench", list(CONFIGS.values()), ids=list(CONFIGS))
def test_job_mix_covers_partial_tiles(bench: BenchConfig):
    """The job mixes really exercise partial tiles in T, K and N and a sub-tile job."""
    cfg = bench.cfg
    specs = bench.jobs + (bench.stall_job,)
    assert any(s.T % cfg.acc_depth and s.T > cfg.acc_depth for s in specs)
    assert any(s.K % cfg.rows and s.K > cfg.rows for s in specs)
    assert any(s.N % cfg.cols and s.N > cfg.cols for s in specs)
    assert any(s.T < cfg.acc_depth and s.K < cfg.rows and s.N < cfg.cols for s in specs)
    assert any(s.extreme for s in specs)
    assert all(tiling(cfg, s.T, s.K, s.N).passes >= 1 for s in specs)
    # a K-split chain (partial sums kept in the bank) in two of the configs
    chains = [s for s in specs if s.k_tile and s.n_jobs > 2]
    if bench.name in ("4x4_w8a8_pt", "8x8_w4a8_pc"):
        assert chains and all(-(-s.N // cfg.cols) * s.T <= cfg.acc_depth for s in chains)
        # ... and a partial-sum spill chain whose sums could not stay in the bank (T >
        # acc_depth, N not a multiple of cols), gap-free and with stalls
        spills = [s for s in bench.jobs if s.spill and s.n_jobs > 2]
        assert spills and all(s.T > cfg.acc_depth and s.N % cfg.cols for s in spills)
        assert bench.stall_chain is not None and bench.stall_chain.n_jobs > 2


@pytest.mark.rtl
@pytest.mark.parametrize(("sim", "name"), list(_params()))
def test_rtl_matches_model(sim: str, name: str, require_sim):
    """Gap-free random jobs back to back, K-split chains included: every output integer and
    the cycle count (a job without ``emit`` sends nothing and ends where its last beat
    would have been; its chain's last job matches the reference of the whole job)."""
    require_sim(sim)
    bench = CONFIGS[name]
    jobs = make_jobs(bench, bench.jobs, seed_for(bench))
    run = run_jobs(bench.cfg, jobs, sim, gaps=[0.0] * len(jobs),
                   scramble=scramble_flags(bench.jobs), seed=seed_for(bench),
                   name=f"jobs-{name}", feed=feed_flags(bench.jobs))
    _check(run, len(jobs), cycles_checked=True)
    _check_spill(run, jobs, feed_flags(bench.jobs))
    quiet = [rec for rec, job in zip(run.jobs, jobs) if not job.emit]
    assert all(rec["n_out_rtl"] == 0 and rec["rtl_cycles"] for rec in quiet)
    if any(s.k_tile for s in bench.jobs):
        assert quiet and any(job.accumulate and job.emit for job in jobs)
    if bench.cfg.acc_bits <= 16:
        # the narrow accumulator really wrapped, and the RTL still matched the model
        assert any(rec["overflow_events"] > 0 for rec in run.jobs)


def _check_spill(run: RtlRun, jobs, feed) -> None:
    """Load / raw jobs really used the new streams: a raw job's beats came on psum_out (the
    checker compared them), a fed job loaded them, and the spill chain's last job matched
    the reference of the whole chain (``model_matches_reference`` with ``chain_len``)."""
    for rec, job, fed in zip(run.jobs, jobs, feed):
        assert rec["spill"] == {"load": job.load, "raw": job.raw,
                                "chain_len": rec["spill"]["chain_len"]}
        assert rec["fed"] == fed
        if job.raw:
            assert rec["n_out_rtl"] == rec["n_out_model"] > 0
    if any(feed):
        lens = [rec["spill"]["chain_len"] for rec in run.jobs]
        assert max(lens) >= 3 and all(rec["model_matches_reference"] for rec in run.jobs)


@pytest.mark.rtl
@pytest.mark.parametrize(("sim", "name"), list(_params()))
def test_rtl_matches_model_with_stalls(sim: str, name: str, require_sim):
    """Random valid/ready gaps on every stream (30%; psum_in gaps and psum_out stalls too,
    in a spill chain): outputs exact, and stalls only add cycles."""
    require_sim(sim)
    bench = CONFIGS[name]
    seed = seed_for(bench) + 1000
    specs = [bench.stall_job] + ([bench.stall_chain] if bench.stall_chain else [])
    jobs = make_jobs(bench, specs, seed)
    run = run_jobs(bench.cfg, jobs, sim, gaps=[0.3] * len(jobs),
                   scramble=scramble_flags(specs), seed=seed, name=f"stalls-{name}",
                   feed=feed_flags(specs))
    _check(run, len(jobs), cycles_checked=False)
    _check_spill(run, jobs, feed_flags(specs))
    for rec in run.jobs:
        assert rec["rtl_cycles"] > rec["model_cycles"], "30% stalls should cost cycles"
