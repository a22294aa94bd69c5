"""``qaccel quantize`` / ``qaccel sensitivity`` on the digits CNN."""

import re

import numpy as np
from qaccel.sim import executor
from qaccel.sim.network import IntNetwork

from qaccel.cli import main


def test_quantize_writes_an_integer_network(tmp_path, capsys):
    out = tmp_path / "net.npz"
    rc = main(["quantize", "--model", "digits_cnn", "--w-bits", "8", "--a-bits", "8",
               "--per-channel", "--calib", "64", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    net = IntNetwork.load(out)
    assert net.meta["quant_config"]["per_channel"] is True
    assert [L.kind for L in net.layers].count("conv2d") == 3
    acc = dict(re.findall(r"(FP32|fake-quant|integer network) ([\d.]+)%", text))
    assert float(acc["integer network"]) == float(acc["fake-quant"])   # same decisions
    assert abs(float(acc["fake-quant"]) - float(acc["FP32"])) <= 1.0
    assert "max |diff| 1" in text or "max |diff| 0" in text
    x = net.input_q.quantize(np.zeros((1, *net.input_shape)))
    assert executor.run(net, x).shape == (1, 10)


def test_quantize_bad_option_is_a_clean_error(tmp_path, capsys):
    rc = main(["quantize", "--w-bits", "1", "-o", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and "QuantConfig.w_bits" in err and "[2, 16]" in err


def test_sensitivity_report(tmp_path, capsys):
    out = tmp_path / "sens.md"
    rc = main(["sensitivity", "--model", "digits_cnn", "--w-bits", "4", "--calib", "64",
               "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    md = out.read_text()
    assert "| 0.weight | weight | 4 |" in md and "test accuracy (%)" in md
    assert (tmp_path / "sens.png").read_bytes()[:4] == b"\x89PNG"
    assert "most sensitive:" in text
