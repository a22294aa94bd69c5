"""The reconstruction engine (quant.reconstruction): units, the shared rounding, QDrop /
NWQ mixing, export exactness of BRECQ / QDrop / NWQ, and their accuracy over nearest on
real digits at W2A4."""

from __future__ import annotations

import pytest
import torch
from qaccel.quant import QuantConfig, digits
from qaccel.quant import reconstruction as R
from qmodels import resnetish, seq_cnn
from test_exact import _exact_vs_executor

from qaccel import quant

METHODS = ["brecq", "qdrop", "nwq"]


def test_blocks_never_cut_a_residual_block():
    qm = quant.quantize(resnetish(), [torch.randn(32, 3, 8, 8)], QuantConfig(progress=False))
    units = R.find_units(qm, "block", 2)
    layers = [n.target for u in units for n in u.layers]
    assert layers == [n for n, _ in quant.quant_layers(qm)]     # each layer once, in order
    for u in units:
        inside = set(u.nodes) | {u.start}
        for n in u.nodes:                  # every input of a unit node is inside or its start
            for a in n.all_input_nodes:
                assert a in inside, (n, a)
    whole = R.find_units(qm, "network")
    assert len(whole) == 1 and whole[0].start.op == "placeholder"
    assert len(whole[0].layers) == len(layers)


def test_softmax_rounding_anneals_to_the_hard_rounding():
    w = torch.randn(6, 5)
    s = torch.tensor(0.25)
    r = R.SoftRounding(w, s, -4, 3, kind="softmax")
    r.tau = 1.0
    soft = r.soft_weight()
    assert torch.allclose(soft, torch.clamp(w, -1.0, 0.75), atol=0.03 * 0.25)  # starts ~W
    r.tau = 1e-4
    torch.testing.assert_close(r.soft_weight(), s * r.hard_int())
    rr = R.SoftRounding(w, s, -4, 3)                      # AdaRound's rectified sigmoid
    torch.testing.assert_close(rr.soft_weight(), s * torch.clamp(w / s, -4, 3))


def test_mix_keeps_fp_values_with_probability_p():
    q = quant.Quantizer(2)
    q.set_range(0.0, 3.0)
    mix = R._Mix(q, torch.Generator().manual_seed(0))
    x = torch.rand(20000) * 3
    assert torch.equal(mix(x), q(x))
    mix.p = 1.0
    assert torch.equal(mix(x), x)
    mix.p = 0.3
    kept = (mix(x) == x) & (q(x) != x)
    assert abs(float(kept.sum()) / float((q(x) != x).sum()) - 0.3) < 0.02


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_fn", [resnetish, seq_cnn], ids=["resnetish", "seq_cnn"])
def test_method_exports_exactly(method, model_fn):
    x = torch.randn(96, 3, 8, 8)
    cfg = QuantConfig(w_bits=4, a_bits=4, per_channel=True, rounding=method, iterations=40,
                      progress=False)
    qm = quant.quantize(model_fn(), [x[:48], x[48:]], cfg)
    near = quant.quantize(model_fn(), [x[:48], x[48:]], cfg.replace(rounding="nearest"))
    changed = 0
    for (_, a), (_, b) in zip(quant.quant_layers(qm), quant.quant_layers(near)):
        assert a.w_int is not None                      # integer weights fixed
        changed += int((a.weight_int() != b.weight_int()).sum())
    assert changed > 0
    _, got, want = _exact_vs_executor(qm, torch.randn(64, 3, 8, 8))
    assert int((got != want).sum()) == 0               # exact mode: to the last bit


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_name", ["digits_cnn", "digits_mobilenet"])
def test_digits_method_exports_exactly(method, model_name):
    """W2A4 per-channel with learned activation step sizes (LSQ): the exact mode equals the
    executor on the whole test split, 0 differing integers at every layer."""
    model, _, test = digits.get_model(model_name)
    cfg = QuantConfig(w_bits=2, a_bits=4, per_channel=True, rounding=method, iterations=30,
                      progress=False)
    qm = quant.quantize(model, digits.calib_loader(128, seed=0), cfg)
    _, got, want = _exact_vs_executor(qm, test[0])
    assert got.shape == (len(test[0]), 10) and int((got != want).sum()) == 0


def test_untraceable_model_is_refused():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) if float(x.sum()) > 0 else -self.fc(x)

    cfg = QuantConfig(rounding="nwq", iterations=2, allow_fallback=True, progress=False)
    with pytest.warns(quant.FallbackWarning), pytest.raises(ValueError, match="nwq"):
        quant.quantize(Branchy(), [torch.rand(8, 4)], cfg)


@pytest.fixture(scope="module")
def digits_w2a4():
    """digits_cnn W2A4 per-channel, 3 calibration seeds, 150 iterations per unit."""
    model, _, test = digits.get_model("digits_cnn")
    acc = {}
    for m in ["nearest", *METHODS]:
        acc[m] = [digits.evaluate(quant.quantize(model, digits.calib_loader(256, seed=s),
                                                 QuantConfig(w_bits=2, a_bits=4,
                                                             per_channel=True, rounding=m,
                                                             iterations=150, seed=s,
                                                             progress=False)), test)
                  for s in range(3)]
    return acc


@pytest.mark.parametrize("method", METHODS)
def test_reconstruction_beats_nearest_beyond_the_seed_spread(digits_w2a4, method):
    """Measured at 200 iterations: nearest 46.8-48.8 %, BRECQ 96.5-97.0, QDrop 90.2-90.4,
    NWQ 93.0-94.6 (FP32 99.1)."""
    near, got = digits_w2a4["nearest"], digits_w2a4[method]
    spread = max(max(near) - min(near), max(got) - min(got))
    assert min(got) - max(near) > max(spread, 20.0), digits_w2a4


@pytest.mark.parametrize("change, field", [
    (dict(drop_p=1.5), "drop_p"), (dict(block_layers=0), "block_layers"),
    (dict(tau=(0.01, 1.0)), "tau"), (dict(unit="layer"), "unit"), (dict(lr=0.0), "lr"),
])
def test_method_settings_are_validated(change, field):
    import dataclasses

    with pytest.raises(ValueError, match=field):
        dataclasses.replace(R.METHODS["qdrop"], **change)
