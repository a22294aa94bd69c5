"""``qaccel quantize --rounding brecq|qdrop|nwq``: the reconstruction methods from the CLI,
with the --json report."""

import json

import pytest

from qaccel.cli import main


def test_quantize_nwq_writes_network_and_json(tmp_path, capsys):
    out, rep = tmp_path / "net.npz", tmp_path / "r.json"
    rc = main(["quantize", "--model", "digits_cnn", "--w-bits", "2", "--a-bits", "4",
               "--per-channel", "--rounding", "nwq", "--iterations", "150", "--calib", "128",
               "--progress", "off", "--json", str(rep), "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    doc = json.loads(rep.read_text())
    assert doc["method"] == "nwq" and doc["config"]["rounding"] == "nwq"
    acc = doc["accuracy"]
    assert acc["integer"] == pytest.approx(acc["fake_quant"], abs=100 / doc["test_images"])
    # nearest rounding at W2A4 is below 50 % on this model (tests/quant/test_recon.py)
    assert acc["fake_quant"] > 80.0, acc
    assert doc["integer_vs_fake_quant"]["differing"] == 0   # exact mode: the contract
    assert 0 < doc["logit_sqnr_db"] < 60
    assert out.is_file()


def test_unknown_rounding_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["quantize", "--rounding", "gptq", "-o", str(tmp_path / "n.npz")])
    assert exc.value.code == 2 and "--rounding" in capsys.readouterr().err
