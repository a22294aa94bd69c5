"""Per-layer sensitivity report (whitepaper Figure 9)."""

import math

import torch
from qaccel.quant import QuantConfig, Quantizer, quantize
from qaccel.quant.sensitivity import sensitivity_report, sqnr_db
from qmodels import seq_cnn


def test_sqnr_db():
    assert sqnr_db(100.0, 1.0) == 20.0
    assert sqnr_db(1.0, 0.0) == math.inf


def test_report_finds_the_sensitive_layer(tmp_path):
    m = seq_cnn(0)
    with torch.no_grad():                      # one huge outlier in the depthwise weights
        m[3].weight[0, 0, 0, 0] = 60.0 * m[3].weight.abs().max()
    x = torch.randn(64, 3, 8, 8)
    ref_label = m(x).argmax(1)

    def agreement(model):
        with torch.no_grad():
            return float((model(x).argmax(1) == ref_label).float().mean())

    rep = sensitivity_report(m, [x], QuantConfig(w_bits=4, a_bits=8), metric=agreement,
                             metric_name="top-1 agreement")
    names = [r.name for r in rep.rows]
    assert names[:4] == ["0.weight", "3.weight", "6.weight", "11.weight"]
    assert names[-3:] == ["all weights", "all activations", "all"]
    assert names[4:6] == ["input_quantizer_0", "0.output_quantizer"]   # execution order
    assert "3.output_quantizer" in names
    assert rep.fp_metric == 1.0
    worst = rep.worst(1)[0]
    assert worst.name == "3.weight" and worst.kind == "weight"
    rows = {r.name: r for r in rep.rows}
    # quantizing more can only add noise here: all weights <= each single weight quantizer
    assert rows["all weights"].output_sqnr <= min(
        r.output_sqnr for r in rep.rows if r.kind == "weight") + 0.5
    assert rows["3.weight"].tensor_sqnr < rows["6.weight"].tensor_sqnr
    assert all(0.0 <= r.metric <= 1.0 for r in rep.rows)
    md = rep.to_markdown()
    assert md.splitlines()[0].startswith("| quantizer | kind | bits |")
    assert "| 3.weight | weight | 4 |" in md and "top-1 agreement" in md
    png = rep.plot(tmp_path / "sens.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # analysing an existing quantized model leaves its quantizers as they were
    qm = quantize(m, [x], QuantConfig(w_bits=6))
    rep6 = sensitivity_report(m, [x], qmodel=qm)
    assert rep6.config.w_bits == 6 and rep6.rows[0].bits == 6
    assert all(q.enabled for q in qm.modules() if isinstance(q, Quantizer))
