"""``qaccel perf / energy --mapping fixed|search --objective ...``."""

from __future__ import annotations

import json

import pytest
from qaccel.sim import ArrayConfig
from qaccel.sim.analytic import analyze_layer
from qaccel.sim.energy import counts_from_perf, layer_energy
from qaccel.sim.mapper import search_mapping
from qaccel.sim.topology import read_topology

from qaccel.cli import main

ARRAY = ["--rows", "8", "--cols", "8", "--acc-depth", "32", "--act-buffer-kib", "1",
         "--weight-buffer-kib", "2"]
CFG = ArrayConfig(rows=8, cols=8, acc_depth=32, act_buffer_kib=1, weight_buffer_kib=2)


@pytest.mark.parametrize("objective", ["energy", "latency", "edp"])
def test_perf_search_is_the_default_and_matches_the_mapper(topo, tmp_path, capsys, objective):
    js, fx = tmp_path / "s.json", tmp_path / "f.json"
    assert main(["perf", "--topology", str(topo), *ARRAY, "--objective", objective,
                 "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert main(["perf", "--topology", str(topo), *ARRAY, "--mapping", "fixed",
                 "--json", str(fx)]) == 0
    ws = [x.workload() for x in read_topology(topo)]
    doc, fixed = json.loads(js.read_text()), json.loads(fx.read_text())
    assert doc["mapping"] == "search" and doc["objective"] == objective
    want = [analyze_layer(CFG, w, search_mapping(CFG, w, objective)) for w in ws]
    assert [L["mapping"] for L in doc["layers"]] == [lp.mapping.to_dict() for lp in want]
    assert [L["dram_bits"] for L in doc["layers"]] == [lp.dram_bits for lp in want]
    assert [L["cycles"] for L in doc["layers"]] == [lp.cycles for lp in want]
    assert [L["dram_bits"] for L in fixed["layers"]] == [analyze_layer(CFG, w).dram_bits
                                                         for w in ws]
    # the 1 KiB activation buffer makes the fixed nest re-read L0's input per n-tile
    assert fixed["layers"][0]["traffic_bits"]["dram"]["activations"]["reads"] == \
        3 * 16 * 16 * 8 * 8
    assert "x compulsory" in out and "mapping search" in out


def test_energy_mapping_and_objective(topo, tmp_path, capsys):
    js = tmp_path / "e.json"
    assert main(["energy", "--topology", str(topo), *ARRAY, "--objective", "latency",
                 "--json", str(js)]) == 0
    doc = json.loads(js.read_text())
    ws = [x.workload() for x in read_topology(topo)]
    want = [layer_energy(CFG, counts_from_perf(analyze_layer(
        CFG, w, search_mapping(CFG, w, "latency")))).total_pj for w in ws]
    assert [L["total_pj"] for L in doc["layers"]] == pytest.approx(want)
    assert doc["mapping"] == "search" and doc["objective"] == "latency"
    assert "mapping: search (objective latency)" in capsys.readouterr().out
    totals = {}
    for mode in ("fixed", "search"):
        assert main(["energy", "--topology", str(topo), *ARRAY, "--mapping", mode,
                     "--json", str(js)]) == 0
        totals[mode] = json.loads(js.read_text())["total"]
    # L0's input (2 KiB) does not fit: the fixed nest reads it 3 times, the search once
    # plus halos; less traffic, less energy
    assert totals["search"]["dram_bits"] < totals["fixed"]["dram_bits"]
    assert totals["search"]["total_pj"] < totals["fixed"]["total_pj"]


def test_bad_mapping_options(cli_error, topo):
    err = cli_error(["perf", "--topology", str(topo), "--scalesim-compat", "--mapping",
                     "search"])
    assert "--mapping search does not apply to --scalesim-compat" in err
    assert "--objective" in cli_error(["energy", "--topology", str(topo), "--objective",
                                       "speed"])
    assert "--mapping" in cli_error(["perf", "--topology", str(topo), "--mapping", "best"])


def test_no_mapping_fits_names_row_layer_operand_buffer(cli_error, topo):
    err = cli_error(["perf", "--topology", str(topo), "--rows", "128", "--cols", "128",
                     "--weight-buffer-kib", "1"])
    assert f"{topo}: row 2: layer 'L0': no mapping fits: the weights need" in err
    assert "ArrayConfig.weight_buffer_kib=1" in err
