"""Bad calibration data and NaN are a ValueError naming the data (never a torch
RuntimeError from inside the model, never a silently wrong calibration)."""

import numpy as np
import pytest
import torch
from qaccel.quant import QuantConfig, Quantizer
from qaccel.quant.calib_data import as_batches, check_model
from qaccel.quant.quantizers import qparams_from_range
from qaccel.sim.network import QParams
from qmodels import KwargModel, seq_cnn
from torch import nn

from qaccel import quant


def _x(n=32):
    return torch.randn(n, 3, 8, 8)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_in_calibration_data(bad):
    x = _x()
    x[5, 1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"calib_data: batch 1 holds 1 NaN/inf value\(s\) "
                                         r"\(first at index \(5, 1, 2, 3\)"):
        quant.quantize(seq_cnn(), [_x(), x], QuantConfig())


def test_nan_in_a_dict_batch_names_the_key():
    x = torch.randn(8, 4)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"calib_data: batch 0\['x'\] holds 1 NaN"):
        quant.quantize(KwargModel(), [{"x": x}], QuantConfig())


def test_wrong_shape_is_a_value_error_naming_the_batch_and_shape():
    with pytest.raises(ValueError, match=r"calib_data: the model fails on batch 1 "
                                         r"\(tensor \(4, 5\)\): RuntimeError") as err:
        quant.quantize(seq_cnn(), [_x(), torch.randn(4, 5)], QuantConfig())
    assert isinstance(err.value.__cause__, RuntimeError)


def test_empty_calibration_data_or_batch():
    with pytest.raises(ValueError, match="calib_data is empty"):
        quant.quantize(seq_cnn(), [], QuantConfig())
    with pytest.raises(ValueError, match=r"calib_data: batch 0 is empty \(shape \(0, 3, 8, 8\)"):
        quant.quantize(seq_cnn(), [torch.zeros(0, 3, 8, 8)], QuantConfig())
    with pytest.raises(ValueError, match="batch 0 holds no tensor"):
        as_batches([()])


def test_model_producing_nan_or_with_nan_weights():
    m = seq_cnn()
    with torch.no_grad():
        m[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"model: parameter '0.weight' holds NaN"):
        quant.quantize(m, [_x()], QuantConfig())

    class Log(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.log(x))               # NaN for negative inputs

    with pytest.raises(ValueError, match="FP32 model's output on batch 0 .* NaN/inf"):
        check_model(Log(), [torch.randn(16, 4) - 5])


def test_eval_data_is_checked_and_named():
    x = _x()
    bad = _x()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="eval_data: batch 0 holds 1 NaN"):
        quant.sensitivity_report(seq_cnn(), [x], QuantConfig(), eval_data=[bad])


class _ChannelMean(nn.Module):
    """``x.mean(1)`` (an int dim) used to crash graph.avgpool_spec with ``tuple(dim)``."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)
        self.f = nn.Linear(36, 2)

    def forward(self, x):
        return self.f(self.c(x).mean(1).flatten(1)) + self.c(x).mean(dim=-1).mean([-1, -2])[:, None]


def test_int_mean_dim_is_a_quantized_mean_not_a_crash():
    m = _ChannelMean().eval()
    x = _x()
    qm = quant.quantize(m, [x], QuantConfig())
    s = qm.qaccel_quant.summary
    assert s.mode == "graph"
    # an int dim is a vector-unit mean (issue 8) when its input is on a grid (the conv's
    # first call; the second call of the same module is float), a list (-1, -2) a pool
    assert [o.name for o in s.float_ops if o.op == "mean"] == ["mean_1"]
    assert [o.op for o in s.ops if o.status == "quantized"] == [
        "input x", "mean", "avgpool (global)", "add"]
    with torch.no_grad():
        ref, y = m(x), qm(x)
    assert float((y - ref).norm() / ref.norm()) < 0.05


def test_quantizer_refuses_nan():
    q = Quantizer(8, mode="symmetric", signed=True)
    q.set_range(-1.0, 1.0)
    with pytest.raises(ValueError, match=r"cannot quantize NaN to an integer \(1 NaN"):
        q.to_int(torch.tensor([0.5, float("nan")]))
    assert q.to_int(torch.tensor([0.5, float("inf")])).tolist() == [64, 127]   # clamped
    with pytest.raises(ValueError, match="range must be finite"):
        q.set_range(float("nan"), 1.0)
    with pytest.raises(ValueError, match="range must be finite"):
        qparams_from_range(torch.tensor([0.0, -1.0]), torch.tensor([1.0, float("inf")]), 8,
                           mode="symmetric", signed=True)
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 32\]"):
        q.set_bits(1)
    # the integer network's input quantizer (sim.network.QParams) refuses NaN alike
    qp = QParams(0.1, 0, 8, True)
    with pytest.raises(ValueError, match=r"cannot quantize NaN to an integer \(1 NaN"):
        qp.quantize(np.array([0.5, np.nan]))
    assert qp.quantize(np.array([0.5, np.inf, -np.inf])).tolist() == [5, 127, -128]
