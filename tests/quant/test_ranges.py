"""Range setting: min-max (eq. 14-15), MSE (eq. 16), cross-entropy (eq. 17), BN (18-19)."""

import pytest
import torch
import torch.nn.functional as F
from qaccel.quant.quantizers import Quantizer
from qaccel.quant.ranges import bn_range, cross_entropy_range, minmax_range, mse_range, quant_error


def _err(x, q, lo, hi):
    q.set_range(lo, hi)
    return float((q(x) - x).pow(2).sum())


@pytest.mark.parametrize("bits, factor", [(3, 0.5), (4, 0.5), (6, 0.8)])
def test_mse_beats_minmax_on_heavy_tails(bits, factor):
    torch.manual_seed(bits)
    x = torch.distributions.StudentT(4.0).sample((20000,))       # heavy-tailed
    q = Quantizer(bits, mode="symmetric", signed=True)
    lo_m, hi_m = minmax_range(x, q)
    assert float(lo_m) == float(x.min()) and float(hi_m) == float(x.max())
    e_minmax = _err(x, q, lo_m, hi_m)
    e_mse = _err(x, q, *mse_range(x, q))
    assert e_mse < factor * e_minmax
    # and the search really minimises: no grid point of a brute-force scan does better
    scan = min(_err(x, q, a * lo_m, a * hi_m) for a in torch.linspace(0.01, 1, 400))
    assert e_mse <= scan * 1.01


def test_mse_per_channel_and_asymmetric():
    torch.manual_seed(0)
    w = torch.randn(6, 2000) * torch.arange(1, 7)[:, None]
    w[0, 0] = 12.0                                               # one outlier channel
    q = Quantizer(4, mode="symmetric", signed=True, per_channel=True)
    lo, hi = mse_range(w, q)
    assert lo.shape == (6,)
    assert float(hi[0]) < 12.0 * 0.5                              # outlier clipped
    v = w.reshape(6, -1)
    lo_m, hi_m = minmax_range(w, q)
    assert torch.all(quant_error(v, lo, hi, q) <= quant_error(v, lo_m, hi_m, q) + 1e-6)
    qa = Quantizer(4, mode="asymmetric")
    x = torch.relu(torch.distributions.StudentT(2.0).sample((5000,)))
    lo_a, hi_a = mse_range(x, qa)
    assert float(lo_a) == 0.0 and 0 < float(hi_a) < float(x.max())


def test_cross_entropy_range_on_logits():
    torch.manual_seed(1)
    logits = torch.randn(256, 100) * 2
    logits[torch.arange(256), torch.randint(0, 100, (256,))] += 12     # confident class
    q = Quantizer(4, mode="asymmetric")
    p = F.softmax(logits, -1)

    def ce(lo, hi):
        q.set_range(lo, hi)
        return float(-(p * F.log_softmax(q(logits), -1)).sum(-1).mean())

    c_ce = ce(*cross_entropy_range(logits, q))
    assert c_ce <= ce(*mse_range(logits, q)) + 1e-6
    assert c_ce <= ce(*minmax_range(logits, q)) + 1e-6


def test_bn_range_eq_18_19():
    beta = torch.tensor([0.5, -1.0, 2.0])
    gamma = torch.tensor([1.0, 0.5, -0.25])                      # sign of gamma irrelevant
    lo, hi = bn_range(beta, gamma, 6.0)
    assert float(lo) == pytest.approx(min(0.5 - 6, -1 - 3, 2 - 1.5))
    assert float(hi) == pytest.approx(max(0.5 + 6, -1 + 3, 2 + 1.5))
    lo, hi = bn_range(beta, gamma, 6.0, relu=True)
    assert float(lo) == 0.0 and float(hi) == pytest.approx(6.5)
    lo, hi = bn_range(beta, gamma, 6.0, relu6=True)
    assert float(hi) == 6.0
