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
