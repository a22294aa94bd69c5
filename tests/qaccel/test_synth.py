"""Area from Yosys: stat parsing, a small PE synthesis (cold cache), the ``qaccel synth`` CLI
and the requantizer / FIFO per-channel cost (the work directory's cache: seconds after the
first run). Yosys is required under ``QACCEL_REQUIRE_SIMS=1``."""

from __future__ import annotations

import json

import pytest
from qaccel.sim import ArrayConfig

import qaccel.synth as qs
from qaccel.cli import main

# a tiny configuration: every synthesis below takes seconds
TINY = ArrayConfig(rows=2, cols=2, w_bits=4, a_bits=4, acc_bits=12, mult_bits=4, acc_depth=4)


@pytest.fixture
def yosys(require_tool):
    require_tool("yosys")


def test_parse_stat_sums_the_hierarchy():
    stat = {"modules": {
        "\\top": {"num_cells": 3, "num_cells_by_type": {"$_AND_": 2, "$_DFF_P_": 1, "\\sub": 2},
                  "estimated_num_transistors": "100"},
        "\\sub": {"num_cells": 5, "num_cells_by_type": {"$_XOR_": 4, "\\leaf": 1},
                  "estimated_num_transistors": "40"},
        "\\leaf": {"num_cells": 1, "num_cells_by_type": {"$_DFF_P_": 1},
                   "estimated_num_transistors": "16"},
    }}
    cells, tr, by_type, modules = qs.parse_stat(stat, "top")
    assert by_type == {"$_AND_": 2, "$_DFF_P_": 3, "$_XOR_": 8}
    assert cells == 13 and tr == 100
    assert modules["sub"]["cells"] == 5 and modules["leaf"]["cells"] == 1
    with pytest.raises(ValueError, match="no module 'nope'"):
        qs.parse_stat(stat, "nope")
    stat["modules"]["\\top"]["estimated_num_transistors"] = "90+"
    with pytest.raises(ValueError, match="could not price"):
        qs.parse_stat(stat, "top")


def test_pe_synthesis_registers_cache_and_width_scaling(yosys, tmp_workspace):
    a = qs.synth_part(TINY, "pe")
    assert not a.cached and a.flow == "noabc"
    # the PE's registers (hw/README.md): a, swap, psum, w_active, w_shadow
    assert a.flops == TINY.a_bits + 1 + TINY.acc_bits + 2 * TINY.w_bits
    assert a.cells > a.flops and a.transistors > a.cells
    b = qs.synth_part(TINY, "pe")
    assert b.cached and (b.cells, b.transistors) == (a.cells, a.transistors)
    # the part's Verilog sits in the Verilog cache, its synthesis in the one Yosys cache
    assert (tmp_workspace.root / "verilog" / TINY.rtl_key() / "qaccel_pe.v").exists()
    assert len(list((tmp_workspace.root / "synth").glob("*/result.json"))) == 1
    # a config differing only in fields the PE ignores shares the Verilog-hash cache
    c = qs.synth_part(TINY.replace(mult_bits=5), "pe")
    assert c.cached and c.cells == a.cells
    wide = qs.synth_part(TINY.replace(w_bits=6, a_bits=6), "pe")
    assert wide.cells > a.cells and wide.transistors > a.transistors


def test_cli_synth_pe_and_errors(yosys, tmp_path, capsys):
    js = tmp_path / "a.json"
    argv = ["synth", "--parts", "pe", "--rows", "2", "--cols", "2", "--w-bits", "4",
            "--a-bits", "4", "--acc-bits", "12", "--mult-bits", "4", "--acc-depth", "4",
            "--json", str(js)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    doc = json.loads(js.read_text())
    pe = doc["parts"]["pe"]
    assert doc["summary"]["pe_cells"] == pe["cells"]
    assert doc["summary"]["array_cells"] == 4 * pe["cells"]
    assert f"per PE: {pe['cells']:,} cells" in out
    assert main(["synth", "--parts", "pe,bogus"]) == 2
    err = capsys.readouterr().err
    assert "qaccel: error:" in err and "bogus" in err and "requantizer" in err


def test_requantizer_per_channel_costs_registers(yosys):
    rep = qs.area_report(TINY, ("requantizer", "params_fifo"))
    s, parts = rep["summary"], rep["parts"]
    pt, pc = parts["requantizer@pt"], parts["requantizer@pc"]
    assert pc["flops"] > pt["flops"] and pc["transistors"] > pt["transistors"]
    f_pt, f_pc = parts["params_fifo@pt"], parts["params_fifo@pc"]
    # the FIFO holds cols x (mult_bits + 6) more bits per entry per channel
    assert (f_pc["flops"] - f_pt["flops"]) % (TINY.cols * (TINY.mult_bits + 6)) == 0
    assert f_pc["flops"] > f_pt["flops"]
    assert s["per_channel_overhead_transistors"] == (
        pc["transistors"] - pt["transistors"] + f_pc["transistors"] - f_pt["transistors"])
