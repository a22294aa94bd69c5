"""``QuantConfig(act_range="bitsplit")``: Bit-split's least-squares activation scale
(Wang et al. 2020) as a range setter of the pipeline, with scale linking / snapping and
export like every other range setter."""

import logging

import numpy as np
import pytest
import torch
from qaccel.quant import QuantConfig, digits
from qaccel.quant.bitsplit import bitsplit_act_scale
from qaccel.sim import executor
from torch import nn

from qaccel import quant


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()


def _act_mse(q, x):
    with torch.no_grad():
        return float((q(x) - x).pow(2).mean())


def test_beats_minmax_on_heavy_tailed_positive_activations():
    torch.manual_seed(4)
    # post-ReLU heavy tail: half zeros, Student-t(4) positive half
    x = torch.relu(torch.distributions.StudentT(4.0).sample((2048, 16)))
    cfg = QuantConfig(a_bits=4, act_range="bitsplit")
    batches = [x[:1024], x[1024:]]
    bs = quant.quantize(_mlp(), batches, cfg)
    mm = quant.quantize(_mlp(), batches, cfg.replace(act_range="minmax"))
    ms = quant.quantize(_mlp(), batches, cfg.replace(act_range="mse"))
    q_bs, q_mm = bs.input_quantizer_0, mm.input_quantizer_0
    # unsigned, zero-point 0, scale = the least-squares alpha of bitsplit_act_scale
    assert float(q_bs.zero_point) == 0.0
    assert float(q_bs.scale) == pytest.approx(bitsplit_act_scale(x, 4), rel=1e-5)
    assert float(q_bs.scale) < 0.5 * float(q_mm.scale)                 # tail clipped
    e_bs = _act_mse(q_bs, x)
    assert e_bs < 0.5 * _act_mse(q_mm, x)                              # measured ~0.27x
    assert e_bs <= 1.01 * _act_mse(ms.input_quantizer_0, x)            # ~ eq. 16 optimum
    # the bias grid follows the new input scale (linked like every range setter)
    assert float(bs.get_submodule("0").in_scale) == float(q_bs.scale)


def test_signed_inputs_fall_back_to_minmax_logged(caplog):
    torch.manual_seed(1)
    x = torch.randn(512, 16)                                           # negative values
    cfg = QuantConfig(a_bits=8, act_range="bitsplit")
    with caplog.at_level(logging.INFO, logger="quant"):
        bs = quant.quantize(_mlp(), [x], cfg)
    mm = quant.quantize(_mlp(), [x], cfg.replace(act_range="minmax"))
    assert "act_range bitsplit: input_quantizer_0 sees negative values" in caplog.text
    assert "min-max range instead" in caplog.text
    assert any("input_quantizer_0 sees negative values" in n for n in bs.qaccel_quant.notes)
    for name in ("input_quantizer_0", "2.output_quantizer"):           # input and logits
        a, b = bs.get_submodule(name), mm.get_submodule(name)
        assert torch.equal(a.scale, b.scale) and torch.equal(a.zero_point, b.zero_point)
    # the ReLU output (non-negative) does get the least-squares scale
    assert not any("0.output_quantizer" in n for n in bs.qaccel_quant.notes)


def test_config_message_lists_bitsplit():
    assert QuantConfig(act_range="bitsplit").act_range == "bitsplit"
    with pytest.raises(ValueError) as exc:
        QuantConfig(act_range="least_squares")
    msg = str(exc.value)
    for w in ("QuantConfig.act_range", "'minmax'", "'mse'", "'cross_entropy'", "'bn'",
              "'bitsplit'", "'least_squares'"):
        assert w in msg, (w, msg)


def test_digits_bitsplit_exports_and_executor_matches_fake_quant():
    model, _, (x_te, _) = digits.get_model("digits_cnn")
    calib = list(digits.calib_loader(64))
    cfg = QuantConfig(w_bits=4, a_bits=8, per_channel=True, rounding="bitsplit",
                      act_range="bitsplit", iterations=5)
    qm = quant.quantize(model, calib, cfg)
    notes = [n for n in qm.qaccel_quant.notes if n.startswith("act_range bitsplit")]
    assert len(notes) == 1 and "sees negative values" in notes[0]       # only the logits
    net = quant.export(qm, x_te[:1])
    sliver = max(2.0 ** (cfg.a_bits - cfg.mult_bits + 1), 0.01)
    # each integer layer on the fake-quant model's own integer inputs
    ints = quant.integer_outputs(qm, x_te)
    fq = {-1: net.input_q.quantize(x_te.numpy())}
    compared = 0
    for i, layer in enumerate(net.layers):
        y, _ = executor.run_layer(net, layer, [fq[j] for j in layer.inputs])
        if layer.name in ints:
            d = np.abs(y - ints[layer.name])
            assert d.max() <= 1 and (d > 0).mean() <= sliver, (layer.name, d.max())
            fq[i] = ints[layer.name]
            compared += 1
        else:
            fq[i] = y
    assert compared >= 4
    # end to end
    y_int = executor.run(net, net.input_q.quantize(x_te.numpy()))
    with torch.no_grad():
        y_fq = qm(x_te).numpy()
    want = np.rint(y_fq / net.output_q.scale).astype(np.int64) + net.output_q.zero_point
    d = np.abs(y_int - want)
    assert d.max() <= 1 and (d > 0).mean() <= sliver
    assert np.array_equal(y_int.argmax(1), y_fq.argmax(1))


def test_cli_act_range_bitsplit(tmp_path, capsys):
    from qaccel.sim.network import IntNetwork

    from qaccel.cli import main

    out = tmp_path / "net.npz"
    rc = main(["quantize", "--model", "digits_cnn", "--w-bits", "4", "--per-channel",
               "--rounding", "bitsplit", "--act-range", "bitsplit", "--iterations", "5",
               "--calib", "64", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert IntNetwork.load(out).meta["quant_config"]["act_range"] == "bitsplit"
    assert "max |diff| 1" in text or "max |diff| 0" in text
