"""``qaccel train``: the shipped recipe still trains to the shipped accuracy."""

from __future__ import annotations

import json

import pytest
from qaccel.quant import digits

from qaccel import workspace
from qaccel.cli import main


def test_train_all_reproduces_shipped_accuracy(tmp_path, capsys):
    # the recipe test of issue 7: within 0.5 points of the shipped accuracy (one CPU may
    # train slightly different weights than another; the shipped ones are the reference)
    out = tmp_path / "models"
    assert main(["train", "--out", str(out)]) == 0
    got = json.loads((out / digits.MANIFEST).read_text())["models"]
    shipped = digits.read_manifest()["models"]
    assert set(got) == set(digits.ARCHS)
    for name, entry in got.items():
        assert abs(entry["test_accuracy"] - shipped[name]["test_accuracy"]) <= 0.5, name
        assert entry["recipe"] == shipped[name]["recipe"]
        assert digits.sha256_file(out / entry["file"]) == entry["sha256"]
        model = digits.load_model(name, out)  # what was written loads back, verified
        assert digits.evaluate(model, digits.load_split()[2:]) == pytest.approx(
            entry["test_accuracy"], abs=1e-3)
    text = capsys.readouterr().out
    assert "digits_cnn: test accuracy" in text and "shipped" in text


def test_default_output_is_the_workspace(tmp_path, monkeypatch, capsys):
    def quick_train(name, recipe=None, *, progress=None):  # the recipe itself is tested above
        return digits.ARCHS[name]().eval()

    monkeypatch.setattr(digits, "train", quick_train)
    shipped = {f.name: f.read_bytes() for f in digits.MODELS_DIR.iterdir()}
    workspace.use(tmp_path / "ws")
    try:
        assert main(["train", "--model", "digits_cnn"]) == 0
    finally:
        workspace.use(None)
    written = json.loads((tmp_path / "ws" / "models" / digits.MANIFEST).read_text())
    assert list(written["models"]) == ["digits_cnn"]
    assert {f.name: f.read_bytes() for f in digits.MODELS_DIR.iterdir()} == shipped
    assert "differs from the shipped file" in capsys.readouterr().out


def test_bad_arguments_exit_2(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    for argv, option in ((["train", "--model", "resnet50"], "--model"),
                         (["train", "--out", str(f)], "--out")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "error: argument" in err and option in err, err
