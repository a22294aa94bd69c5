"""The cocotb bench's pure-Python parts, without a simulator: don't-care scrambling and the
job round trip through the run directory."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from qaccel.sim import ArrayConfig, random_job
from qaccel.sim.cycle import simulate, simulate_beats
from qaccel.sim.streams import job_beats

from qaccel.rtl_build import load_jobs, save_jobs
from qaccel.rtl_tb import check_job, scramble_dont_cares

CFGS = [ArrayConfig(rows=3, cols=5, w_bits=2, a_bits=4, per_channel=True, mult_bits=10,
                    acc_depth=7),
        ArrayConfig(rows=4, cols=4, acc_depth=8)]


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: c.tag())
def test_scramble_changes_only_dont_care_lanes(cfg):
    rng = np.random.default_rng(0)
    job = random_job(cfg, 17, 10, 11, rng)
    beats = job_beats(cfg, job)
    scrambled = scramble_dont_cares(cfg, beats, rng)
    # something really changed (partial tiles in K and N leave don't-care lanes)
    assert not np.array_equal(scrambled.act, beats.act)
    assert not np.array_equal(scrambled.weight, beats.weight)
    assert not np.array_equal(scrambled.bias, beats.bias)
    # ... and nothing that matters: the model gives the same outputs and cycles
    ref, got = simulate(cfg, job), simulate_beats(cfg, scrambled)
    assert np.array_equal(ref.out_beats, got.out_beats)
    assert ref.cycles == got.cycles
    # real operands untouched (job_beats pads don't-care lanes with 0)
    for name in ("act", "weight", "bias"):
        a, b = getattr(beats, name), getattr(scrambled, name)
        assert np.array_equal(b[a != 0], a[a != 0])


def test_jobs_round_trip(tmp_path):
    cfg = CFGS[0]
    rng = np.random.default_rng(1)
    jobs = [random_job(cfg, 5, 4, 6, rng), random_job(cfg, 9, 2, 3, rng, extreme=True)]
    save_jobs(tmp_path / "j.npz", jobs)
    back = load_jobs(cfg, tmp_path / "j.npz")
    for a, b in zip(jobs, back, strict=True):
        for f in ("x", "w", "bias", "m", "s"):
            assert np.array_equal(getattr(a, f), getattr(b, f))
        assert (a.z_y, a.relu) == (b.z_y, b.relu)


def test_checker_flags_a_wrong_integer_and_wrong_cycles():
    cfg = CFGS[1]
    job = random_job(cfg, 6, 5, 7, np.random.default_rng(2))
    model = simulate(cfg, job)
    good = check_job(cfg, job, model, model.out_beats.copy(), model.cycles, check_cycles=True)
    assert good["ok"] and good["outputs_match"] and good["cycles_match"]
    bad_beats = model.out_beats.copy()
    bad_beats[3, 1] += 1
    bad = check_job(cfg, job, model, bad_beats, model.cycles, check_cycles=True)
    assert not bad["ok"] and bad["n_mismatches"] == 1
    assert bad["mismatches"][0]["beat"] == 3 and bad["mismatches"][0]["lane"] == 1
    late = check_job(cfg, job, model, model.out_beats, model.cycles + 1, check_cycles=True)
    assert not late["ok"] and late["cycles_match"] is False
    short = check_job(cfg, job, model, model.out_beats[:-1], model.cycles, check_cycles=True)
    assert not short["ok"]
    # with stalls the cycle count is not compared
    stalled = check_job(cfg, job, model, model.out_beats, model.cycles + 50, check_cycles=False)
    assert stalled["ok"] and stalled["cycles_match"] is None


def test_checker_fails_when_the_model_disagrees_with_the_reference():
    """RTL == model is not enough: a model whose result differs from the numpy reference
    fails the bench's own check (``ok``), so the cocotb test fails, not only pytest."""
    cfg = CFGS[1]
    job = random_job(cfg, 6, 5, 7, np.random.default_rng(2))
    model = simulate(cfg, job)
    y = model.y.copy()
    y[0, 0] += 1
    wrong = dataclasses.replace(model, y=y)
    rec = check_job(cfg, job, wrong, wrong.out_beats, wrong.cycles, check_cycles=True)
    assert rec["outputs_match"] and rec["cycles_match"]
    assert rec["model_matches_reference"] is False and rec["ok"] is False


def test_missing_tool_skips_or_fails(monkeypatch, tmp_path, require_tool, require_sim):
    """A missing tool skips the tests that need it, unless QACCEL_REQUIRE_SIMS=1 (make test),
    where it fails them. The tools are really looked up: an empty PATH hides Icarus."""
    from qaccel import workspace
    from qaccel.rtl_build import simulator_missing

    assert "unknown simulator 'nosuchsim'" in simulator_missing("nosuchsim")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "iverilog not found" in workspace.current().tool_missing("icarus")
    assert "iverilog not found" in simulator_missing("icarus")
    monkeypatch.delenv("QACCEL_REQUIRE_SIMS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="iverilog not found"):
        require_tool("icarus")
    with pytest.raises(pytest.skip.Exception, match="iverilog not found"):
        require_sim("icarus")
    monkeypatch.setenv("QACCEL_REQUIRE_SIMS", "1")
    with pytest.raises(pytest.fail.Exception, match=r"icarus required \(QACCEL_REQUIRE_SIMS=1\)"):
        require_tool("icarus")
    with pytest.raises(pytest.fail.Exception, match="icarus required"):
        require_sim("icarus")
    monkeypatch.setenv("QACCEL_REQUIRE_SIMS", "0")
    with pytest.raises(pytest.skip.Exception):
        require_tool("icarus")
    with pytest.raises(ValueError, match="unknown tool 'gcc'"):
        workspace.current().tool_missing("gcc")


def _load_raw_job(cfg, rng, T=9, K=6, N=7, load=True, raw=True):
    job = random_job(cfg, T, K, N, rng)
    psum = rng.integers(-500, 500, endpoint=True, size=(T, N)) if load else None
    return dataclasses.replace(job, psum=psum, raw=raw)


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: c.tag())
def test_scramble_load_raw_dont_cares(cfg):
    """psum_in lanes past N, all of bias under load, all of m, s (and relu) under raw are
    scrambled; the model's beats and cycles do not change."""
    rng = np.random.default_rng(5)
    job = _load_raw_job(cfg, rng, N=cfg.cols + 2)       # a partial last n-tile
    beats = job_beats(cfg, job)
    scrambled = scramble_dont_cares(cfg, beats, rng)
    assert not np.array_equal(scrambled.psum_in, beats.psum_in)
    real = beats.psum_in != 0
    assert np.array_equal(scrambled.psum_in[real], beats.psum_in[real])
    assert not np.any(scrambled.bias == beats.bias)     # every lane: bias is don't-care
    if cfg.per_channel:
        assert not np.array_equal(scrambled.m, beats.m)
    else:
        assert (scrambled.cmd["m"], scrambled.cmd["s"]) != (beats.cmd["m"], beats.cmd["s"])
    ref, got = simulate_beats(cfg, beats), simulate_beats(cfg, scrambled)
    assert np.array_equal(ref.out_beats, got.out_beats) and ref.out_beats.shape[0] > 0
    assert ref.cycles == got.cycles


def test_load_raw_jobs_round_trip(tmp_path):
    cfg = CFGS[1]
    rng = np.random.default_rng(3)
    jobs = [_load_raw_job(cfg, rng), _load_raw_job(cfg, rng, load=False),
            _load_raw_job(cfg, rng, raw=False), random_job(cfg, 2, 3, 4, rng)]
    save_jobs(tmp_path / "j.npz", jobs)
    back = load_jobs(cfg, tmp_path / "j.npz")
    for a, b in zip(jobs, back, strict=True):
        assert (a.load, a.raw, a.accumulate, a.emit) == (b.load, b.raw, b.accumulate, b.emit)
        if a.load:
            assert np.array_equal(a.psum, b.psum)


def test_checker_raw_handshakes_and_spill_reference():
    """A raw job's psum_out beats are checked like out beats; a wrong handshake cycle fails
    a gap-free job; a spill chain's last job is checked against the whole chain."""
    from qaccel.sim.cycle import simulate
    from qaccel.sim.reference import reference_gemm

    from qaccel.rtl_tb import merge_spill

    cfg = CFGS[1]
    rng = np.random.default_rng(8)
    whole = random_job(cfg, 6, 9, 5, rng)
    first = dataclasses.replace(whole, x=whole.x[:, :4], w=whole.w[:4], raw=True)
    first_y = reference_gemm(cfg, first).y
    second = dataclasses.replace(whole, x=whole.x[:, 4:], w=whole.w[4:], psum=first_y)
    assert np.array_equal(reference_gemm(cfg, merge_spill(cfg, [first, second])).y,
                          reference_gemm(cfg, whole).y)
    m1 = simulate(cfg, first, trace=True)
    shakes = {name: getattr(m1.trace, name) for name in ("act", "weight", "params", "psum_in",
                                                         "out", "psum_out")}
    good = check_job(cfg, first, m1, m1.out_beats, m1.cycles, True, rtl_handshakes=shakes)
    assert good["ok"] and good["handshakes_match"] and m1.out_beats.shape[0] == 6 * 2
    late = dict(shakes, psum_out=shakes["psum_out"] + 1)
    bad = check_job(cfg, first, m1, m1.out_beats, m1.cycles, True, rtl_handshakes=late)
    assert not bad["ok"] and bad["handshakes_differ"] == ["psum_out"]
    m2 = simulate(cfg, second)
    ok = check_job(cfg, second, m2, m2.out_beats, m2.cycles, True, spill=[first, second])
    assert ok["ok"] and ok["spill"]["chain_len"] == 2
    # a chain whose first job is not the one that was run: the model != the whole reference
    other = dataclasses.replace(first, x=np.zeros_like(first.x))
    wrong = check_job(cfg, second, m2, m2.out_beats, m2.cycles, True, spill=[other, second])
    assert not wrong["ok"] and wrong["model_matches_reference"] is False
