"""Per-layer sensitivity report (whitepaper Figure 9)."""

import math

import pytest
import torch
from qaccel.quant import QuantConfig, Quantizer, digits, quantize
from qaccel.quant.sensitivity import (
    SensitivityReport,
    SensitivityRow,
    a16_exceptions,
    sensitivity_report,
    sqnr_db,
)
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


@pytest.fixture(scope="module")
def vit():
    torch.set_num_threads(1)
    model, _, _ = digits.get_model("digits_vit")
    calib = [digits.calib_images(128)]
    return model, calib, quantize(model, calib, QuantConfig())


def test_report_covers_the_transformer_activations(vit):
    model, calib, qm = vit
    rep = sensitivity_report(model, calib, qmodel=qm, weights=False, progress=False)
    acts = [r.name for r in rep.rows if r.kind == "activation"]
    assert not any(r.kind == "weight" for r in rep.rows)
    for kind in ("quant_matmul_", "quant_softmax_", "quant_add_", "quant_act_"):
        assert sum(n.startswith(kind) for n in acts) >= 2, kind     # both blocks
    assert {"blocks.0.ln1.output_quantizer", "blocks.0.q.output_quantizer",
            "input_quantizer_0", "head.output_quantizer"} <= set(acts)
    assert all(math.isfinite(r.output_sqnr) for r in rep.rows)


def _logit_sqnr(model, qm, x):
    with torch.no_grad():
        ref = model(x)
        return sqnr_db(float(ref.pow(2).sum()), float((qm(x) - ref).pow(2).sum()))


def test_a16_exceptions_take_the_most_sensitive_activations(vit):
    model, calib, qm = vit
    cfg, rep = a16_exceptions(model, calib, QuantConfig(), 3, qmodel=qm, progress=False)
    worst = [r.name for r in rep.worst(3, kind="activation")]
    assert [o.name for o in cfg.quantizer_bits] == worst
    assert all(o.bits == 16 for o in cfg.quantizer_bits)
    q16 = quantize(model, calib, cfg)
    bits = {n: q.bits for n, q in q16.named_modules() if isinstance(q, Quantizer)}
    assert [bits[n] for n in worst] == [16, 16, 16]
    assert sorted(bits.values()).count(16) == 3
    # the output error they remove is the largest: the logits get closer to FP32
    x = digits.load_split()[2]
    assert _logit_sqnr(model, q16, x) > _logit_sqnr(model, qm, x) + 1.0
    same, _ = a16_exceptions(model, calib, QuantConfig(), 0, report=rep, qmodel=qm)
    assert same == QuantConfig()
    with pytest.raises(ValueError, match="a16_exceptions.k must be"):
        a16_exceptions(model, calib, QuantConfig(), -1, report=rep, qmodel=qm)


def test_a16_exceptions_skip_a_matmul_partner_that_would_overflow(vit):
    model, calib, _ = vit
    base = QuantConfig(quantizer_bits=(("blocks.0.q", 16),))
    qm = quantize(model, calib, base)
    rows = [SensitivityRow("blocks.0.k.output_quantizer", "activation", 8, 30.0, 10.0),
            SensitivityRow("quant_add_4.output_quantizer", "activation", 8, 30.0, 20.0),
            SensitivityRow("blocks.0.q.output_quantizer", "activation", 16, 30.0, 5.0)]
    rep = SensitivityReport(base, rows)
    cfg, _ = a16_exceptions(model, calib, base, 1, report=rep, qmodel=qm)
    # k (operand of QK^T with the 16-bit q) would need 33 accumulator bits; q is already 16
    assert [(o.name, o.bits) for o in cfg.quantizer_bits] == [
        ("blocks.0.q", 16), ("quant_add_4.output_quantizer", 16)]
    wide, _ = a16_exceptions(model, calib, base.replace(acc_bits=40), 1, report=rep,
                             qmodel=qm)
    assert wide.quantizer_bits[-1].name == "blocks.0.k.output_quantizer"
