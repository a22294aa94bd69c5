"""``qaccel energy``: report, JSON/CSV, sweep plot, and errors."""

from __future__ import annotations

import csv
import json

import pytest
from qaccel.sim import ArrayConfig
from qaccel.sim.analytic import analyze_layer
from qaccel.sim.energy import CATEGORIES, DEFAULT_TABLE_PATH, counts_from_perf, layer_energy
from qaccel.sim.mapper import choose_mapping
from qaccel.sim.topology import read_topology

from qaccel.cli import main

ARRAY = ["--rows", "8", "--cols", "8", "--acc-depth", "32"]


def test_json_csv_match_the_models(topo, tmp_path, capsys):
    js, cs = tmp_path / "o" / "e.json", tmp_path / "o" / "e.csv"
    assert main(["energy", "--topology", str(topo), *ARRAY, "--w-bits", "4", "--per-channel",
                 "--json", str(js), "--csv", str(cs)]) == 0
    out = capsys.readouterr().out
    cfg = ArrayConfig(rows=8, cols=8, acc_depth=32, w_bits=4, per_channel=True)
    expect = [layer_energy(cfg, counts_from_perf(analyze_layer(
        cfg, x.workload(), choose_mapping(cfg, x.workload(), "search", "energy"))))
        for x in read_topology(topo)]                 # --mapping search, the default
    doc = json.loads(js.read_text())
    assert doc["config"]["w_bits"] == 4 and doc["config"]["per_channel"] is True
    assert doc["table"]["name"] == "horowitz45"
    assert [L["total_pj"] for L in doc["layers"]] == pytest.approx([e.total_pj for e in expect])
    assert doc["total"]["total_pj"] == pytest.approx(sum(e.total_pj for e in expect))
    assert sum(doc["total"]["categories_pj"].values()) == pytest.approx(doc["total"]["total_pj"])
    rows = list(csv.DictReader(open(cs)))
    assert [r["name"] for r in rows] == ["L0", "L1", "L2"]
    for r, e in zip(rows, expect):
        assert float(r["total_pj"]) == pytest.approx(e.total_pj)
        assert sum(float(r[f"{c}_pj"]) for c in CATEGORIES) == pytest.approx(e.total_pj)
    assert "per inference" in out and "L1" in out and "pJ/MAC" in out
    assert doc["extrapolated_buffers"] == [] and "extrapolated" not in out
    assert main(["energy", "--topology", str(topo), *ARRAY, "--act-buffer-kib", "4096"]) == 0
    assert "note: act_buffer_kib outside the table's SRAM anchors" in capsys.readouterr().out


def test_sweep_and_plot(topo, tmp_path, capsys):
    png, js = tmp_path / "e.png", tmp_path / "e.json"
    assert main(["energy", "--topology", str(topo), *ARRAY, "--sweep", "W8A8,W4A8,W4A4",
                 "--plot", str(png), "--json", str(js)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sw = json.loads(js.read_text())["sweep"]
    assert [(r["label"], r["scaling"]) for r in sw] == [
        (lab, s) for lab in ("W8A8", "W4A8", "W4A4") for s in ("per-tensor", "per-channel")]
    by = {(r["label"], r["scaling"]): r for r in sw}
    for s in ("per-tensor", "per-channel"):
        assert by["W4A4", s]["total_pj"] < by["W4A8", s]["total_pj"] < by["W8A8", s]["total_pj"]
        assert by["W4A4", s]["cycles"] == by["W8A8", s]["cycles"]
    for lab in ("W8A8", "W4A8", "W4A4"):
        pt, pc = by[lab, "per-tensor"], by[lab, "per-channel"]
        assert pc["total_pj"] - pt["total_pj"] == pytest.approx(pc["params_pj"] - pt["params_pj"])
        assert pc["params_pj"] > pt["params_pj"]
    assert "W4A4" in capsys.readouterr().out


def test_custom_energy_table(topo, tmp_path, capsys):
    data = json.loads(DEFAULT_TABLE_PATH.read_text())
    data["dram_64b"]["use"] = "high"
    tab = tmp_path / "t.json"
    tab.write_text(json.dumps(data))
    js1, js2 = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["energy", "--topology", str(topo), *ARRAY, "--json", str(js1)]) == 0
    assert main(["energy", "--topology", str(topo), *ARRAY, "--energy-table", str(tab),
                 "--json", str(js2)]) == 0
    d1, d2 = json.loads(js1.read_text())["total"], json.loads(js2.read_text())["total"]
    assert d2["categories_pj"]["dram"] == pytest.approx(d1["categories_pj"]["dram"] * 2600 / 1950)
    assert d2["categories_pj"]["mac"] == pytest.approx(d1["categories_pj"]["mac"])


def test_errors(cli_error, topo, tmp_path, capsys):
    err = cli_error(["energy", "--network", "alexnet"])
    assert "unknown network 'alexnet'" in err
    err = cli_error(["energy", "--topology", str(topo), *ARRAY, "--sweep", "W8A8,8x8"])
    assert "--sweep" in err and "'8x8'" in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"add": {"8": 0.03, "32": 0.1}}))
    err = cli_error(["energy", "--topology", str(topo), "--energy-table", str(bad)])
    assert str(bad) in err and "mult" in err
    err = cli_error(["energy", "--topology", str(tmp_path / "none.csv")])
    assert "none.csv" in err
    rows = tmp_path / "rows.csv"
    rows.write_text(topo.read_text().replace("L1,12,12,3,3,16,40,2,", "L1,12,12,3,3,0,40,2,"))
    err = cli_error(["energy", "--topology", str(rows)])
    assert "rows.csv" in err and "row 3" in err and "Channels" in err
    err = cli_error(["energy", "--topology", str(topo), "--rows", "32", "--cols", "32",
                        "--weight-buffer-kib", "1", "--w-bits", "16", "--acc-bits", "40"])
    assert "weight_buffer_kib" in err and "row" in err


def test_area_joins_energy(topo, tmp_path, capsys):
    """--area: the synthesized parts (tiny config, build/ cache) land in the report,
    the sweep rows and the plot."""
    js, png = tmp_path / "a.json", tmp_path / "a.png"
    argv = ["energy", "--topology", str(topo), "--rows", "2", "--cols", "2", "--acc-depth", "4",
            "--w-bits", "4", "--a-bits", "4", "--acc-bits", "12", "--mult-bits", "4",
            "--area", "--sweep", "W4A4", "--plot", str(png), "--json", str(js)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    doc = json.loads(js.read_text())
    s = doc["area"]["summary"]
    assert s["array_cells"] == 4 * s["pe_cells"] > 0
    assert s["datapath_transistors"] == (s["array_transistors"]
                                         + s["requantizer_pt_cols_transistors"]
                                         + s["params_fifo_pt_transistors"])
    assert s["per_channel_overhead_transistors"] > 0
    pt, pc = doc["sweep"]
    assert pt["area"]["datapath_transistors"] == s["datapath_transistors"]
    assert pc["area"]["datapath_transistors"] > pt["area"]["datapath_transistors"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "area (yosys" in out


def test_bert_energy_includes_the_vector_unit(tmp_path, capsys):
    """bert_base: softmax, LayerNorm, GELU and residual adds priced on the vector unit,
    listed, in the totals and the CSV; more lanes change cycles, not energy."""
    js, cs, png = tmp_path / "b.json", tmp_path / "b.csv", tmp_path / "b.png"
    argv = ["energy", "--network", "bert_base", "--seq-len", "16", "--mapping", "fixed"]
    assert main([*argv, "--json", str(js), "--csv", str(cs), "--sweep", "W8A8,W4A4",
                 "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    doc = json.loads(js.read_text())
    vec = {r["name"]: r for r in doc["vector_unit"]}
    assert set(vec) == {"softmax", "attn_residual", "ln1", "gelu", "ffn_residual", "ln2"}
    t = doc["total"]
    e_vec = t["categories_pj"]["vector"]
    assert e_vec == pytest.approx(sum(r["total_pj"] for r in vec.values())) and e_vec > 0
    assert t["total_pj"] == pytest.approx(sum(L["total_pj"] for L in doc["layers"]) + e_vec)
    assert t["cycles"] == sum(L["cycles"] for L in doc["layers"]) + sum(
        r["cycles"] for r in vec.values())
    assert vec["ln1"]["terms_pj"]["vector.div"] > 0 and vec["gelu"]["terms_pj"]["vector.lut"] > 0
    assert "vector unit total: 6 layers" in out and "ln1" in out
    rows = list(csv.DictReader(open(cs)))
    assert [r["unit"] for r in rows].count("vector") == 6
    assert sum(float(r["vector_pj"]) for r in rows) == pytest.approx(e_vec)
    assert all(r["vector_pj"] > 0 for r in doc["sweep"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wide = tmp_path / "w.json"
    assert main([*argv, "--vector-lanes", "128", "--json", str(wide)]) == 0
    w = json.loads(wide.read_text())["total"]
    assert w["categories_pj"]["vector"] == pytest.approx(e_vec) and w["cycles"] < t["cycles"]


def test_resnet50_energy_has_the_vector_category(tmp_path, capsys):
    """energy --network resnet50 (default settings): the max pool, 16 residual adds and the
    global average pool priced on the vector unit, in the totals and the sweep."""
    js = tmp_path / "r.json"
    assert main(["energy", "--network", "resnet50", "--json", str(js), "--sweep",
                 "W8A8,W4A4"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(js.read_text())
    vec = doc["vector_unit"]
    assert [r["kind"] for r in vec] == ["maxpool2d"] + ["add"] * 16 + ["global_avgpool"]
    t = doc["total"]
    e_vec = t["categories_pj"]["vector"]
    assert e_vec > 0 and e_vec == pytest.approx(sum(r["total_pj"] for r in vec))
    assert t["total_pj"] == pytest.approx(sum(L["total_pj"] for L in doc["layers"]) + e_vec)
    assert t["cycles"] == sum(L["cycles"] for L in doc["layers"]) + sum(
        r["cycles"] for r in vec)
    assert sum(r["ops"] for r in vec) == 40_550_400
    assert vec[1]["terms_pj"]["vector.add"] > 0 and vec[0]["terms_pj"]["vector.buffer"] > 0
    assert "vector unit total: 18 layers" in out
    assert all(r["vector_pj"] > 0 for r in doc["sweep"])


def test_report_totals_count_the_vector_units_dram():
    from qaccel.sim.energy import default_table
    from qaccel.sim.workload import GemmWorkload, VectorWorkload

    from qaccel.flow import network_energy_report

    cfg, g = ArrayConfig(rows=8, cols=8), [GemmWorkload("a", 8, 16, 16)]
    emb = VectorWorkload("emb", "embedding", ((1, 8),), (1, 8, 16))
    plain = network_energy_report(cfg, g, default_table())["total"]
    rep = network_energy_report(cfg, g, default_table(), vectors=[emb])
    assert rep["total"]["dram_bits"] == plain["dram_bits"] + 8 * 16 * cfg.a_bits
    assert rep["vector_unit"][0]["terms_pj"]["vector.dram"] > 0
