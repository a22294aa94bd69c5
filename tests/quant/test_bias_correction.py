"""Bias correction (sec. 3.3): empirical (eq. 27) and analytic (eq. 28)."""

import logging

import torch
from qaccel.quant import QuantConfig, quant_state
from qaccel.quant.bias_correction import relu_mean
from qmodels import calibrate_bn, seq_cnn

from qaccel import quant


def test_relu_mean_eq_28_matches_monte_carlo():
    torch.manual_seed(0)
    beta = torch.tensor([-2.0, -0.5, 0.0, 0.7, 3.0])
    gamma = torch.tensor([1.0, 2.0, 0.5, 1.5, 0.3])
    z = torch.randn(400000, 1) * gamma + beta
    torch.testing.assert_close(relu_mean(beta, gamma), torch.relu(z).mean(0), rtol=0,
                               atol=6e-3)


def _output_mean_error(qm, x, ref):
    with torch.no_grad(), quant_state(qm, acts=False):
        return float((qm(x) - ref).mean(0).norm())


def test_bias_correction_reduces_output_mean_error():
    totals = {"none": 0.0, "empirical": 0.0, "analytic": 0.0}
    for seed in range(3):
        torch.manual_seed(seed)
        m = seq_cnn(seed)
        x = torch.randn(256, 3, 8, 8)
        calibrate_bn(m, x)              # BN parameters describe the real statistics
        ref = m(x).detach()
        for method in totals:
            qm = quant.quantize(m, [x], QuantConfig(w_bits=4, bias_correction=method,
                                                    weight_range="minmax"))
            totals[method] += _output_mean_error(qm, x, ref)
    assert totals["empirical"] < 0.5 * totals["none"], totals
    assert totals["analytic"] < 0.6 * totals["none"], totals


def test_empirical_correction_zeroes_layer_mean_error():
    """Eq. 27 is exact for the first layer: E[W^ x + b_corr] == E[W x + b]."""
    m = seq_cnn(0)
    x = torch.randn(128, 3, 8, 8)
    qm = quant.quantize(m, [x], QuantConfig(w_bits=3, bias_correction="empirical"))
    plain = quant.quantize(m, [x], QuantConfig(w_bits=3))
    ql, ql0 = qm.get_submodule("0"), plain.get_submodule("0")
    with torch.no_grad(), quant_state(qm, acts=False), quant_state(plain, acts=False):
        y_fp = ql0.linear_op(x, ql0.module.weight, ql0.module.bias)
        y_plain = ql0.linear_op(x, ql0.quantized_weight(), ql0.module.bias)
        y_corr = ql.linear_op(x, ql.quantized_weight(), ql.module.bias)
    err_plain = (y_plain - y_fp).mean((0, 2, 3)).abs().max()
    err_corr = (y_corr - y_fp).mean((0, 2, 3)).abs().max()
    assert float(err_corr) < 1e-4 < float(err_plain)


def test_analytic_skips_layers_without_bn_input(caplog):
    m = seq_cnn(0)
    x = torch.randn(32, 3, 8, 8)
    with caplog.at_level(logging.INFO, logger="quant"):
        quant.quantize(m, [x], QuantConfig(bias_correction="analytic"))
    assert "0 skipped" in caplog.text                 # first layer: input is the data
    assert "3 skipped" not in caplog.text
