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
    cs, js = tmp_path / "b.csv", tmp_path / "b.json"
    assert main(["perf", "--network", "bert_base", "--seq-len", "64", "--csv", str(cs),
                 "--json", str(js)]) == 0
    rows = list(csv.DictReader(open(cs)))
    assert len(rows) == 8 + 6 and rows[3]["op"] == "matmul" and rows[3]["T"] == "64"
    assert [r["unit"] for r in rows] == ["array"] * 8 + ["vector"] * 6
    vec = {r["name"]: r for r in rows[8:]}
    assert [vec[n]["op"] for n in ("softmax", "ln1", "gelu", "attn_residual")] == [
        "softmax", "layernorm", "lut", "add"]
    assert int(vec["softmax"]["writes"]) == 12 * 64 * 64           # heads x seq x seq
    assert int(vec["gelu"]["writes"]) == 64 * 3072
    out = capsys.readouterr().out
    assert "utilization" in out and "vector unit total: 6 layers" in out
    doc = json.loads(js.read_text())
    t = doc["totals"]
    assert t["vector_cycles"] == sum(int(r["cycles"]) for r in rows[8:]) > 0
    assert t["cycles"] == t["array_cycles"] + t["vector_cycles"]
    assert t["vector_lanes"] == 32                                  # = cols by default


def test_network_resnet18_lists_and_counts_its_vector_layers(tmp_path, capsys):
    """perf --network resnet18: the max pool, the 8 residual adds and the global average
    pool are listed after the array's layers, and the total grows over the GEMM-only
    total by exactly their analyze_vector cycles (ceil(ops / 32 lanes))."""
    from qaccel.sim.analytic import analyze_vector

    from qaccel.mapping import vector_workloads_from_model
    from qaccel.networks import build_network

    js, cs = tmp_path / "r.json", tmp_path / "r.csv"
    assert main(["perf", "--network", "resnet18", "--json", str(js), "--csv", str(cs)]) == 0
    out = capsys.readouterr().out
    assert "vector unit total: 10 layers" in out and "layer4.1.add0" in out
    rows = list(csv.DictReader(open(cs)))
    vec = [r for r in rows if r["unit"] == "vector"]
    assert [r["op"] for r in vec] == ["maxpool2d"] + ["add"] * 8 + ["global_avgpool"]
    assert [r["unit"] for r in rows] == ["array"] * 21 + ["vector"] * 10
    cfg = ArrayConfig(rows=32, cols=32, acc_depth=256)
    want = [analyze_vector(cfg, v) for v in vector_workloads_from_model(
        *build_network("resnet18"))]
    assert [int(r["cycles"]) for r in vec] == [vp.cycles for vp in want]
    assert want[0].cycles == -(-64 * 56 * 56 * 9 // 32)                # maxpool, 9-window
    t = json.loads(js.read_text())["totals"]
    gemm_only = sum(int(r["cycles"]) for r in rows if r["unit"] == "array")
    assert t["array_cycles"] == gemm_only
    assert t["cycles"] - gemm_only == t["vector_cycles"] == sum(vp.cycles for vp in want)
    assert t["vector_cycles"] == 221_936


def test_bert_vector_ops_scale_with_batch_and_tokens():
    """BERT-base's vector-unit layers: adds, LayerNorm and GELU per token, softmax per
    score (seq x seq per head); every count proportional to the batch."""
    from qaccel.sim.analytic import analyze_vector

    from qaccel.networks.bert import bert_vector_workloads

    cfg = ArrayConfig(rows=32, cols=32)

    def perf(batch, seq):
        return {v.name: analyze_vector(cfg, v) for v in bert_vector_workloads(batch, seq)}

    base, twice, longer = perf(1, 32), perf(2, 32), perf(1, 64)
    for name, vp in base.items():
        assert twice[name].ops == 2 * vp.ops and twice[name].writes == 2 * vp.writes
        if name != "softmax":
            assert longer[name].ops == 2 * vp.ops, name
    assert longer["softmax"].writes == 4 * base["softmax"].writes
    assert 3.9 * base["softmax"].ops < longer["softmax"].ops < 4 * base["softmax"].ops
    assert base["ln1"].traffic["buffer", "params"].reads == 2 * 768 * cfg.acc_bits
    # I-BERT's integer GELU above the table limit
    kinds = {v.name: v.kind for v in bert_vector_workloads(1, 8, a_bits=12)}
    assert kinds["gelu"] == "gelu"


@pytest.fixture(scope="module")
def encoder_npz(tmp_path_factory):
    """A small exported encoder layer (softmax, LayerNorm, GELU table, residual adds)."""
    import torch
    from flow_models import Encoder
    from qaccel.quant import QuantConfig

    from qaccel import quant

    torch.manual_seed(0)
    x = torch.randn(16, 6, 16)
    net = quant.export(quant.quantize(Encoder().eval(), [x], QuantConfig()), x[:1])
    return net.save(tmp_path_factory.mktemp("enc") / "enc.npz")


def test_int_network_vector_rows_equal_the_executors_counts(encoder_npz, tmp_path, capsys):
    """perf --int-network: the vector unit's rows are the executor's vector_costs on one
    sample (ops, elements read / written), cycles ops / lanes, traffic elements x bits."""
    from qaccel.sim import executor
    from qaccel.sim.network import IntNetwork

    net = IntNetwork.load(encoder_npz)
    want = executor.vector_costs(net, executor.sample_inputs(net))
    assert {k for _, k, _ in want} >= {"softmax", "layernorm", "lut", "add"}
    js, cs = tmp_path / "p.json", tmp_path / "p.csv"
    assert main(["perf", "--int-network", str(encoder_npz), "--rows", "8", "--cols", "8",
                 "--vector-lanes", "6", "--json", str(js), "--csv", str(cs)]) == 0
    out = capsys.readouterr().out
    rows = json.loads(js.read_text())["vector_unit"]
    assert [(r["name"], r["kind"]) for r in rows] == [(n, k) for n, k, _ in want]
    by = {L.name: L for L in net.layers}
    for r, (name, _, c) in zip(rows, want):
        assert (r["ops"], r["reads"], r["writes"]) == (c.ops, c.reads, c.writes)
        assert r["lanes"] == 6 and r["cycles"] == -(-c.ops // 6)
        assert r["traffic_bits"]["buffer"]["outputs"]["writes"] == c.writes * by[
            name].out_q.bits
        assert r["traffic_bits"]["dram"]["activations"]["reads"] == 0
        assert name in out
    assert "vector unit total" in out
    csv_rows = [r for r in csv.DictReader(open(cs)) if r["unit"] == "vector"]
    assert [int(r["ops"]) for r in csv_rows] == [c.ops for _, _, c in want]


def test_int_network_energy_has_the_vector_rows(encoder_npz, tmp_path, capsys):
    js = tmp_path / "e.json"
    assert main(["energy", "--int-network", str(encoder_npz), "--rows", "8", "--cols", "8",
                 "--json", str(js)]) == 0
    out = capsys.readouterr().out
    doc = json.loads(js.read_text())
    vec = doc["vector_unit"]
    assert vec and all(r["total_pj"] > 0 for r in vec)
    assert doc["total"]["categories_pj"]["vector"] == pytest.approx(
        sum(r["total_pj"] for r in vec))
    assert "vector unit total" in out and "% of the total" in out


@pytest.mark.parametrize("value", ["-1", "5000"])
def test_bad_vector_lanes_exit_2_naming_the_field(cli_error, value):
    err = cli_error(["perf", "--network", "bert_base", "--seq-len", "8",
                     "--vector-lanes", value])
    assert "vector_lanes" in err and value in err


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
