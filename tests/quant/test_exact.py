"""Exact mode of the fake-quant model == the exported integer network, 0 differing
integers (SPEC agreement 3), on random small CNNs (hypothesis) with table activations
(SiLU, Hardswish, LeakyReLU, GELU, stand-alone ReLU6), plus the float32 straight-through
mode's measured difference."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from qaccel.quant import QuantConfig
from qaccel.sim import executor
from qmodels import resnetish, seq_cnn
from torch import nn

from qaccel import quant

TABLE_OPS = {"silu": F.silu, "hardswish": F.hardswish, "leaky_relu": F.leaky_relu,
             "leaky_relu_2": lambda x: F.leaky_relu(x, 0.2), "gelu": F.gelu,
             "silu_m": None, "hardswish_m": None, "leaky_relu_m": None, "gelu_m": None}


def _act_modules():
    return nn.ModuleDict({"silu_m": nn.SiLU(), "hardswish_m": nn.Hardswish(),
                          "leaky_relu_m": nn.LeakyReLU(0.1), "gelu_m": nn.GELU()})


class RandomCNN(nn.Module):
    """A CNN described by a list of ``(op, arg)`` specs, ending in a global average pool
    or a flatten, then one or two linear layers."""

    def __init__(self, c_in: int, hw: int, specs, head: str, hidden: int, classes: int,
                 head_act: str = "relu"):
        super().__init__()
        self.head_act = head_act
        self.acts = _act_modules()
        self.specs = []
        self.convs = nn.ModuleList()
        c, size = c_in, hw
        for op, arg in specs:
            if op == "conv":
                c_out, k, stride = arg
                if size < k:
                    continue
                pad = k // 2 if stride == 1 else 0
                self.convs.append(nn.Conv2d(c, c_out, k, stride=stride, padding=pad))
                size = (size + 2 * pad - k) // stride + 1
                c = c_out
            elif op == "depthwise":
                self.convs.append(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=arg))
            elif op == "residual":
                self.convs.append(nn.Conv2d(c, c, 3, padding=1))
            elif op in ("maxpool", "avgpool"):
                if size < 2:
                    continue
                size //= 2
            self.specs.append(op)
        self.head = head
        feat = c if head == "gap" else c * size * size
        self.fc1 = nn.Linear(feat, hidden or classes)
        self.fc2 = nn.Linear(hidden, classes) if hidden else None

    def _act(self, op, x):
        return self.acts[op](x) if op in self.acts else TABLE_OPS[op](x)

    def forward(self, x):
        i = 0
        for op in self.specs:
            if op in ("conv", "depthwise"):
                x = self.convs[i](x)
                i += 1
            elif op == "residual":
                x = x + self.convs[i](x)
                i += 1
            elif op == "relu":
                x = F.relu(x)
            elif op == "relu6":
                x = F.relu6(x)
            elif op in TABLE_OPS:
                x = self._act(op, x)
            elif op == "maxpool":
                x = F.max_pool2d(x, 2)
            elif op == "avgpool":
                x = F.avg_pool2d(x, 2)
        if self.head == "gap":
            x = F.adaptive_avg_pool2d(x, 1)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        if self.fc2 is not None:
            x = self.fc2(F.relu(x) if self.head_act == "relu" else self._act(self.head_act, x))
        return x


op_spec = st.one_of(
    st.tuples(st.just("conv"), st.tuples(st.integers(1, 6), st.sampled_from([1, 3]),
                                         st.sampled_from([1, 2]))),
    st.tuples(st.just("depthwise"), st.booleans()),
    st.tuples(st.sampled_from(["relu", "relu6", "maxpool", "avgpool", "residual",
                               *TABLE_OPS]), st.none()))


@st.composite
def cases(draw):
    specs = draw(st.lists(op_spec, min_size=1, max_size=6))
    c_in, hw = draw(st.integers(1, 3)), draw(st.integers(3, 8))
    model = RandomCNN(c_in, hw, specs, draw(st.sampled_from(["gap", "flatten"])),
                      draw(st.sampled_from([0, 5])), draw(st.integers(2, 6)),
                      draw(st.sampled_from(["relu", *TABLE_OPS])))
    cfg = QuantConfig(w_bits=draw(st.integers(2, 8)), a_bits=draw(st.integers(2, 8)),
                      per_channel=draw(st.booleans()), a_signed=draw(st.booleans()),
                      act_range=draw(st.sampled_from(["minmax", "mse"])),
                      weight_range="minmax", mult_bits=draw(st.sampled_from([8, 12, 16])),
                      snap_scales=draw(st.booleans()))
    return model, (c_in, hw), cfg, draw(st.integers(0, 2**16))


def _exact_vs_executor(qm, x):
    try:
        net = quant.export(qm, x[:1])
    except ValueError as exc:        # a degenerate ReLU6 range (q_max > 6) is refused
        assume("ReLU6" not in str(exc))
        raise
    want = executor.run(net, net.input_q.quantize(x.numpy()), trace=True)
    got = quant.exact_outputs(qm, x, net=net)
    per_layer = quant.integer_outputs(qm, x, exact=True)
    for layer, out in zip(net.layers, want.outputs):
        if layer.name in per_layer:
            np.testing.assert_array_equal(per_layer[layer.name], out, err_msg=layer.name)
    return net, got, want.output


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_random_cnn_exact_mode_equals_executor(case):
    model, (c, hw), cfg, seed = case
    torch.manual_seed(seed)
    model.eval()
    x = torch.randn(48, c, hw, hw)
    qm = quant.quantize(model, [x[:24], x[24:]], cfg)
    xt = torch.randn(32, c, hw, hw) * 1.5           # some values outside the calibrated range
    net, got, want = _exact_vs_executor(qm, xt)
    assert got.shape == want.shape
    assert int((got != want).sum()) == 0


class _AddAct(nn.Module):
    """A residual add followed by a ReLU6 / ReLU (fused into the add's requantizer)."""

    def __init__(self, act):
        super().__init__()
        self.c1, self.c2, self.act = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 3, 1), act
        self.fc = nn.Linear(3 * 4 * 4, 4)

    def forward(self, x):
        y = self.c1(x)
        return self.fc(self.act(y + self.c2(y)).flatten(1))


@pytest.mark.parametrize("act", [F.relu6, F.relu, nn.ReLU6()], ids=["relu6", "relu", "ReLU6"])
def test_activation_after_an_add_is_fused_and_exact(act):
    """The activation after a residual add goes into the add (its node is erased once and
    skipped afterwards): the network quantizes, exports and runs exactly."""
    torch.manual_seed(0)
    m = _AddAct(act).eval()
    x = torch.randn(48, 2, 4, 4) * 3
    qm = quant.quantize(m, [x[:24], x[24:]], QuantConfig(w_bits=4, a_bits=4))
    net, got, want = _exact_vs_executor(qm, torch.randn(16, 2, 4, 4) * 3)
    assert int((got != want).sum()) == 0
    kinds = [layer.kind for layer in net.layers]
    assert "add" in kinds and "lut" not in kinds and "relu" not in kinds


@pytest.mark.parametrize("model_fn", [resnetish, seq_cnn], ids=["resnetish", "seq_cnn"])
def test_exact_mode_is_exact_where_float32_mode_is_not(model_fn):
    """The float32 straight-through mode differs by 1 LSB on some outputs (measured, so the
    comparison means something); the exact mode on none. Leaving the context restores the
    straight-through forward."""
    m = model_fn()
    x = torch.randn(128, 3, 8, 8)
    cfg = QuantConfig(w_bits=8, a_bits=8, snap_scales=False, mult_bits=12)
    qm = quant.quantize(m, [x[:64], x[64:]], cfg)
    xt = torch.randn(256, 3, 8, 8)
    net, got, want = _exact_vs_executor(qm, xt)
    assert int((got != want).sum()) == 0
    with torch.no_grad():
        ste = qm(xt).numpy()
    ste_int = np.rint(ste / net.output_q.scale).astype(np.int64) + net.output_q.zero_point
    assert int((ste_int != want).sum()) > 0
    assert np.abs(ste_int - want).max() <= 2
    assert all(getattr(mod, "exact", None) is None for mod in qm.modules())


def test_exact_mode_rounds_ties_like_the_requantizer():
    """An average pool whose (M, S) is exactly 1/4: (sum + 2) >> 2 rounds .5 up, where
    torch.round would round half to even -- the exact mode follows the requantizer."""
    m = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                      nn.Linear(2 * 2 * 2, 3)).eval()
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([1.0, 0.7]).reshape(2, 1, 1, 1))
        m[0].bias.zero_()
    x = torch.rand(16, 1, 4, 4)
    qm = quant.quantize(m, [x], QuantConfig(act_range="minmax"))
    pool = next(mod for mod in qm.modules() if isinstance(mod, quant.QuantAvgPool))
    src = qm.get_submodule("0").output_quantizer
    pool.output_quantizer.set_qparams(src.scale.clone(), src.zero_point.clone())
    quant.refresh_scales(qm)
    net = quant.export(qm, x[:1])
    ap = next(L for L in net.layers if L.kind == "avgpool2d")
    assert int(ap.m[0]) / 2 ** int(ap.s[0]) == 0.25
    xi = net.input_q.quantize(x.numpy())
    trace = executor.run(net, xi, trace=True)
    pool_in = trace.outputs[net.layers.index(ap) - 1] - ap.in_q[0].zero_point
    sums = pool_in.reshape(16, 2, 2, 2, 2, 2).sum(axis=(3, 5))
    assert np.any(sums % 4 == 2)                         # ties exist
    want = trace.outputs[net.layers.index(ap)]
    np.testing.assert_array_equal(quant.integer_outputs(qm, x, exact=True)[ap.name], want)
    assert np.any(quant.integer_outputs(qm, x)[ap.name] != want)    # float32 mode: to even
    assert np.array_equal(quant.exact_outputs(qm, x, net=net), trace.output)


def test_table_activations_export_as_lut_layers_and_are_exact():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(),
                      nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Hardswish(),
                      nn.Conv2d(8, 8, 1), nn.LeakyReLU(0.05), nn.ReLU6(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    x = torch.randn(64, 3, 8, 8)
    qm = quant.quantize(m, [x], QuantConfig(w_bits=8, a_bits=8, per_channel=True))
    net = quant.export(qm, x[:1])
    luts = [L for L in net.layers if L.kind == "lut"]
    assert [L.func for L in luts] == ["silu", "hardswish", "leaky_relu(0.05)", "relu6"]
    for L in luts:
        assert L.table.shape == (256,)
        codes = np.arange(256)
        real = L.in_q[0].dequantize(codes)
        # each entry is the float64 function rounded onto the output grid (within 1 code
        # of the float32 value the straight-through mode computes)
        y = {"silu": real / (1 + np.exp(-real)), "relu6": np.clip(real, 0, 6),
             "hardswish": real * np.clip(real + 3, 0, 6) / 6,
             "leaky_relu(0.05)": np.where(real >= 0, real, 0.05 * real)}[L.func]
        np.testing.assert_array_equal(L.table, L.out_q.quantize(y))
    xt = torch.randn(128, 3, 8, 8)
    _, got, want = _exact_vs_executor(qm, xt)
    assert int((got != want).sum()) == 0
