"""``qaccel run`` end to end, ``perf``/``energy --int-network``, bad inputs, the RTL engine."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from qaccel.quant.digits import load_split
from qaccel.sim import ArrayConfig
from qaccel.sim.network import IntNetwork
from qaccel.sim.schedule import gemm_cycles

from qaccel.cli import main

#: small and fast: 20 AdaRound iterations, 64 calibration and 24 test images, 8x8 array
RUN = ["run", "--model", "digits_cnn", "--w-bits", "4", "--a-bits", "8", "--rounding",
       "adaround", "--per-channel", "--rows", "8", "--cols", "8", "--iterations", "20",
       "--calib", "64", "--eval-images", "24"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One ``qaccel run`` (default engine: cycle) in the default workspace, whose caches
    (quantized network, synthesized area) make repeated runs fast; tests/qaccel/test_flow.py
    quantizes in a fresh one."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(RUN + ["--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def report(run_dir):
    return json.loads((run_dir / "report.json").read_text())


def test_report_keys_plots_and_files(run_dir, report):
    for key in ("fp32", "fake_quant", "integer"):
        assert 0.0 <= report["accuracy"][key] <= 100.0
    for key in ("cycles", "energy_j", "area_cells"):
        assert report[key] > 0
    assert report["engine"] == "cycle" and report["eval_images"] == 24
    assert [b["w_bits"] for b in report["bits"]] == [4, 4, 4, 4]
    assert {b["a_bits"] for b in report["bits"]} == {8}
    for name in ("cycles.png", "energy.png"):
        assert (run_dir / name).read_bytes()[:8] == PNG
    assert report["files"]["plots"] == [str(run_dir / "cycles.png"), str(run_dir / "energy.png")]
    rows = (run_dir / "layers.csv").read_text().splitlines()
    assert len(rows) == 1 + len(report["layers"])


def test_integer_accuracy_is_the_executors(run_dir, report):
    """Recomputed independently from the exported net.npz and the digits test split."""
    from qaccel.sim import executor

    net = IntNetwork.load(run_dir / "net.npz")
    _, _, x, y = load_split()
    y_int = executor.run(net, net.input_q.quantize(x[:24].numpy()))
    want = 100.0 * float((y_int.argmax(1) == y[:24].numpy()).mean())
    assert report["accuracy"]["integer"] == want == report["accuracy"]["executor"]


def test_cycles_are_the_analytic_sum_and_the_cycle_model(report):
    hw = ArrayConfig.from_dict(report["hardware"])
    want = sum(r["repeat"] * gemm_cycles(hw, r["T"], r["K"], r["N"]) for r in report["layers"])
    assert report["array_cycles"] == want == sum(r["cycles"] for r in report["layers"])
    vec = report["vector_unit"]                 # pooling and ReLU on the vector unit
    assert vec["cycles"] == sum(r["cycles"] for r in vec["layers"]) > 0
    assert report["cycles"] == want + vec["cycles"]
    assert vec["cycle_share"] == pytest.approx(vec["cycles"] / report["cycles"])
    assert 0 < vec["energy_share"] < 1
    assert all(r["cycles_cycle_model"] == r["cycles"] for r in report["layers"])
    assert report["utilization"] == pytest.approx(
        report["macs"] / (hw.rows * hw.cols * report["cycles"]))
    cats = report["energy_categories_pj"]
    assert sum(cats.values()) * 1e-12 == pytest.approx(report["energy_j"])


def test_analytic_engine_agrees(run_dir, report, tmp_path):
    """Same network (from the workspace cache via net.npz) on the analytic engine: the
    same cycles and energy as the cycle engine."""
    out = tmp_path / "a"
    assert main(["run", "--model", str(run_dir / "net.npz"), "--rows", "8", "--cols", "8",
                 "--engine", "analytic", "--no-area", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["cycles"] == report["cycles"]
    assert rep["energy_j"] == pytest.approx(report["energy_j"])
    assert rep["accuracy"]["integer"] is None          # no loader: no test data
    assert "cycles_cycle_model" not in rep["layers"][0]


def _mixed_npz(run_dir, tmp_path) -> tuple:
    """The run's network with its first layer declared 6-bit: per-layer bits differ."""
    net = IntNetwork.load(run_dir / "net.npz")
    layers = list(net.layers)
    i = net.gemm_layers()[0]
    layers[i] = dataclasses.replace(layers[i], w_bits=6)
    path = dataclasses.replace(net, layers=tuple(layers)).save(tmp_path / "mixed.npz")
    return path, [6, 4, 4, 4]


def test_perf_int_network_uses_the_files_bits(run_dir, tmp_path, capsys):
    path, bits = _mixed_npz(run_dir, tmp_path)
    j = tmp_path / "perf.json"
    assert main(["perf", "--int-network", str(path), "--rows", "8", "--cols", "8",
                 "--acc-depth", "256", "--json", str(j)]) == 0
    assert "W6A8" in capsys.readouterr().out
    rep = json.loads(j.read_text())
    assert [b["w_bits"] for b in rep["bits"]] == bits
    assert rep["config"]["w_bits"] == 6                 # the array holds the widest layer
    # weight traffic from DRAM follows each layer's own width: K * N * w_bits per job
    for lay, w in zip(rep["layers"], bits):
        dram_w = lay["traffic_bits"]["dram"]["weights"]["reads"]
        assert dram_w == lay["repeat"] * lay["K"] * lay["N"] * w


def test_energy_int_network_uses_the_files_bits(run_dir, tmp_path):
    path, bits = _mixed_npz(run_dir, tmp_path)
    j = tmp_path / "energy.json"
    assert main(["energy", "--int-network", str(path), "--rows", "8", "--cols", "8",
                 "--acc-depth", "256", "--json", str(j)]) == 0
    rep = json.loads(j.read_text())
    assert [r["w_bits"] for r in rep["layers"]] == bits
    same = tmp_path / "same.json"
    assert main(["energy", "--int-network", str(run_dir / "net.npz"), "--rows", "8", "--cols",
                 "8", "--acc-depth", "256", "--json", str(same)]) == 0
    base = json.loads(same.read_text())
    assert rep["layers"][0]["total_pj"] > base["layers"][0]["total_pj"]
    assert rep["layers"][1]["total_pj"] == pytest.approx(base["layers"][1]["total_pj"])


@pytest.mark.parametrize("argv, option", [
    (["--model", "no_such_model"], "--model"),
    (["--model", "missing.npz"], "--model"),
    (["--model", "flow_models:factory"], "--data"),
    (["--model", "flow_models:factory", "--data", "flow_models:nope"], "--data"),
    (["--eval-images", "0"], "--eval-images"),
    (["--rows", "1"], "--rows"),
    (["--w-bits", "1"], "--w-bits"),
    (["--clock-mhz", "-5"], "--clock-mhz"),
])
def test_bad_inputs_exit_2_naming_the_option(argv, option, tmp_path, cli_error):
    err = cli_error(["run", *argv, "--out", str(tmp_path / "o")])
    assert option in err
    assert not (tmp_path / "o" / "report.json").exists()


@pytest.mark.parametrize("argv, option", [
    (["--out", "FILE"], "--out"),
    (["--energy-table", "missing.json"], "--energy-table"),
    (["--engine", "fpga"], "--engine"),
])
def test_bad_paths_and_choices_exit_2(argv, option, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    argv = [str(f) if a == "FILE" else a for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:
        main(["run", *argv])
    assert exc.value.code == 2
    assert option in capsys.readouterr().err


def test_int_network_bad_file_exit_2(tmp_path, cli_error, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    assert "--int-network" in cli_error(["perf", "--int-network", str(bad)])
    with pytest.raises(SystemExit) as exc:
        main(["energy", "--int-network", str(tmp_path / "none.npz")])
    assert exc.value.code == 2 and "--int-network" in capsys.readouterr().err


@pytest.mark.rtl
@pytest.mark.xdist_group("rtl-icarus-flow")
def test_rtl_engine_whole_inference(tmp_path, tmp_workspace, require_sim, capsys):
    """A tiny user model on a 4x4 array: one whole inference's GEMMs on the RTL (Icarus),
    outputs and cycles equal to the cycle model's and the analytic count."""
    require_sim("icarus")
    out = tmp_path / "rtl"
    assert main(["run", "--model", "flow_models:factory", "--data", "flow_models:loader",
                 "--rows", "4", "--cols", "4", "--acc-depth", "64", "--engine", "rtl",
                 "--sim", "icarus", "--no-area", "--out", str(out)]) == 0
    assert "RTL (icarus, cocotb) == cycle model" in capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    rtl = rep["rtl"]
    assert rtl["passed"] and rtl["outputs_match"] and rtl["cycles_match"]
    assert rtl["jobs"] == 2                             # conv + linear of one inference
    assert rtl["rtl_cycles"] == rtl["model_cycles"] == rep["array_cycles"]
    assert rtl["equals_analytic"]


# ---- a token network: transformers' BertModel (small config, random weights) ----------

@pytest.fixture(scope="module")
def bert_npz(tmp_path_factory):
    """input_ids + attention_mask -> pooler output of a 1-layer, 4-head BertModel, exported
    at sequence length 9 (W8A8 per-channel)."""
    import transformers  # dev extra (tests only)
    from qaccel.quant import QuantConfig
    from qaccel.quant.capture import capture

    from qaccel import quant

    torch.set_num_threads(1)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=64, vocab_size=100,
                                  max_position_embeddings=64, attn_implementation="sdpa")
    torch.manual_seed(0)
    bert = transformers.BertModel(cfg).eval()
    g = torch.Generator().manual_seed(0)

    def tokens(b, s):
        return torch.randint(0, 100, (b, s), generator=g), torch.ones(b, s, dtype=torch.long)

    gm = capture(bert, (), dict(zip(("input_ids", "attention_mask"), tokens(2, 9))), output=1)
    qm = quant.quantize(gm, [tokens(16, 9)], QuantConfig(w_bits=8, a_bits=8, per_channel=True))
    net = quant.export(qm, tokens(1, 9))
    return net.save(tmp_path_factory.mktemp("bert") / "bert.npz")


def _array_rows(net: IntNetwork, seq: int) -> list[tuple]:
    """``(name, op, T, K, N, repeat)`` of every layer the array runs, counted from the
    layers' geometry: linear T = tokens, matmul one job per head with T = seq."""
    heads, d = 4, 8
    rows = []
    for L in net.layers:
        if L.kind == "linear":
            t = 1 if L.name.startswith("pooler") else seq        # the pooler reads CLS
            rows.append((L.name, "linear", t, L.weight.shape[1], L.out_channels, 1))
        elif L.kind == "matmul":          # QK^T: [S, d] x [d, S], then AV: [S, S] x [S, d]
            qk = sum(r[1] == "matmul" for r in rows) % 2 == 0
            rows.append((L.name, "matmul", seq, d if qk else seq, seq if qk else d, heads))
    return rows


def _vector_counts(net: IntNetwork, seq: int) -> list[tuple]:
    from qaccel.sim import executor

    x = executor.sample_inputs(net, 1, seq)
    return [(n, k, c.ops, c.reads, c.writes) for n, k, c in executor.vector_costs(net, x)]


def test_perf_int_network_token_bert_gemms_and_vector_unit(bert_npz, tmp_path):
    net = IntNetwork.load(bert_npz)
    j = tmp_path / "perf.json"
    assert main(["perf", "--int-network", str(bert_npz), "--seq-len", "7", "--rows", "8",
                 "--cols", "8", "--json", str(j)]) == 0
    rep = json.loads(j.read_text())
    got = [(r["name"], r["op"], r["T"], r["K"], r["N"], r["repeat"]) for r in rep["layers"]]
    assert got == _array_rows(net, 7)
    assert [r[1] for r in got].count("matmul") == 2 and len(got) == 9
    # the stationary operand of QK^T / AV: an unsigned 8-bit activation minus its zero-point
    bits = {b["name"]: b["w_bits"] for b in rep["bits"]}
    for L in net.layers:
        if L.kind == "matmul":
            assert bits[L.name] == L.in_q[1].bits + (not L.in_q[1].signed) == 9
    assert rep["config"]["w_bits"] == 9
    vec = [(v["name"], v["kind"], v["ops"], v["reads"], v["writes"])
           for v in rep["vector_unit"]]
    assert vec == _vector_counts(net, 7)
    assert {"softmax", "layernorm", "add", "embedding"} <= {v[1] for v in vec}
    t = rep["totals"]
    assert t["cycles"] == sum(r["cycles"] for r in rep["layers"]) + sum(
        v["cycles"] for v in rep["vector_unit"])


def test_energy_int_network_token_bert_at_the_exported_length(bert_npz, tmp_path):
    net = IntNetwork.load(bert_npz)
    assert net.meta["seq_len"] == 9                       # recorded by the export
    j = tmp_path / "energy.json"
    assert main(["energy", "--int-network", str(bert_npz), "--rows", "8", "--cols", "8",
                 "--json", str(j)]) == 0
    rep = json.loads(j.read_text())
    got = [(r["name"], r["op"], r["T"], r["K"], r["N"], r["repeat"]) for r in rep["layers"]]
    assert got == _array_rows(net, 9)
    vec = [(v["name"], v["kind"], v["ops"], v["reads"], v["writes"])
           for v in rep["vector_unit"]]
    assert vec == _vector_counts(net, 9)
    assert rep["total"]["categories_pj"]["vector"] == pytest.approx(
        sum(v["total_pj"] for v in rep["vector_unit"])) and \
        rep["total"]["categories_pj"]["vector"] > 0


def test_token_network_sequence_length_errors_name_seq_len(bert_npz, run_dir, tmp_path,
                                                           cli_error):
    err = cli_error(["perf", "--int-network", str(bert_npz), "--seq-len", "65"])
    assert "--seq-len" in err and "exceeds the 64 positions" in err
    net = IntNetwork.load(bert_npz)
    bare = dataclasses.replace(net, meta={}).save(tmp_path / "bare.npz")
    for cmd in ("perf", "energy"):
        assert "--seq-len" in cli_error([cmd, "--int-network", str(bare)])
    assert "--seq-len" in cli_error(["run", "--model", str(bare), "--no-area", "--out",
                                     str(tmp_path / "o")])
    assert not (tmp_path / "o" / "report.json").exists()
    # a fixed-shape network takes no sequence length
    assert "token networks only" in cli_error(["perf", "--int-network",
                                               str(run_dir / "net.npz"), "--seq-len", "4"])


def test_run_token_network_on_the_cycle_model(bert_npz, tmp_path):
    """Every GEMM (linear, QK^T, AV per head) on the cycle model == the analytic count;
    the vector unit's share in report.json; more lanes, fewer vector cycles."""
    rep = {}
    for lanes in (4, 16):
        out = tmp_path / f"l{lanes}"
        assert main(["run", "--model", str(bert_npz), "--seq-len", "6", "--rows", "8",
                     "--cols", "8", "--vector-lanes", str(lanes), "--engine",
                     "cycle" if lanes == 4 else "analytic", "--no-area",
                     "--out", str(out)]) == 0
        rep[lanes] = json.loads((out / "report.json").read_text())
    r = rep[4]
    assert r["seq_len"] == 6
    mm = [x for x in r["layers"] if x["kind"] == "matmul"]
    assert len(mm) == 2 and all(x["repeat"] == 4 and x["T"] == 6 for x in mm)
    assert all(x["cycles_cycle_model"] == x["cycles"] for x in r["layers"])
    v = r["vector_unit"]
    assert [(x["name"], x["ops"]) for x in v["layers"]] == [
        (n, ops) for n, _, ops, _, _ in _vector_counts(IntNetwork.load(bert_npz), 6)]
    assert v["cycles"] == sum(-(-x["ops"] // 4) for x in v["layers"])
    assert r["cycles"] == r["array_cycles"] + v["cycles"]
    assert v["cycle_share"] == pytest.approx(v["cycles"] / r["cycles"])
    assert v["energy_share"] == pytest.approx(v["energy_pj"] / (r["energy_j"] * 1e12))
    q = rep[16]
    assert q["array_cycles"] == r["array_cycles"]
    assert q["vector_unit"]["cycles"] == sum(-(-x["ops"] // 16) for x in v["layers"]) \
        < v["cycles"]
