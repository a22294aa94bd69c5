"""``qaccel perf``: tables, JSON/CSV, compat mode, and errors naming file, row and field."""

from __future__ import annotations

import csv
import json
import pathlib

import pytest
from qaccel.sim import ArrayConfig
from qaccel.sim.analytic import analyze_layer
from qaccel.sim.scalesim_compat import compat_layer
from qaccel.sim.topology import read_topology

from qaccel.cli import main

PEER = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "peer" / "scalesim"


def test_topology_json_csv_match_analytic_model(topo, tmp_path, capsys):
    js, cs = tmp_path / "o" / "r.json", tmp_path / "o" / "r.csv"
    argv = ["perf", "--topology", str(topo), "--rows", "8", "--cols", "12", "--acc-depth", "64",
            "--w-bits", "4", "--json", str(js), "--csv", str(cs)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    cfg = ArrayConfig(rows=8, cols=12, acc_depth=64, w_bits=4)
    expect = [analyze_layer(cfg, x.workload()) for x in read_topology(topo)]
    doc = json.loads(js.read_text())
    assert doc["config"]["w_bits"] == 4 and doc["scalesim_compat"] is False
    assert [lay["cycles"] for lay in doc["layers"]] == [e.cycles for e in expect]
    assert doc["totals"]["cycles"] == sum(e.cycles for e in expect)
    assert doc["layers"][0]["traffic_bits"]["dram"]["weights"]["reads"] == 72 * 20 * 4
    rows = list(csv.DictReader(open(cs)))
    assert [int(r["cycles"]) for r in rows] == [e.cycles for e in expect]
    assert int(rows[1]["dram_weights_reads_bits"]) == 144 * 40 * 4
    assert f"{sum(e.cycles for e in expect):,} cycles" in out and "L2" in out


@pytest.mark.parametrize("df", ["ws", "os", "is"])
def test_scalesim_compat_mode(topo, tmp_path, capsys, df):
    js = tmp_path / "c.json"
    assert main(["perf", "--topology", str(topo), "--scalesim-compat", "--dataflow", df,
                 "--rows", "8", "--cols", "12", "--json", str(js)]) == 0
    doc = json.loads(js.read_text())
    expect = [compat_layer(8, 12, df, x.workload()).cycles for x in read_topology(topo)]
    assert [lay["cycles"] for lay in doc["layers"]] == expect
    assert doc["dataflow"] == df and doc["model"] == "scalesim-compat"
    assert f"dataflow {df}" in capsys.readouterr().out


def test_gemm_topology(tmp_path, capsys):
    p = tmp_path / "g.csv"
    p.write_text("Layer, M, N, K,\nqk, 128, 128, 64,\n")
    assert main(["perf", "--topology", str(p), "--gemm", "--rows", "8", "--cols", "8"]) == 0
    assert "qk" in capsys.readouterr().out


def test_network_bert(capsys, tmp_path):
    cs = tmp_path / "b.csv"
    assert main(["perf", "--network", "bert_base", "--seq-len", "64", "--csv", str(cs)]) == 0
    rows = list(csv.DictReader(open(cs)))
    assert len(rows) == 8 and rows[3]["op"] == "matmul" and rows[3]["T"] == "64"
    assert "utilization" in capsys.readouterr().out


def test_dataflow_requires_compat(cli_error, topo, capsys):
    err = cli_error(["perf", "--topology", str(topo), "--dataflow", "os"])
    assert "--dataflow os is only available with --scalesim-compat" in err
    assert "weight-stationary (ws)" in err


def test_unknown_network(cli_error, capsys):
    err = cli_error(["perf", "--network", "vgg16"])
    assert "unknown network 'vgg16'" in err and "resnet50" in err


@pytest.mark.parametrize("row, needle", [
    ("L9,12,12,3,3,16,40,", "row 5: expected 8 fields"),
    ("L9,12,12,3,3,0,40,2,", "row 5: field 'Channels' must be positive, not 0"),
    ("L9,12,12,3,3,16,4x,2,", "row 5: field 'Num Filter' must be an integer"),
])
def test_malformed_topology(cli_error, topo, tmp_path, row, needle):
    p = tmp_path / "bad.csv"
    p.write_text(topo.read_text() + row + "\n")
    err = cli_error(["perf", "--topology", str(p)])
    assert str(p) in err and needle in err


def test_missing_topology_and_gemm_misuse(cli_error, tmp_path, capsys):
    assert "nope.csv" in cli_error(["perf", "--topology", str(tmp_path / "nope.csv")])
    assert "--gemm applies to --topology" in cli_error(["perf", "--network", "resnet18",
                                                        "--gemm"])
    assert "--seq-len applies to --network bert_base" in cli_error(
        ["perf", "--network", "digits_cnn", "--seq-len", "4"])


def test_buffer_too_small_names_file_row_field(cli_error, topo, capsys):
    err = cli_error(["perf", "--topology", str(topo), "--rows", "128", "--cols", "128",
                        "--weight-buffer-kib", "1"])
    assert f"{topo}: row 2" in err and "layer 'L0'" in err
    assert "ArrayConfig.weight_buffer_kib=1" in err


def test_dimension_too_large_for_dim_bits(cli_error, tmp_path, capsys):
    p = tmp_path / "g.csv"
    p.write_text("Layer, M, N, K,\nbig, 70000, 8, 8,\n")
    err = cli_error(["perf", "--topology", str(p)])
    assert f"{p}: row 2: layer 'big'" in err and "T=70000" in err and "dim_bits=16" in err
    assert main(["perf", "--topology", str(p), "--dim-bits", "17"]) == 0


def test_bad_array_option(cli_error, topo, capsys):
    assert "ArrayConfig.rows" in cli_error(["perf", "--topology", str(topo), "--rows", "0"])


@pytest.mark.shared
@pytest.mark.skipif(not PEER.is_dir(), reason="../shared/peer/scalesim not present")
def test_peer_resnet18_compat_total(capsys):
    assert main(["perf", "--topology", str(PEER / "resnet18.csv"), "--scalesim-compat"]) == 0
    assert "2,519,815 cycles" in capsys.readouterr().out      # SCALE-Sim's own total
