"""Per-layer bit-widths (QuantConfig.layer_bits, first_last_8bit): validation, the
pipeline's quantizers, the exported network's per-layer bits, executor == fake-quant."""

import numpy as np
import pytest
import torch
from qaccel.quant import LayerOverride, QuantConfig, digits, quant_layers
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
