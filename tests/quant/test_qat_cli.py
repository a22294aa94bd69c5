"""``qaccel qat``: trains from the PTQ start, writes the integer network and the --json
report; bad options are refused with exit status 2 before any work."""

import json

import numpy as np
import pytest
from qaccel.sim import executor
from qaccel.sim.network import IntNetwork

from qaccel import flow
from qaccel.cli import main


def _status(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_qat_writes_network_and_json_report(tmp_path, capsys):
    out, rep = tmp_path / "net.npz", tmp_path / "qat.json"
    rc = main(["qat", "--model", "digits_cnn", "--w-bits", "3", "--a-bits", "3",
               "--per-channel", "--epochs", "1", "--calib", "128", "--progress", "off",
               "--json", str(rep), "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    doc = json.loads(rep.read_text())
    acc = doc["accuracy"]
    assert acc["integer"] == pytest.approx(acc["fake_quant"], abs=100 / doc["test_images"])
    assert acc["fake_quant"] > acc["ptq"]              # one epoch already recovers
    assert doc["config"]["quant"]["w_bits"] == 3 and doc["config"]["bn_folding"] == "static"
    assert doc["training"]["epochs_run"] == 1 and len(doc["training"]["val_loss"]) == 1
    assert doc["integer_vs_fake_quant"]["differing"] == 0   # exact mode: the contract
    assert 0 < doc["logit_sqnr_db"] < 60
    net = IntNetwork.load(out)
    assert net.meta["quant_config"]["w_bits"] == 3
    x = net.input_q.quantize(np.zeros((1, *net.input_shape)))
    assert executor.run(net, x).shape == (1, 10)


@pytest.mark.parametrize("argv, word", [
    (["--w-bits", "1"], "--w-bits"),
    (["--epochs", "0"], "--epochs"),
    (["--lr", "-1"], "--lr"),
    (["--val-fraction", "1"], "--val-fraction"),
    (["--bn-folding", "double"], "--bn-folding"),
    (["--rounding", "bitsplit"], "--rounding"),
    (["--bn-folding", "per_channel"], "--bn-folding must be"),     # needs --per-channel
])
def test_bad_options_exit_2_before_work(argv, word, tmp_path, capsys, monkeypatch):
    def boom(*_a, **_k):
        raise AssertionError("work started before the options were checked")
    monkeypatch.setattr(flow, "load_model", boom)
    assert _status(["qat", *argv, "-o", str(tmp_path / "n.npz")]) == 2
    assert word in capsys.readouterr().err
