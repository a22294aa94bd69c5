"""quantize(rounding=adaround|bitsplit) wires the per-layer algorithms into the pipeline
(their maths is tested in test_adaround.py / test_bitsplit.py) and exports their integers."""

import importlib

import numpy as np
import pytest
import torch
from qaccel.quant import QuantConfig, quant_layers
from qaccel.sim import executor
from qmodels import seq_cnn

from qaccel import quant


@pytest.mark.parametrize("rounding, per_channel", [("adaround", True), ("bitsplit", False),
                                                   ("bitsplit", True)])
def test_rounding_sets_integer_weights_and_exports(rounding, per_channel, monkeypatch):
    mod = importlib.import_module(f"qaccel.quant.{rounding}")
    fname = f"{rounding}_layer"
    real = getattr(mod, fname)
    calls = []

    def spy(layer, scale, inputs, target, *args, **kw):
        if not isinstance(layer, torch.nn.Module):      # bitsplit's internal patch form
            return real(layer, scale, inputs, target, *args, **kw)
        calls.append((tuple(layer.weight.shape), tuple(inputs.shape), tuple(target.shape), kw))
        return real(layer, scale, inputs, target, **kw)

    monkeypatch.setattr(mod, fname, spy)
    m = seq_cnn(0)
    x = torch.randn(32, 3, 8, 8)
    cfg = QuantConfig(w_bits=4, rounding=rounding, iterations=60, per_channel=per_channel,
                      seed=3)
    qm = quant.quantize(m, [x[:16], x[16:]], cfg)
    # one call per layer, in network order, with the whole calibration set
    assert [c[0] for c in calls] == [(8, 3, 3, 3), (8, 1, 3, 3), (16, 8, 1, 1), (4, 16)]
    assert [c[1][0] for c in calls] == [32, 32, 32, 32]
    assert calls[0][2] == (32, 8, 8, 8)
    assert all(c[3]["w_bits"] == 4 and c[3]["iterations"] == 60 and c[3]["seed"] == 3
               for c in calls)
    near = quant.quantize(m, [x], cfg.replace(rounding="nearest"))
    changed = 0
    for (name, ql), (_, ql0) in zip(quant_layers(qm), quant_layers(near)):
        assert ql.w_int is not None, name
        assert int(ql.weight_int().abs().max()) <= 8
        changed += int((ql.weight_int() != ql0.weight_int()).sum())
    if rounding == "bitsplit":
        assert changed > 0                 # Bit-split chose its own grid and integers
    net = quant.export(qm, x[:1])
    assert np.array_equal(net.layers[0].weight, quant_layers(qm)[0][1].weight_int().numpy())
    y = executor.run(net, net.input_q.quantize(x.numpy()))
    with torch.no_grad():
        want = np.rint(qm(x).numpy() / net.output_q.scale) + net.output_q.zero_point
    assert np.abs(y - want).max() <= 1
