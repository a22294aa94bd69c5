"""BN folding (eq. 9-12), cross-layer equalization (eq. 20-22) incl. depthwise layers,
high-bias absorption (eq. 23-24)."""

import logging

import torch
from qaccel.quant import QuantConfig, quant_state
from qaccel.quant.cle import equalize_pair
from qaccel.quant.graph import LayerStats, fold_batchnorm
from qmodels import randomize_bn, resnetish, seq_cnn
from torch import fx, nn

from qaccel import quant


def _fp(qm, x):
    with torch.no_grad(), quant_state(qm, weights=False, acts=False):
        return qm(x)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_bn_folding_eq_11_12():
    torch.manual_seed(0)
    m = randomize_bn(nn.Sequential(nn.Conv2d(3, 6, 3, bias=True), nn.BatchNorm2d(6)), 3)
    x = torch.randn(8, 3, 6, 6)
    ref = m(x).detach()
    bn = m[1]
    w0, b0 = m[0].weight.detach().clone(), m[0].bias.detach().clone()
    gm = fx.symbolic_trace(m)
    stats = {}
    assert fold_batchnorm(gm, stats) == ["1"]
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in gm.modules())
    k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(gm.get_submodule("0").weight, w0 * k[:, None, None, None])
    torch.testing.assert_close(gm.get_submodule("0").bias, bn.bias + (b0 - bn.running_mean) * k)
    torch.testing.assert_close(gm(x), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats["0"].beta, bn.bias.detach())
    torch.testing.assert_close(stats["0"].gamma, bn.weight.detach().abs())


def test_cle_keeps_fp32_outputs_and_equalizes_ranges():
    m = seq_cnn(1)
    x = torch.randn(32, 3, 8, 8)
    ref = m(x).detach()
    qm = quant.quantize(m, [x], QuantConfig(cle=True, high_bias_absorption=False))
    pairs = qm.qaccel_quant.cle_pairs
    assert pairs == [("0", "3"), ("3", "6"), ("6", "11")]           # conv->dw->pw->fc
    assert _rel(_fp(qm, x), ref) < 1e-5
    for a, b in pairs:
        w1 = qm.get_submodule(a).module.weight.detach()
        mb = qm.get_submodule(b).module
        r1 = w1.abs().reshape(w1.shape[0], -1).amax(1)
        w2 = mb.weight.detach()
        if isinstance(mb, nn.Conv2d) and mb.groups > 1:           # depthwise consumer
            r2 = w2.abs().reshape(w2.shape[0], -1).amax(1)
        else:
            r2 = w2.abs().transpose(0, 1).reshape(w2.shape[1], -1).amax(1)
        torch.testing.assert_close(r1, r2, rtol=1e-4, atol=0)     # eq. 22 fixed point


def test_equalize_pair_depthwise_scales_and_stats():
    torch.manual_seed(0)
    a, b = nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 2, 1)
    st = LayerStats(beta=torch.ones(4), gamma=torch.ones(4))
    r1 = a.weight.detach().abs().reshape(4, -1).amax(1)
    r2 = b.weight.detach().abs().reshape(2, 4).amax(0)
    s = equalize_pair(a, b, st)
    torch.testing.assert_close(s, torch.sqrt(r1 * r2) / r2)
    torch.testing.assert_close(st.beta, 1 / s)


def test_cle_rescues_per_tensor_depthwise():
    """Whitepaper Table 3 in miniature: unbalanced depthwise channels ruin per-tensor
    quantization; CLE restores it."""
    m = seq_cnn(2)
    x = torch.randn(64, 3, 8, 8)
    ref = m(x).detach()
    with torch.no_grad():           # FP-invariant imbalance: scale dw BN outputs (ReLU is
        s = torch.logspace(-2, 1, 8)  # positively homogeneous), undo in the pointwise conv
        m[4].weight.mul_(s)
        m[4].bias.mul_(s)
        m[6].weight.div_(s[None, :, None, None])
    torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5)
    errs = {}
    for cle in (False, True):
        qm = quant.quantize(m, [x], QuantConfig(w_bits=8, a_bits=8, cle=cle,
                                                weight_range="minmax"))
        with torch.no_grad():
            errs[cle] = _rel(qm(x), ref)
    assert errs[True] < 0.2 * errs[False], errs


def test_relu6_is_replaced_and_logged(caplog):
    m = resnetish()
    x = torch.randn(16, 3, 8, 8)
    with caplog.at_level(logging.INFO, logger="quant"):
        qm = quant.quantize(m, [x], QuantConfig(cle=True))
    assert "ReLU6 after dw replaced by ReLU" in caplog.text
    assert qm.qaccel_quant.acts["dw"] == "relu"
    assert ("dw", "pw") in qm.qaccel_quant.cle_pairs
    assert ("c1", "dw") not in qm.qaccel_quant.cle_pairs             # c1 feeds the skip too


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 10)
        self.bn = nn.BatchNorm1d(10)
        self.fc2 = nn.Linear(10, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def test_high_bias_absorption_is_exact_when_preactivation_exceeds_c():
    torch.manual_seed(0)
    m = _MLP().eval()
    x = torch.rand(512, 6) * 2 - 1
    with torch.no_grad():
        h = m.fc1(x)
        m.bn.running_mean.copy_(h.mean(0))
        # |h - mu| / sigma <= 1 for these inputs -> BN output in [beta - gamma, beta + gamma]
        m.bn.running_var.copy_(((h - h.mean(0)).abs().amax(0) * 1.01) ** 2)
        m.bn.weight.copy_(torch.rand(10) * 0.5 + 0.25)
        m.bn.bias.copy_(torch.rand(10) * 4 + 1)
    ref = m(x).detach()
    gamma, beta = m.bn.weight.detach().clone(), m.bn.bias.detach().clone()
    base = quant.quantize(m, [x], QuantConfig(cle=True, high_bias_absorption=False))
    qm = quant.quantize(m, [x], QuantConfig(cle=True, high_bias_absorption=True))
    assert _rel(_fp(qm, x), ref) < 1e-5                             # eq. 23 invariance
    # c = max(0, beta - 3 gamma) in CLE-scaled units moved from b1 into b2 += W2 c
    b1_base = base.get_submodule("fc1").module.bias.detach()
    b1 = qm.get_submodule("fc1").module.bias.detach()
    st = base.qaccel_quant.stats["fc1"]
    c = torch.clamp(st.beta - 3 * st.gamma, min=0)
    assert int((torch.clamp(beta - 3 * gamma, min=0) > 0).sum()) >= 5
    torch.testing.assert_close(b1, b1_base - c)
    w2 = base.get_submodule("fc2").module.weight.detach()
    torch.testing.assert_close(qm.get_submodule("fc2").module.bias.detach(),
                               base.get_submodule("fc2").module.bias.detach() + w2 @ c)
    # the activation range after fc1 shrinks, so its quantizer gets a finer grid
    assert float(qm.get_submodule("fc1").output_quantizer.scale) < \
        float(base.get_submodule("fc1").output_quantizer.scale)
