"""Quantizers vs eq. 4-8, power-of-two scales, per-channel, STE gradients (eq. 36-37)."""

import numpy as np
import pytest
import torch
from qaccel.quant.quantizers import Quantizer, fake_quantize, int_grid, qparams_from_range


def _np_asym(x, s, z, b):
    """eq. 4 + eq. 6 in numpy (np.rint = ties to even)."""
    xi = np.clip(np.rint(x / s) + z, 0, 2**b - 1)
    return xi, s * (xi - z)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_asymmetric_matches_eq_4_to_7(bits):
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(1000, generator=g) * 3 + 1
    lo, hi = float(x.min()), float(x.max())
    s, z = qparams_from_range(lo, hi, bits, mode="asymmetric")
    assert float(s) == pytest.approx((hi - lo) / (2**bits - 1), rel=1e-6)
    assert float(z) == np.clip(np.rint(-lo / float(s)), 0, 2**bits - 1)
    q = Quantizer(bits, mode="asymmetric")
    q.set_qparams(s, z)
    xi_np, xh_np = _np_asym(x.numpy(), np.float32(s), float(z), bits)
    assert np.array_equal(q.to_int(x).numpy(), xi_np.astype(np.int64))
    np.testing.assert_allclose(q(x).numpy(), xh_np, rtol=0, atol=1e-6)
    # grid limits q_min = -s z, q_max = s (2^b - 1 - z); error inside <= s/2
    qmin, qmax = q.range_limits()
    assert float(qmin) == pytest.approx(-float(s) * float(z))
    inside = (x >= qmin) & (x <= qmax)
    assert float((q(x) - x)[inside].abs().max()) <= float(s) / 2 + 1e-6
    # real zero is exact (zero-point)
    assert float(q(torch.zeros(1))) == 0.0


def test_symmetric_signed_and_unsigned_grids():
    x = torch.linspace(-2, 2, 101)
    s, z = qparams_from_range(-2.0, 2.0, 4, mode="symmetric", signed=True)
    assert float(z) == 0 and float(s) == pytest.approx(2 / 7)
    q = Quantizer(4, mode="symmetric", signed=True)
    q.set_qparams(s, z)
    xi = q.to_int(x)
    assert int(xi.min()) == -7 and int(xi.max()) == 7          # eq. 8c grid, symmetric range
    assert int_grid(4, True) == (-8, 7) and int_grid(4, False) == (0, 15)
    qu = Quantizer(4, mode="symmetric", signed=False)
    qu.set_range(-2.0, 2.0)
    assert float(qu.scale) == pytest.approx(2 / 15)
    assert int(qu.to_int(x).min()) == 0                        # eq. 8b clips negatives
    assert torch.all(qu(x)[x < 0] == 0)
    with pytest.raises(ValueError, match="unsigned grid"):
        Quantizer(8, mode="asymmetric", signed=True)


def test_power_of_two_scale():
    q = Quantizer(8, mode="symmetric", signed=True, power_of_two=True)
    q.set_range(-3.0, 5.0)
    s = float(q.scale)
    assert s == 2.0 ** round(np.log2(s)) and s >= 5.0 / 127 and s / 2 < 5.0 / 127


def test_per_channel():
    w = torch.stack([torch.linspace(-1, 1, 7), torch.linspace(-10, 10, 7)])
    q = Quantizer(4, mode="symmetric", signed=True, per_channel=True, ch_axis=0)
    q.set_range(w.abs().amax(1) * -1, w.abs().amax(1))
    np.testing.assert_allclose(q.scale.numpy(), [1 / 7, 10 / 7], rtol=1e-6)
    assert torch.equal(q.to_int(w)[0], q.to_int(w)[1])          # same grid positions


def test_round_half_even_like_numpy():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5])
    q = Quantizer(8, mode="symmetric", signed=True)
    q.set_qparams(torch.tensor(1.0), torch.tensor(0.0))
    assert q.to_int(x).tolist() == np.rint(x.numpy()).astype(int).tolist() == [0, 2, 2, 0, -2]


def test_ste_gradient_eq_37():
    s, z = torch.tensor(0.1), torch.tensor(5.0)
    x = torch.tensor([-1.0, -0.4, 0.0, 0.33, 24.9, 25.5, 30.0], requires_grad=True)
    y = fake_quantize(x, s, z, 0, 255)
    y.sum().backward()
    # q_min = -0.5, q_max = 25.0
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert torch.equal(y.detach(), fake_quantize(x.detach(), s, z, 0, 255))


def test_disabled_and_uninitialised_are_identity():
    x = torch.randn(10)
    q = Quantizer(4)
    assert torch.equal(q(x), x)
    q.set_range(-1.0, 1.0)
    assert not torch.equal(q(x), x)
    q.enabled = False
    assert torch.equal(q(x), x)
