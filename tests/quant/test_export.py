"""quant.export -> sim integer network: executor == fake-quantized torch model (SPEC
agreement 3), save/load round trip, and export errors."""

import numpy as np
import pytest
import torch
from qaccel.quant import QuantConfig
from qaccel.sim import executor
from qaccel.sim.network import IntNetwork
from qmodels import resnetish, seq_cnn
from torch import nn

from qaccel import quant

# Documented sliver of the float32 straight-through mode (the exact mode has none:
# tests/quant/test_exact.py): integers may differ by one LSB between the integer network and
# the fake-quant model because the requantizer uses the fixed-point M / 2^S for the real scale.
# M >= 2^(mult_bits-1), so its relative error is <= 2^-mult_bits and an output of magnitude
# <= 2^a_bits moves by <= 2^(a_bits - mult_bits) LSB: only outputs that close to a rounding
# boundary can flip, a fraction of about 2^(a_bits - mult_bits + 1) for spread-out values.
# Pooling layers see few distinct accumulator values (one unlucky value repeats), hence
# the 1% floor. Measured figures are in docs/quant.md.


def sliver(cfg):
    return max(2.0 ** (cfg.a_bits - cfg.mult_bits + 1), 0.01)


def _compare_per_layer(net, qm, x):
    """Run each integer layer on the fake-quant model's own integer inputs."""
    ints = quant.integer_outputs(qm, x)
    x_int = net.input_q.quantize(x.numpy())
    assert np.array_equal(x_int, qm.input_quantizer_0.to_int(x).numpy())
    fq = {-1: x_int}
    stats = {}
    for i, layer in enumerate(net.layers):
        y, _ = executor.run_layer(net, layer, [fq[j] for j in layer.inputs])
        if layer.name in ints:
            want = ints[layer.name]
            assert want.shape == y.shape, layer.name
            d = np.abs(y - want)
            stats[layer.name] = (int(d.max()), float((d > 0).mean()))
            fq[i] = want
        else:                         # grid-preserving op (max pool, flatten, relu): exact
            fq[i] = y
    return stats


CONFIGS = [
    QuantConfig(w_bits=8, a_bits=8),
    QuantConfig(w_bits=4, a_bits=8, per_channel=True, weight_range="minmax"),
    QuantConfig(w_bits=6, a_bits=6, cle=True, act_range="minmax"),
    QuantConfig(w_bits=8, a_bits=8, per_channel=True, mult_bits=12),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"w{c.w_bits}a{c.a_bits}"
                         f"{'pc' if c.per_channel else 'pt'}m{c.mult_bits}")
@pytest.mark.parametrize("model_fn", [resnetish, seq_cnn], ids=["resnetish", "seq_cnn"])
def test_executor_matches_fake_quant(cfg, model_fn):
    m = model_fn()
    x = torch.randn(96, 3, 8, 8)
    qm = quant.quantize(m, [x[:48], x[48:]], cfg)
    net = quant.export(qm, x[:1])
    kinds = [L.kind for L in net.layers]
    assert kinds.count("conv2d") >= 3 and "linear" in kinds
    xt = torch.randn(64, 3, 8, 8)
    stats = _compare_per_layer(net, qm, xt)
    assert stats, "no layer compared"
    for name, (dmax, frac) in stats.items():
        assert dmax <= 1, (name, dmax)
        assert frac <= sliver(cfg), (name, frac)
    # end to end: the integer network on its own
    y_int = executor.run(net, net.input_q.quantize(xt.numpy()))
    with torch.no_grad():
        y_fq = qm(xt)
    want = np.rint(y_fq.numpy() / net.output_q.scale).astype(np.int64) + \
        net.output_q.zero_point
    d = np.abs(y_int - want)
    assert d.max() <= 1 and (d > 0).mean() <= sliver(cfg)
    np.testing.assert_allclose(executor.run_float(net, xt.numpy()), y_fq.numpy(),
                               atol=net.output_q.scale * 1.001)


def test_exported_fields_follow_spec():
    m = seq_cnn()
    x = torch.randn(64, 3, 8, 8)
    qm = quant.quantize(m, [x], QuantConfig(w_bits=4, per_channel=True))
    net = quant.export(qm, x[:2])
    conv = net.layers[0]
    ql = qm.get_submodule("0")
    s_w = ql.weight_scale().double().numpy()
    s_x, z_x = net.input_q.scale, net.input_q.zero_point
    assert conv.kind == "conv2d" and conv.per_channel and conv.relu and conv.padding == (1, 1)
    assert conv.weight.min() >= -8 and conv.weight.max() <= 7
    b = ql.module.bias.detach().double().numpy()
    np.testing.assert_array_equal(
        conv.bias, np.rint(b / (s_w * s_x)) - z_x * conv.weight.reshape(8, -1).sum(1))
    real = s_w * s_x / conv.out_q.scale
    np.testing.assert_allclose(conv.m / 2.0 ** conv.s, real, rtol=2.0 ** -15)
    assert np.all(conv.m < 2**16) and np.all(conv.m >= 2**15)     # largest S
    dw = net.layers[1]
    assert dw.groups == 8 and dw.weight.shape == (8, 1, 3, 3)
    assert [L.kind for L in net.layers] == ["conv2d", "conv2d", "conv2d", "global_avgpool",
                                            "flatten", "linear"]
    assert not net.layers[-1].relu and net.output == len(net.layers) - 1


def test_save_load_round_trip_runs_identically(tmp_path):
    m = resnetish()
    x = torch.randn(32, 3, 8, 8)
    qm = quant.quantize(m, [x], QuantConfig(w_bits=6, per_channel=True))
    net = quant.export(qm, x[:1])
    back = IntNetwork.load(net.save(tmp_path / "net.npz"))
    xi = net.input_q.quantize(x.numpy())
    assert np.array_equal(executor.run(net, xi), executor.run(back, xi))
    assert back.meta["quant_config"]["w_bits"] == 6


class _Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.sigmoid(self.a(x)))


def test_unsupported_op_is_a_clear_error():
    m = _Sigmoid()
    x = torch.randn(16, 4)
    qm = quant.quantize(m, [x], QuantConfig())
    with torch.no_grad():          # fake-quant still works: b gets its own input quantizer
        assert qm.get_submodule("b").input_quantizer is not None
        assert float((qm(x) - m(x)).abs().max()) < 0.05
    with pytest.raises(ValueError, match="sigmoid"):
        quant.export(qm, x)
    with pytest.raises(ValueError, match="quant.quantize"):
        quant.export(m, x)


def test_snapped_scales_make_fake_quant_match_the_integers():
    """snap_scales (default) nudges s_w so s_w s_x / s_y == M / 2^S exactly: the sliver
    collapses to float32 noise. Compared with snap_scales=False at mult_bits=12."""
    m = seq_cnn(0)
    x = torch.randn(96, 3, 8, 8)
    xt = torch.randn(64, 3, 8, 8)
    frac = {}
    for snap in (False, True):
        cfg = QuantConfig(w_bits=8, a_bits=8, per_channel=True, mult_bits=12,
                          snap_scales=snap)
        qm = quant.quantize(m, [x], cfg)
        net = quant.export(qm, x[:1])
        stats = _compare_per_layer(net, qm, xt)
        frac[snap] = sum(f for _, f in stats.values())
        if snap:            # the exported (M, S) equal the fake-quant scale ratio exactly
            ql = qm.get_submodule("0")
            real = (ql.weight_scale().double() * ql.in_scale.double()
                    / ql.output_quantizer.scale.double()).numpy()
            conv = net.layers[0]
            np.testing.assert_allclose(conv.m / 2.0 ** conv.s, real, rtol=1e-6)
    assert frac[False] > 0.005
    assert frac[True] < 0.1 * frac[False], frac


def test_power_of_two_weight_scales_export():
    m = seq_cnn(0)
    x = torch.randn(64, 3, 8, 8)
    qm = quant.quantize(m, [x], QuantConfig(w_bits=6, per_channel=True, power_of_two=True))
    for _, ql in quant.quant_layers(qm):
        s = ql.weight_scale().double()
        assert torch.equal(torch.log2(s), torch.round(torch.log2(s)))    # 2^k, not snapped
    net = quant.export(qm, x[:1])
    y = executor.run(net, net.input_q.quantize(x.numpy()))
    with torch.no_grad():
        want = np.rint(qm(x).numpy() / net.output_q.scale) + net.output_q.zero_point
    assert np.abs(y - want).max() <= 1


def test_refresh_scales_after_manual_range_change():
    m = seq_cnn(0)
    x = torch.randn(64, 3, 8, 8)
    qm = quant.quantize(m, [x], QuantConfig())
    q = qm.get_submodule("0").output_quantizer
    q.set_qparams(q.scale * 1.37, q.zero_point)        # e.g. another range-setting method
    quant.refresh_scales(qm)
    assert float(qm.get_submodule("3").in_scale) == float(q.scale)
    net = quant.export(qm, x[:1])
    stats = _compare_per_layer(net, qm, torch.randn(32, 3, 8, 8))
    assert all(dmax <= 1 and frac < 0.001 for dmax, frac in stats.values()), stats
