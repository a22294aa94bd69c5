"""quant.quantize: calibration-data forms, graph vs leaf (untraceable) mode, fidelity."""

import pytest
import torch
from qaccel.quant import QuantConfig, QuantLayer, quant_layers, quant_state
from qmodels import KwargModel, Untraceable, resnetish, seq_cnn
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from qaccel import quant


def _rel_err(a, b):
    return float((a - b).norm() / b.norm())


def test_graph_mode_structure_and_fidelity():
    m = resnetish()
    x = torch.randn(64, 3, 8, 8)
    ref = m(x).detach()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    qm = quant.quantize(m, [x[:32], x[32:]], QuantConfig(w_bits=8, a_bits=8))
    info = qm.qaccel_quant
    assert info.mode == "graph"
    assert sorted(info.folded_bn) == ["b1", "b2"]
    assert info.acts == {"c1": "relu", "dw": "relu6"}
    assert info.layers == ["c1", "dw", "pw", "fc"]
    assert all(isinstance(qm.get_submodule(n), QuantLayer) for n in info.layers)
    # the input model is untouched
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    with torch.no_grad():
        y = qm(x)
        with quant_state(qm, weights=False, acts=False):
            y_fp = qm(x)
    assert _rel_err(y_fp, ref) < 1e-5                  # BN folding is exact in FP
    assert _rel_err(y, ref) < 0.05                     # W8A8 is close
    q4 = quant.quantize(m, [x], QuantConfig(w_bits=3, a_bits=8))
    with torch.no_grad():
        assert _rel_err(q4(x), ref) > _rel_err(y, ref)  # quantization is really applied


def _kw_batches(x):
    return [{"x": x[:16]}, {"x": x[16:]}]


@pytest.mark.parametrize("form", ["list", "tuple", "dict", "loader", "generator"])
def test_calib_data_forms(form):
    m = KwargModel()
    x = torch.randn(32, 4)
    data = {
        "list": [x[:16], x[16:]],
        "tuple": [(x[:16],), (x[16:], None)],
        "dict": _kw_batches(x),
        "loader": DataLoader(TensorDataset(x), batch_size=8),   # yields [tensor] lists
        "generator": (x[i:i + 8] for i in range(0, 32, 8)),
    }[form]
    qm = quant.quantize(m, data, QuantConfig())
    with torch.no_grad():
        assert _rel_err(qm(x), m(x)) < 0.05
    q = qm.get_submodule("fc1").output_quantizer
    assert q.initialized and float(q.scale) > 0


def test_calib_data_errors():
    m = KwargModel()
    with pytest.raises(ValueError, match="empty"):
        quant.quantize(m, [], QuantConfig())
    with pytest.raises(TypeError, match="iterable of batches"):
        quant.quantize(m, torch.randn(4, 4), QuantConfig())
    with pytest.raises(TypeError, match="tensor, tuple/list or dict"):
        quant.quantize(m, [3.0], QuantConfig())
    with pytest.raises(TypeError, match="QuantConfig"):
        quant.quantize(m, [torch.randn(2, 4)], {"w_bits": 4})


def test_untraceable_model_raises_naming_the_steps_and_the_line():
    m = Untraceable()
    x = torch.randn(64, 6)
    with pytest.raises(ValueError) as err:
        quant.quantize(m, [x], QuantConfig(cle=True))
    msg = str(err.value)
    assert "cannot apply CLE, activation quantization of op outputs" in msg
    assert "torch.fx cannot trace Untraceable (TraceError" in msg
    assert "qmodels.py" in msg and "if h.sum() > 0" in msg        # the line that broke it
    assert "allow_fallback=True" in msg


def test_untraceable_model_leaf_mode_with_allow_fallback():
    m = Untraceable()
    x = torch.randn(64, 6)
    with pytest.warns(quant.FallbackWarning, match="CLE, activation quantization"):
        qm = quant.quantize(m, [x], QuantConfig(cle=True, allow_fallback=True))
    info = qm.qaccel_quant
    assert info.mode == "leaf"
    assert len(info.fallbacks) == 1 and "cannot trace Untraceable" in info.fallbacks[0]
    names = [n for n, _ in quant_layers(qm)]
    assert names == ["a", "b", "c"]                               # Linear and Conv1d leaves
    for _, ql in quant_layers(qm):
        assert ql.input_quantizer.initialized and ql.weight_quantizer.initialized
        assert ql.quantize_bias
    s = info.summary
    assert [(ly.name, ly.in_bits, ly.out_bits) for ly in s.layers] == \
        [("a", 8, None), ("b", 8, None), ("c", 8, None)]          # outputs stay float
    assert [o.name for o in s.float_ops] == ["forward()"]
    assert "fallback: CLE, activation quantization" in str(s)
    with torch.no_grad():
        ref = m(x)
        y = qm(x)
        assert _rel_err(y, ref) < 0.05
        with pytest.warns(quant.FallbackWarning):
            q3 = quant.quantize(m, [x], QuantConfig(w_bits=3, a_bits=4, allow_fallback=True))
        assert _rel_err(q3(x), ref) > 2 * _rel_err(y, ref)
    with pytest.raises(ValueError, match="traceable"):
        quant.export(qm, x)


def test_per_channel_helps_unbalanced_channels():
    m = seq_cnn()
    with torch.no_grad():                       # make output channels very unbalanced
        m[6].weight.mul_(torch.logspace(-2, 1, 16)[:, None, None, None])
    x = torch.randn(128, 3, 8, 8)
    ref = m(x).detach()
    errs = {}
    for pc in (False, True):
        qm = quant.quantize(m, [x], QuantConfig(w_bits=4, a_bits=16, acc_bits=40,
                                                per_channel=pc, weight_range="minmax"))
        with torch.no_grad():
            errs[pc] = _rel_err(qm(x), ref)
    assert errs[True] < 0.7 * errs[False]


def test_no_layers_is_an_error():
    with pytest.raises(ValueError, match="no nn.Linear"):
        quant.quantize(nn.ReLU(), [torch.randn(2, 3)], QuantConfig())


def test_bn_activation_range_uses_eq_18_19():
    m = seq_cnn(0)
    x = torch.randn(32, 3, 8, 8)
    qm = quant.quantize(m, [x], QuantConfig(act_range="bn", snap_scales=False))
    bn = m[1]
    hi = float((bn.bias + 6 * bn.weight.abs()).max().detach())
    q = qm.get_submodule("0").output_quantizer           # conv-BN-ReLU: [0, max(b + 6g)]
    assert int(q.zero_point) == 0
    assert float(q.scale) == pytest.approx(hi / 255, rel=1e-5)
    # no BN statistics for the logits: falls back to min-max of the calibration data
    q_out = qm.get_submodule("11").output_quantizer
    with torch.no_grad(), quant_state(qm, acts=False):   # calibrated with quantized weights
        y = qm(x)
    lo_m, hi_m = min(float(y.min()), 0.0), max(float(y.max()), 0.0)
    assert float(q_out.scale) == pytest.approx((hi_m - lo_m) / 255, rel=1e-4)


def test_cross_entropy_only_changes_the_logits_quantizer():
    m = seq_cnn(1)
    x = torch.randn(64, 3, 8, 8)
    cfg = QuantConfig(a_bits=4, snap_scales=False)
    mse = quant.quantize(m, [x], cfg.replace(act_range="mse"))
    xent = quant.quantize(m, [x], cfg.replace(act_range="cross_entropy"))
    scales = {}
    for name, qm in (("mse", mse), ("xent", xent)):
        scales[name] = {n: float(q.scale) for n, q in quant.modules.act_quantizers(qm)}
    logits = "11.output_quantizer"
    assert scales["mse"][logits] != scales["xent"][logits]
    for n in scales["mse"]:
        if n != logits:
            assert scales["mse"][n] == scales["xent"][n], n


def test_fake_quant_model_is_differentiable_with_ste():
    m = seq_cnn(0)
    x = torch.randn(16, 3, 8, 8)
    qm = quant.quantize(m, [x], QuantConfig(w_bits=4))
    loss = qm(x).pow(2).sum()
    loss.backward()
    grads = [ql.module.weight.grad for _, ql in quant_layers(qm)]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
