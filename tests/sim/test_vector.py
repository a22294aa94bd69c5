"""sim.vector: table ops (lut layers) and the integer-only I-BERT-style vector-unit ops."""

import numpy as np
import pytest
from qaccel.sim import executor
from qaccel.sim.network import IntLayer, IntNetwork, QParams
from qaccel.sim.vector import apply_lut, lut_func, lut_table

Q_IN = QParams(0.05, 128, 8, False)
Q_OUT = QParams(0.03, 20, 8, False)


@pytest.mark.parametrize("func", ["silu", "hardswish", "leaky_relu", "relu6", "gelu",
                                  "sigmoid", "tanh"])
def test_lut_table_is_the_function_rounded_onto_the_output_grid(func):
    t = lut_table(func, Q_IN, Q_OUT)
    assert t.shape == (256,) and t.dtype == np.int64
    real = Q_IN.dequantize(np.arange(256))
    y = Q_OUT.dequantize(t)
    lo, hi = Q_OUT.dequantize(np.array(Q_OUT.range))
    want = np.clip(lut_func(func, real), lo, hi)
    assert np.abs(y - want).max() <= Q_OUT.scale / 2 + 1e-9
    codes = np.array([0, 5, 255, 128])
    np.testing.assert_array_equal(apply_lut(t, codes, Q_IN), t[codes])


def test_lut_layer_runs_saves_and_validates(tmp_path):
    t = lut_table("leaky_relu", Q_IN, Q_OUT, negative_slope=0.1)
    layer = IntLayer(name="act", kind="lut", inputs=(-1,), in_q=(Q_IN,), out_q=Q_OUT,
                     table=t, func="leaky_relu(0.1)")
    net = IntNetwork(layers=(layer,), input_q=Q_IN, input_shape=(3, 4))
    x = np.random.default_rng(0).integers(0, 256, (5, 3, 4))
    np.testing.assert_array_equal(executor.run(net, x), t[x])
    back = IntNetwork.load(net.save(tmp_path / "lut.npz"))
    assert back.layers[0].func == "leaky_relu(0.1)"
    np.testing.assert_array_equal(executor.run(back, x), t[x])
    with pytest.raises(ValueError, match="table"):
        IntLayer(name="a", kind="lut", inputs=(-1,), in_q=(Q_IN,), out_q=Q_OUT, table=t[:10])
    with pytest.raises(ValueError, match="table"):
        IntLayer(name="a", kind="lut", inputs=(-1,), in_q=(Q_IN,), out_q=Q_OUT,
                 table=t + 300)
    with pytest.raises(ValueError, match="func"):
        lut_func("swish2", 1.0)


# ---- I-BERT integer kernels against float, within stated bounds ---------------------------
from math import erf, isqrt  # noqa: E402

from qaccel.sim.vector import i_exp, i_gelu, i_layernorm, i_softmax, i_sqrt  # noqa: E402

SCALES = [0.0005, 0.005, 0.02, 0.1, 0.5]


def test_i_sqrt_is_floor_sqrt():
    rng = np.random.default_rng(0)
    n = np.concatenate([np.arange(0, 70), rng.integers(0, 2**62, 2000),
                        (1 << np.arange(1, 62)) - 1, 1 << np.arange(0, 62)])
    assert np.array_equal(i_sqrt(n), [isqrt(int(v)) for v in n])
    with pytest.raises(ValueError):
        i_sqrt(np.array([-1]))


@pytest.mark.parametrize("scale", SCALES)
def test_i_exp_within_0_003_of_exp(scale):
    q = -np.arange(0, int(20 / scale) + 1)
    e, s = i_exp(q, scale)
    err = np.abs(e * s - np.exp(q * scale))
    assert err.max() < 0.003                     # measured 0.0021
    assert np.all(np.diff(e) <= 0)               # monotone
    with pytest.raises(ValueError, match="x <= 0"):
        i_exp(np.array([1]), scale)


@pytest.mark.parametrize("scale", SCALES)
def test_i_gelu_within_0_02_of_gelu(scale):
    q = np.arange(-int(8 / scale), int(8 / scale) + 1)
    g, s = i_gelu(q, scale)
    x = q * scale
    want = 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))
    assert np.abs(g * s - want).max() < 0.02     # measured 0.018 (I-BERT's erf fit)
    assert g[q == 0] == 0 and np.all(np.diff(g[x > 0]) >= 0)   # 0 at 0, rising for x > 0


@pytest.mark.parametrize("scale", [0.02, 0.05, 0.2])
def test_i_softmax_within_0_012_of_softmax(scale):
    rng = np.random.default_rng(1)
    q = rng.integers(-128, 128, (64, 40))
    p, s = i_softmax(q, scale, out_bits=8)
    f = np.exp(q * scale)
    f /= f.sum(-1, keepdims=True)
    assert s == 2.0 ** -8 and p.min() >= 0 and p.max() <= 255
    assert np.abs(p * s - f).max() < 0.012       # measured 0.010 (1/256 grid + exp fit)
    p16, s16 = i_softmax(q, scale, out_bits=16)
    assert np.abs(p16 * s16 - f).max() < 0.01    # measured 0.0085: the exp fit dominates


@pytest.mark.parametrize("hi", [4, 256, 65536])
def test_i_layernorm_within_0_006_of_float(hi):
    rng = np.random.default_rng(2)
    x = rng.integers(0, hi, (32, 384))
    y, s = i_layernorm(x)
    xf = x.astype(np.float64)
    want = (xf - xf.mean(-1, keepdims=True)) / xf.std(-1, keepdims=True)
    assert np.abs(y * s - want).max() < 0.006    # measured 0.005 for 2-bit rows
    assert np.all(i_layernorm(np.full((2, 8), 7))[0] == 0)
    with pytest.raises(ValueError, match="overflow"):
        i_layernorm(rng.integers(-2**40, 2**40, (2, 64)))
