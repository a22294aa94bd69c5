"""No silent fallbacks: a requested step that cannot be applied raises (or, with
``allow_fallback``, warns), and the summary lists exactly what is quantized and what stays
float."""

import warnings

import pytest
import torch
from qaccel.quant import QuantConfig
from qmodels import resnetish, seq_cnn
from torch import nn

from qaccel import quant


class _BnAfterAdd(nn.Module):
    """A BN that follows an add: it cannot be folded into a conv."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.bn(self.a(x) + self.b(x))
        return self.fc(torch.relu(y).mean((2, 3)))


class _FloatOps(nn.Module):
    """Traceable, with ops that have no integer form (sigmoid, a channel mean ``x.mean(1)``)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)
        self.f = nn.Linear(36, 2)

    def forward(self, x):
        h = torch.sigmoid(self.c(x)).mean(1)       # [B, 6, 6]: a mean over channels
        return self.f(h.flatten(1))


def _x(n=32):
    return torch.randn(n, 3, 8, 8)


def test_unfoldable_bn_raises_then_warns_and_stays_float():
    m = _BnAfterAdd().eval()
    with pytest.raises(ValueError, match=r"cannot apply BN folding: BatchNorm 'bn' is not "
                                         r"directly after a single-use conv/linear"):
        quant.quantize(m, [_x()], QuantConfig())
    with pytest.warns(quant.FallbackWarning, match="BN folding not applied"):
        qm = quant.quantize(m, [_x()], QuantConfig(allow_fallback=True))
    s = qm.qaccel_quant.summary
    assert [o.name for o in s.float_ops][:1] == ["bn"]
    assert s.float_ops[0].op == "BatchNorm2d"
    assert "stay float: bn" in str(s)


def test_cle_without_pairs_raises_then_warns():
    m = nn.Sequential(nn.Linear(4, 3)).eval()
    x = torch.randn(16, 4)
    with pytest.raises(ValueError, match="cannot apply CLE: the model has no conv/linear pair"):
        quant.quantize(m, [x], QuantConfig(cle=True))
    with pytest.warns(quant.FallbackWarning, match="CLE not applied"):
        qm = quant.quantize(m, [x], QuantConfig(cle=True, allow_fallback=True))
    assert qm.qaccel_quant.fallbacks == ["CLE not applied: the model has no conv/linear pair "
                                         "(A -> B through positively homogeneous ops, A with "
                                         "one user) to equalize"]
    assert "CLE: 0 pairs" in str(qm.qaccel_quant.summary)


def test_analytic_bias_correction_without_bn_raises_then_warns():
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(16, 4)
    with pytest.raises(ValueError, match="cannot apply analytic bias correction: no layer"):
        quant.quantize(m, [x], QuantConfig(bias_correction="analytic"))
    with pytest.warns(quant.FallbackWarning):
        qm = quant.quantize(m, [x], QuantConfig(bias_correction="analytic",
                                                allow_fallback=True))
    assert [ly.bias_correction for ly in qm.qaccel_quant.summary.layers] == ["skipped"] * 2


def test_applicable_steps_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # any warning fails the test
        qm = quant.quantize(seq_cnn(0), [_x()], QuantConfig(cle=True,
                                                            bias_correction="analytic"))
    info = qm.qaccel_quant
    assert info.fallbacks == [] and info.cle_pairs == [("0", "3"), ("3", "6"), ("6", "11")]
    assert info.bias_corrected == ["3", "6", "11"]      # the first layer sees the data
    assert "ReLU" not in " ".join(info.notes)           # no ReLU6 in seq_cnn


def test_summary_lists_quantized_integer_and_float_ops():
    qm = quant.quantize(resnetish(), [_x()], QuantConfig(bias_correction="analytic"))
    s = qm.qaccel_quant.summary
    assert [ly.name for ly in s.layers] == ["c1", "dw", "pw", "fc"]
    assert all((ly.w_bits, ly.in_bits, ly.out_bits) == (8, 8, 8) for ly in s.layers)
    assert [ly.act for ly in s.layers] == ["relu", "relu6", "none", "none"]
    status = {o.op: o.status for o in s.ops}
    assert status == {"input x": "quantized", "add": "quantized", "MaxPool2d": "integer",
                      "avgpool (avgpool2d)": "quantized", "avgpool (global)": "quantized",
                      "flatten": "integer"}
    assert s.float_ops == ()
    assert [ly.bias_correction for ly in s.layers] == ["skipped", "analytic", "analytic",
                                                       "skipped"]
    text = str(s)
    assert "4 layers quantized, 0 ops float" in text and "stay float: none" in text
    assert "BN folding: 2 folded (b1, b2)" in text


def test_summary_names_float_ops_of_a_traceable_model():
    qm = quant.quantize(_FloatOps().eval(), [_x()], QuantConfig())
    s = qm.qaccel_quant.summary
    assert s.mode == "graph"
    assert [(o.name, o.status) for o in s.float_ops] == [
        ("sigmoid", "float"), ("mean", "float"), ("flatten", "float")]
    assert s.float_ops[2].reason == "its input is float"
    # the linear layer after the float ops quantizes its own input
    assert s.layers[1].in_bits == 8 and qm.get_submodule("f").input_quantizer is not None
    assert "stay float: sigmoid, mean, flatten" in str(s)
    with pytest.raises(ValueError, match="export"):
        quant.export(qm, _x(1))


def test_summarize_recomputes_from_the_model():
    qm = quant.quantize(seq_cnn(0), [_x()], QuantConfig(w_bits=4))
    again = quant.summarize(qm, _x(2))
    assert again.layers == qm.qaccel_quant.summary.layers
    assert {ly.w_bits for ly in again.layers} == {4}
    with pytest.raises(ValueError, match="returned by quant.quantize"):
        quant.summarize(seq_cnn(0))
