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
    path = dataclasses.replace(net, layers=tuple(layers), input_q=None, input_shape=None,
                               mask_shape=None).save(tmp_path / "mixed.npz")
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
