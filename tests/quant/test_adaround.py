"""AdaRound (whitepaper sec. 3.4, eq. 32-35): schedule, relaxation and layer reconstruction."""

from __future__ import annotations

import math

import pytest
import torch
from qaccel.quant import adaround as ar
from torch import nn

torch.set_num_threads(1)


def test_cosine_beta_golden_value():
    assert ar.beta_schedule(8000, 10000, warm_start=0.2, schedule="cosine") == pytest.approx(
        4.636038969321072, abs=1e-12)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_beta_schedule_shape(schedule):
    T = 1000
    betas = [ar.beta_schedule(t, T, warm_start=0.2, schedule=schedule) for t in range(T + 1)]
    assert all(b == 20.0 for b in betas[:200])  # warm start: held at the start value
    assert betas[-1] == pytest.approx(2.0)
    assert all(a >= b for a, b in zip(betas, betas[1:]))  # monotone decay
    mid = ar.beta_schedule(600, T, warm_start=0.2, schedule=schedule)  # r = 0.5
    assert mid == pytest.approx(11.0)
    quarter = ar.beta_schedule(400, T, warm_start=0.2, schedule=schedule)  # r = 0.25
    expect = 2 + 9 * (1 + math.cos(math.pi / 4)) if schedule == "cosine" else 20 - 18 * 0.25
    assert quarter == pytest.approx(expect)


def test_beta_schedule_rejects_unknown():
    with pytest.raises(ValueError, match="schedule"):
        ar.beta_schedule(1, 10, schedule="exp")


def test_rectified_sigmoid_and_init():
    frac = torch.linspace(0, 0.999, 101)
    assert torch.allclose(ar.rectified_sigmoid(ar.init_v(frac)), frac, atol=1e-6)
    v = torch.tensor([-100.0, 100.0, 0.0])
    assert ar.rectified_sigmoid(v).tolist() == pytest.approx([0.0, 1.0, 0.5])  # clipped ends


def test_regularizer_zero_at_binary_and_max_at_half():
    assert float(ar.round_regularizer(torch.tensor([-50.0, 50.0]), 2.0)) == 0.0
    assert float(ar.round_regularizer(torch.tensor([0.0]), 20.0)) == pytest.approx(1.0)


def _real_conv_layer():
    """Second conv of the trained digits CNN and its real FP inputs / outputs."""
    from qaccel.quant import digits

    model, _, _ = digits.get_model("digits_cnn")
    layer = model[3]
    x = digits.calib_images(256)
    inp, out = ar.collect_io(model, layer, [x])
    return layer, inp, out


@pytest.fixture(scope="module")
def conv_layer():
    return _real_conv_layer()


@pytest.mark.parametrize("bits,per_channel", [(4, True), (3, False)])
def test_adaround_beats_nearest_on_real_layer(conv_layer, bits, per_channel):
    layer, inp, out = conv_layer
    w = layer.weight.detach()
    if per_channel:
        scale = w.abs().amax(dim=(1, 2, 3)) / (2 ** (bits - 1) - 1)
    else:
        scale = w.abs().max() / (2 ** (bits - 1) - 1)
    w_near = ar.nearest_int_weight(w, scale, bits)
    w_ada = ar.adaround_layer(layer, scale, inp, out, w_bits=bits, iterations=600,
                              lr=1e-2, seed=0, progress=False)
    e_near = ar.reconstruction_error(layer, w_near, scale, inp, out)
    e_ada = ar.reconstruction_error(layer, w_ada, scale, inp, out)
    assert e_ada < 0.7 * e_near, (e_ada, e_near)
    # the result is a rounding of w / s: floor or ceil, on the grid
    s = torch.as_tensor(scale).reshape(-1, 1, 1, 1) if per_channel else scale
    r = w / s
    assert w_ada.dtype == torch.int32 and w_ada.shape == w.shape
    assert torch.all((w_ada == torch.floor(r)) | (w_ada == torch.ceil(r))
                     | (w_ada == -(2 ** (bits - 1))) | (w_ada == 2 ** (bits - 1) - 1))
    assert int(w_ada.min()) >= -(2 ** (bits - 1)) and int(w_ada.max()) <= 2 ** (bits - 1) - 1
    assert 0 < (w_ada != w_near).float().mean() < 0.5  # it changed some, not all, roundings


def test_adaround_linear_with_activation_is_deterministic():
    g = torch.Generator().manual_seed(1)
    lin = nn.Linear(24, 12)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(12, 24, generator=g) * 0.3)
    x = torch.randn(512, 24, generator=g)
    target = torch.relu(lin(x)).detach()
    scale = lin.weight.detach().abs().max() / 7
    kw = dict(w_bits=4, iterations=300, lr=1e-2, act_fn=torch.relu, progress=False,
              schedule="linear")
    a = ar.adaround_layer(lin, scale, x, target, seed=3, **kw)
    b = ar.adaround_layer(lin, scale, x, target, seed=3, **kw)
    assert torch.equal(a, b)
    e_near = ar.reconstruction_error(lin, ar.nearest_int_weight(lin.weight, scale, 4), scale,
                                     x, target, act_fn=torch.relu)
    e_ada = ar.reconstruction_error(lin, a, scale, x, target, act_fn=torch.relu)
    assert e_ada < e_near


def test_adaround_uses_quantized_inputs():
    """Eq. 35: the rounding compensates a perturbation of the input (x^ != x)."""
    g = torch.Generator().manual_seed(2)
    lin = nn.Linear(16, 8, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(8, 16, generator=g))
    x = torch.randn(1024, 16, generator=g)
    x_hat = x * 1.1  # preceding layers' (systematic) quantization error
    target = lin(x).detach()
    scale = lin.weight.detach().abs().max() / 7
    w_fp_inputs = ar.adaround_layer(lin, scale, x, target, w_bits=4, iterations=400, lr=1e-2,
                                    progress=False)
    w_q_inputs = ar.adaround_layer(lin, scale, x_hat, target, w_bits=4, iterations=400,
                                   lr=1e-2, progress=False)
    e_fp = ar.reconstruction_error(lin, w_fp_inputs, scale, x_hat, target)
    e_q = ar.reconstruction_error(lin, w_q_inputs, scale, x_hat, target)
    assert e_q < e_fp


@pytest.mark.parametrize("kwargs,field", [
    (dict(w_bits=1), "w_bits"),
    (dict(w_bits=4, schedule="step"), "schedule"),
    (dict(w_bits=4, warm_start=1.0), "warm_start"),
])
def test_adaround_validates(kwargs, field):
    lin = nn.Linear(4, 2)
    x = torch.randn(8, 4)
    with pytest.raises(ValueError, match=field):
        ar.adaround_layer(lin, 0.1, x, lin(x).detach(), iterations=1, progress=False, **kwargs)
    with pytest.raises(ValueError, match="weight_scale"):
        ar.adaround_layer(lin, torch.ones(3), x, lin(x).detach(), w_bits=4, iterations=1,
                          progress=False)


def test_adaround_shows_a_tqdm_bar(capsys):
    lin = nn.Linear(6, 3)
    x = torch.randn(16, 6)
    ar.adaround_layer(lin, 0.05, x, lin(x).detach(), w_bits=4, iterations=5, progress=True)
    err = capsys.readouterr().err
    assert "AdaRound Linear(3, 6)" in err and "/5" in err
