"""Digits reference models: deterministic split and training, shipped weights verified on load."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from qaccel.quant import digits

torch.set_num_threads(1)


def test_split_is_deterministic_stratified_and_disjoint():
    a = digits.load_split()
    b = digits.load_split()
    for t, u in zip(a, b):
        assert torch.equal(t, u)
    x_tr, y_tr, x_te, y_te = a
    assert x_tr.shape[1:] == (1, 8, 8) and x_tr.dtype == torch.float32
    assert len(x_tr) + len(x_te) == 1797
    assert 0.25 < len(x_te) / 1797 < 0.35
    assert float(x_tr.min()) >= 0.0 and float(x_tr.max()) <= 1.0
    assert torch.bincount(y_te, minlength=10).min() >= 50  # every class in the test split
    # no test image is also a training image (exact duplicates aside, sklearn has none)
    tr = {bytes(r.numpy().tobytes()) for r in x_tr}
    assert not any(bytes(r.numpy().tobytes()) in tr for r in x_te)


def test_training_is_deterministic():
    recipe = dataclasses.replace(digits.RECIPES["digits_mobilenet"], epochs=1)
    m1 = digits.train("digits_mobilenet", recipe, progress=False)
    m2 = digits.train("digits_mobilenet", recipe, progress=False)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k


@pytest.mark.parametrize("name,floor", [("digits_cnn", 97.0), ("digits_mobilenet", 96.0),
                                        ("digits_vit", 96.0)])
def test_shipped_models_match_their_manifest(name, floor):
    entry = digits.read_manifest()["models"][name]
    path = digits.MODELS_DIR / entry["file"]
    assert path.suffix == ".safetensors" and digits.sha256_file(path) == entry["sha256"]
    assert entry["split"]["seed"] == digits.SPLIT_SEED
    assert entry["split"]["test_fraction"] == digits.TEST_FRACTION
    assert entry["recipe"] == dataclasses.asdict(digits.RECIPES[name])
    assert entry["torch_version"] and entry["training_seed"] == entry["recipe"]["seed"]
    model, calib, test = digits.get_model(name)
    acc = digits.evaluate(model, test)
    assert acc == pytest.approx(entry["test_accuracy"], abs=1e-3) and acc >= floor
    again, _, _ = digits.get_model(name)  # a fresh copy with the same weights
    assert again is not model
    for (k, v), (_, u) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(v, u), k
    batches = list(calib)
    assert sum(len(b) for b in batches) == 256
    assert all(isinstance(b, torch.Tensor) and b.shape[1:] == (1, 8, 8) for b in batches)
    assert not model.training


def test_get_model_never_trains(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("get_model trained a model")

    monkeypatch.setattr(digits, "train", boom)
    model, _, test = digits.get_model("digits_cnn")
    assert digits.evaluate(model, test) > 97.0


def test_calibration_subsets_differ_by_seed():
    a, b = digits.calib_images(256, seed=0), digits.calib_images(256, seed=1)
    assert a.shape == b.shape and not torch.equal(a, b)
    assert torch.equal(a, digits.calib_images(256, seed=0))


def test_save_and_load_round_trip(tmp_path):
    model = digits.digits_cnn().eval()
    manifest = digits.save_models({"digits_cnn": model}, tmp_path)
    entry = manifest["models"]["digits_cnn"]
    assert json.loads((tmp_path / digits.MANIFEST).read_text()) == manifest
    loaded = digits.load_model("digits_cnn", tmp_path)
    for (k, v), (_, u) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(v, u), k
    assert entry["test_accuracy"] == pytest.approx(digits.evaluate(model, (
        digits.load_split()[2], digits.load_split()[3])), abs=1e-3)


def test_tampered_weights_are_refused(tmp_path):
    for f in digits.MODELS_DIR.iterdir():
        shutil.copy(f, tmp_path / f.name)
    weights = tmp_path / "digits_cnn.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        digits.load_model("digits_cnn", tmp_path)
    digits.load_model("digits_mobilenet", tmp_path)  # the untouched one still loads


def test_missing_manifest_or_entry_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="manifest"):
        digits.load_model("digits_cnn", tmp_path)
    (tmp_path / digits.MANIFEST).write_text('{"models": {}}')
    with pytest.raises(ValueError, match="digits_cnn"):
        digits.load_model("digits_cnn", tmp_path)
    (tmp_path / digits.MANIFEST).write_text("not json")
    with pytest.raises(ValueError, match="manifest"):
        digits.load_model("digits_cnn", tmp_path)


def test_mobilenet_has_depthwise_layers():
    m = digits.digits_mobilenet()
    dw = [l for l in m.modules() if isinstance(l, torch.nn.Conv2d) and l.groups > 1]
    assert len(dw) == 3 and all(l.groups == l.in_channels == l.out_channels for l in dw)
    assert any(isinstance(l, torch.nn.ReLU6) for l in m.modules())


def test_vit_takes_rows_as_tokens():
    m = digits.digits_vit().eval()
    x = torch.rand(3, 1, 8, 8)
    assert m(x).shape == (3, 10)
    seen = []
    h = m.blocks[0]["q"].register_forward_hook(lambda _m, _i, o: seen.append(o.shape))
    m(x)
    h.remove()
    assert seen == [torch.Size([3, 8, 32])]       # 8 tokens (image rows) of width 32


def test_unknown_model_and_bad_recipe_raise():
    with pytest.raises(ValueError, match="name"):
        digits.get_model("resnet50")
    with pytest.raises(ValueError, match="epochs"):
        digits.Recipe(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        digits.Recipe(lr=float("nan"))
