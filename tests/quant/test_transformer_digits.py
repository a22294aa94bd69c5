"""The shipped digits ViT (``quant.digits.digits_vit``: the 8 image rows as tokens) on real
data: integer-only (vector-unit softmax / LayerNorm / GELU) accuracy vs FP32, exact mode ==
executor."""

import pytest
import torch
from qaccel.quant import QuantConfig, digits
from qaccel.sim import executor

from qaccel import quant

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shipped():
    m, _, (x_te, y_te) = digits.get_model("digits_vit")
    fp = digits.evaluate(m, (x_te, y_te)) / 100
    return m, fp, digits.calib_images(256), x_te, y_te.numpy()


@pytest.mark.parametrize("cfg, max_drop", [
    (QuantConfig(w_bits=8, a_bits=8, per_channel=True), 0.01),
    (QuantConfig(w_bits=8, a_bits=8), 0.01),
    (QuantConfig(w_bits=4, a_bits=8, per_channel=True), 0.03)],
    ids=["w8a8pc", "w8a8pt", "w4a8pc"])
def test_digits_vit_integer_accuracy_and_exactness(shipped, cfg, max_drop):
    m, fp, cal, x_te, y_te = shipped
    assert fp > 0.96
    qm = quant.quantize(m, [cal[:128], cal[128:]], cfg)
    net = quant.export(qm, cal[:1])
    kinds = {L.kind for L in net.layers}
    assert {"softmax", "layernorm", "lut", "matmul"} <= kinds
    y = executor.run(net, net.input_q.quantize(x_te.numpy()))
    acc = float((y.argmax(1) == y_te).mean())
    assert acc >= fp - max_drop, (acc, fp)
    assert int((quant.exact_outputs(qm, x_te, net=net) != y).sum()) == 0
