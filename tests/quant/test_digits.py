"""Digits reference models: deterministic split, deterministic training, sane accuracy."""

from __future__ import annotations

import dataclasses

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
    m1 = digits.train("digits_mobilenet", recipe)
    m2 = digits.train("digits_mobilenet", recipe)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    assert digits.cache_path("digits_mobilenet", recipe) != digits.cache_path("digits_mobilenet")


@pytest.mark.parametrize("name,floor", [("digits_cnn", 97.0), ("digits_mobilenet", 96.0)])
def test_models_train_and_cache(name, floor):
    model, calib, test = digits.get_model(name)
    assert digits.cache_path(name).exists()
    acc = digits.evaluate(model, test)
    assert acc >= floor, acc
    again, _, _ = digits.get_model(name)  # from the cache: identical weights
    for (k, v), (_, u) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(v, u), k
    batches = list(calib)
    assert sum(len(b) for b in batches) == 256
    assert all(isinstance(b, torch.Tensor) and b.shape[1:] == (1, 8, 8) for b in batches)
    assert not model.training


def test_mobilenet_has_depthwise_layers():
    m = digits.digits_mobilenet()
    dw = [l for l in m.modules() if isinstance(l, torch.nn.Conv2d) and l.groups > 1]
    assert len(dw) == 3 and all(l.groups == l.in_channels == l.out_channels for l in dw)
    assert any(isinstance(l, torch.nn.ReLU6) for l in m.modules())


def test_unknown_model_raises():
    with pytest.raises(ValueError, match="name"):
        digits.get_model("resnet50")
