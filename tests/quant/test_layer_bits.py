"""Per-layer bit-widths (QuantConfig.layer_bits, first_last_8bit): validation, the
pipeline's quantizers, the exported network's per-layer bits, executor == fake-quant."""

import numpy as np
import pytest
import torch
from qaccel.quant import LayerOverride, QuantConfig, digits, quant_layers
from qaccel.quant.config import QuantizerOverride
from qaccel.sim import executor
from qaccel.sim.network import IntNetwork
from qmodels import Untraceable, seq_cnn

from qaccel import quant


def test_layer_override_validation():
    cfg = QuantConfig(layer_bits=(("0", 4, 6), LayerOverride("3", a_bits=4)))
    assert cfg.layer_bits == (LayerOverride("0", 4, 6), LayerOverride("3", None, 4))
    assert cfg.to_dict()["layer_bits"][0] == {"name": "0", "w_bits": 4, "a_bits": 6}
    with pytest.raises(ValueError, match=r"LayerOverride\('0'\)\.w_bits must be in \[2, 16\] "
                                         r"\(or None for QuantConfig\.w_bits\), not 17"):
        QuantConfig(layer_bits=(("0", 17, 8),))
    with pytest.raises(ValueError, match=r"LayerOverride\('fc'\)\.a_bits must be .*not 1"):
        LayerOverride("fc", a_bits=1)
    with pytest.raises(ValueError, match="LayerOverride.name must be a non-empty"):
        LayerOverride("", 4, 4)
    with pytest.raises(ValueError, match="names a layer more than once: '0'"):
        QuantConfig(layer_bits=(("0", 4, 4), ("0", 8, 8)))
    with pytest.raises(ValueError, match=r"QuantConfig\.layer_bits must be LayerOverride or "
                                         r"\(name, w_bits, a_bits\) entries, not \('0', 4\)"):
        QuantConfig(layer_bits=(("0", 4),))
    # the accumulator must hold the widest product, overrides included
    with pytest.raises(ValueError, match=r"acc_bits must be in \[24, 46\] \(the largest w_bits "
                                         r"\+ a_bits \(per-layer bits included\) = 24"):
        QuantConfig(acc_bits=20, layer_bits=(("0", 16, 8),))
    with pytest.raises(ValueError, match=r"acc_bits must be in \[16, 46\] \(the largest w_bits "
                                         r"\+ a_bits \(per-layer bits included\) = 16"):
        QuantConfig(w_bits=4, a_bits=4, acc_bits=10, first_last_8bit=True)


def test_unknown_layer_names_are_named():
    x = torch.randn(16, 3, 8, 8)
    with pytest.raises(ValueError, match=r"QuantConfig.layer_bits: unknown layer\(s\) "
                                         r"'conv9', '1'; the model's quantizable layers are "
                                         r"'0', '3', '6', '11'"):
        quant.quantize(seq_cnn(), [x], QuantConfig(layer_bits=(("conv9", 4, 4),
                                                               ("1", 4, 4))))


@pytest.fixture(scope="module")
def digits_cnn():
    torch.set_num_threads(1)
    model, calib, test_set = digits.get_model("digits_cnn", n_calib=128)
    return model, list(calib), test_set


def _int_vs_fake_quant(qm, net, x):
    y_int = executor.run(net, net.input_q.quantize(x.numpy()))
    with torch.no_grad():
        y_fq = qm(x).numpy()
    want = np.rint(y_fq / net.output_q.scale).astype(np.int64) + net.output_q.zero_point
    return y_int, np.abs(y_int - want)


def test_digits_one_layer_at_4_bits_exports_and_runs_exactly(digits_cnn, tmp_path):
    model, calib, (x, y) = digits_cnn
    cfg = QuantConfig(layer_bits=(("3", 4, 4),))
    qm = quant.quantize(model, calib, cfg)
    bits = {n: (ql.weight_quantizer.bits, ql.output_quantizer.bits)
            for n, ql in quant_layers(qm)}
    assert bits == {"0": (8, 8), "3": (4, 4), "7": (8, 8), "12": (8, 8)}
    s = qm.qaccel_quant.summary
    assert [(ly.name, ly.w_bits, ly.in_bits, ly.out_bits) for ly in s.layers] == [
        ("0", 8, 8, 8), ("3", 4, 8, 4), ("7", 8, 4, 8), ("12", 8, 8, 8)]
    net = quant.export(qm, x[:1])
    gemm = {L.name: (L.w_bits, L.in_q[0].bits, L.out_q.bits) for L in net.layers
            if L.kind in ("conv2d", "linear")}
    assert gemm == {"0": (8, 8, 8), "3": (4, 8, 4), "7": (8, 4, 8), "12": (8, 8, 8)}
    assert int(np.abs(net.layers[1].weight).max()) <= 8          # a 4-bit weight grid
    assert list(net.meta["quant_config"]["layer_bits"]) == [{"name": "3", "w_bits": 4,
                                                             "a_bits": 4}]
    y_int, d = _int_vs_fake_quant(qm, net, x)
    assert int(d.max()) == 0                                     # identical integers
    assert (y_int.argmax(1) == y.numpy()).mean() > 0.9
    back = IntNetwork.load(net.save(tmp_path / "net.npz"))      # the bits survive a save
    assert [(L.w_bits, L.out_q.bits) for L in back.layers] == \
        [(L.w_bits, L.out_q.bits) for L in net.layers]


def test_digits_first_last_8bit(digits_cnn):
    model, calib, (x, _) = digits_cnn
    cfg = QuantConfig(w_bits=4, a_bits=4, first_last_8bit=True,
                      layer_bits=(LayerOverride("12", w_bits=6),))   # explicit entry wins
    qm = quant.quantize(model, calib, cfg)
    net = quant.export(qm, x[:1])
    gemm = {L.name: (L.w_bits, L.in_q[0].bits, L.out_q.bits) for L in net.layers
            if L.kind in ("conv2d", "linear")}
    assert gemm == {"0": (8, 8, 8), "3": (4, 8, 4), "7": (4, 4, 4), "12": (6, 4, 8)}
    assert net.input_q.bits == 8
    _, d = _int_vs_fake_quant(qm, net, x)
    assert int(d.max()) == 0


def test_rounding_uses_the_layer_bits():
    x = torch.randn(32, 3, 8, 8)
    cfg = QuantConfig(rounding="adaround", iterations=20, progress=False,
                      layer_bits=(("3", 3, None),))
    qm = quant.quantize(seq_cnn(), [x], cfg)
    w = {n: ql.weight_int() for n, ql in quant_layers(qm)}
    assert int(w["3"].min()) >= -4 and int(w["3"].max()) <= 3       # the 3-bit grid
    assert int(w["0"].abs().max()) > 8                                # still 8 bits


def test_leaf_mode_overrides_the_input_quantizer():
    cfg = QuantConfig(allow_fallback=True, layer_bits=(("b", 4, 6),))
    with pytest.warns(quant.FallbackWarning):
        qm = quant.quantize(Untraceable(), [torch.randn(32, 6)], cfg)
    b = qm.get_submodule("b")
    assert (b.weight_quantizer.bits, b.input_quantizer.bits) == (4, 6)
    assert qm.get_submodule("a").input_quantizer.bits == 8


# ---- per-quantizer bits (QuantConfig.quantizer_bits) --------------------------------------

def test_quantizer_override_validation():
    cfg = QuantConfig(quantizer_bits=(("quant_add_4", 16), ("head.weight", 6, True),
                                      QuantizerOverride("embed", per_channel=False)))
    assert cfg.quantizer_bits[1] == QuantizerOverride("head.weight", 6, True)
    assert cfg.all_bits("a_bits") == {8, 16} and cfg.all_bits("w_bits") == {8, 6}
    assert cfg.to_dict()["quantizer_bits"][0] == {"name": "quant_add_4", "bits": 16,
                                                  "per_channel": None}
    with pytest.raises(ValueError, match=r"QuantizerOverride\('ln'\)\.bits must be in "
                                         r"\[2, 16\] \(or None\), not 17"):
        QuantConfig(quantizer_bits=(("ln", 17),))
    with pytest.raises(ValueError, match=r"QuantizerOverride\('ln'\)\.per_channel"):
        QuantizerOverride("ln", 8, "yes")
    with pytest.raises(ValueError, match=r"QuantizerOverride\('ln'\)\.bits must be set"):
        QuantizerOverride("ln")
    with pytest.raises(ValueError, match="QuantizerOverride.name must be a non-empty"):
        QuantizerOverride("", 8)
    with pytest.raises(ValueError, match="names a quantizer more than once: 'ln'"):
        QuantConfig(quantizer_bits=(("ln", 8), ("ln", 16)))
    with pytest.raises(ValueError, match=r"QuantConfig\.quantizer_bits must be "
                                         r"QuantizerOverride or \(name, bits\[, per_channel\]\)"):
        QuantConfig(quantizer_bits=("ln",))
    with pytest.raises(ValueError, match=r"acc_bits must be in \[28, 46\]"):  # 12 + 16 bits
        QuantConfig(w_bits=12, acc_bits=24, quantizer_bits=(("x.output_quantizer", 16),))


@pytest.fixture(scope="module")
def vit():
    torch.set_num_threads(1)
    model, _, (x, y) = digits.get_model("digits_vit")
    return model, [digits.calib_images(128)], x, y.numpy()


def test_unknown_quantizer_and_per_channel_activation_are_named(vit):
    model, calib, _, _ = vit
    with pytest.raises(ValueError, match=r"QuantConfig\.quantizer_bits: unknown quantizer "
                                         r"'blocks\.7\.q'; the model's quantizers are "
                                         r"'embed\.weight_quantizer', 'embed\.output_quan"):
        quant.quantize(model, calib, QuantConfig(quantizer_bits=(("blocks.7.q", 16),)))
    with pytest.raises(ValueError, match=r"quantizer_bits\['quant_add_4'\]\.per_channel: only "
                                         r"the weights of nn\.Linear"):
        quant.quantize(model, calib, QuantConfig(quantizer_bits=(("quant_add_4", 16, True),)))
    with pytest.raises(ValueError, match=r"quantizer_bits\['blocks\.0\.ln1\.weight'\]\."
                                         r"per_channel"):          # LayerNorm's gamma
        quant.quantize(model, calib, QuantConfig(
            quantizer_bits=(("blocks.0.ln1.weight", None, True),)))
    # both operands of QK^T at 16 bits: one product needs 33 accumulator bits
    both = (("blocks.0.q", 16), ("blocks.0.k.output_quantizer", 16))
    with pytest.raises(ValueError, match=r"QuantConfig\.acc_bits must be >= 33 for "
                                         r"quant_matmul_1, which multiplies 16-bit by 16-bit"):
        quant.quantize(model, calib, QuantConfig(quantizer_bits=both))


def test_vit_16bit_exceptions_export_exactly(vit):
    """The whitepaper's 16-bit activation exceptions, one of each kind: a residual add, a
    LayerNorm output, a softmax output (operand of AV), a GELU output, a Linear output
    feeding QK^T, the network input; plus 4-bit and per-channel weights of one layer."""
    model, calib, x, y = vit
    over = {"quant_add_4": 16, "blocks.1.ln2": 16, "quant_softmax_8.output_quantizer": 16,
            "quant_act_5": 16, "blocks.0.q": 16, "blocks.1.f1": 16, "input_quantizer_0": 16}
    cfg = QuantConfig(quantizer_bits=tuple(over.items()) + (("blocks.1.f2.weight", 4, True),))
    qm = quant.quantize(model, calib, cfg)
    net = quant.export(qm, calib[0][:1])
    out_bits = {L.name: L.out_q.bits for L in net.layers}
    assert {k: out_bits[k.removesuffix(".output_quantizer")] for k in over
            if k != "input_quantizer_0"} == {k: 16 for k in over if k != "input_quantizer_0"}
    assert net.input_q.bits == 16 and out_bits["quant_add_6"] == 8
    soft = next(L for L in net.layers if L.name == "quant_softmax_8")
    assert soft.out_q.scale == 2.0 ** -16                     # the fixed grid follows
    f2 = next(L for L in net.layers if L.name == "blocks.1.f2")
    assert (f2.w_bits, f2.per_channel, f2.m.size) == (4, True, 32)
    assert int(np.abs(f2.weight).max()) <= 8
    kinds = {L.name: (L.kind, L.in_q[0].bits, L.out_q.bits) for L in net.layers}
    assert kinds["quant_act_5"] == ("lut", 8, 16)               # a table, 16-bit output
    assert kinds["quant_act_11"] == ("gelu", 16, 8)             # 16-bit input: i-GELU
    y_int = executor.run(net, net.input_q.quantize(x.numpy()))
    assert int((quant.exact_outputs(qm, x, net=net) != y_int).sum()) == 0
    assert (y_int.argmax(1) == y).mean() > 0.95
