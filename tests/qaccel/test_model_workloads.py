"""Model -> GEMM mapping: published layer counts / MACs, fx == hooks, conv geometry."""

from __future__ import annotations

import logging
import pathlib

import pytest
import torch
from torch import nn

from qaccel.mapping import (
    fx_workloads,
    hook_workloads,
    workloads_from_model,
    workloads_from_topology,
)
from qaccel.networks import build_network, network_names, network_workloads
from qaccel.networks.bert import BertLayer

PEER = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "peer" / "scalesim"


def _key(ws):
    return [(w.name, w.op, w.T, w.K, w.N, w.repeat) for w in ws]


# published figures: MACs (multiply-adds of conv + fc), parameter counts (torchvision /
# the papers), with tolerances for the counting conventions (bias, BN excluded here)
@pytest.mark.parametrize("name, n_gemms, gmacs, mparams, tol", [
    ("resnet50", 54, 4.09, 25.56, 0.02),
    ("resnet18", 21, 1.81, 11.69, 0.02),
    ("mobilenet_v2", 53, 0.300, 3.50, 0.03),
])
def test_cnn_layer_counts_and_macs(name, n_gemms, gmacs, mparams, tol):
    ws = network_workloads(name)
    assert len(ws) == n_gemms
    assert sum(w.macs for w in ws) / 1e9 == pytest.approx(gmacs, rel=tol)
    assert sum(w.weight_elems for w in ws) / 1e6 == pytest.approx(mparams, rel=tol)
    assert ws[0].name == ("features.0.0" if name == "mobilenet_v2" else "conv1")
    assert ws[-1].op == "linear" and ws[-1].N == 1000


def test_mobilenet_depthwise_is_per_group_gemms():
    ws = network_workloads("mobilenet_v2")
    dw = [w for w in ws if w.op == "depthwise"]
    assert len(dw) == 17
    assert all(w.K == 9 and w.N == 1 and w.repeat == w.geometry.in_ch for w in dw)
    first = dw[0]
    assert (first.repeat, first.T) == (32, 112 * 112)


def test_bert_layer_gemms():
    ws = network_workloads("bert_base")
    assert [w.op for w in ws] == ["linear"] * 3 + ["matmul"] * 2 + ["linear"] * 3
    qk, pv = ws[3], ws[4]
    assert (qk.T, qk.K, qk.N, qk.repeat) == (128, 64, 128, 12)
    assert (pv.T, pv.K, pv.N, pv.repeat) == (128, 128, 64, 12)
    # ~0.93 GMACs per layer (BERT-base: ~22 GFLOPs for 12 layers at 128 tokens)
    assert sum(w.macs for w in ws) / 1e9 == pytest.approx(0.93, rel=0.02)
    longer = network_workloads("bert_base", seq_len=256)
    assert longer[3].T == 256 and longer[3].N == 256


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "bert_base"])
def test_fx_and_hooks_agree_on_shipped_networks(name):
    model, x = build_network(name)
    assert _key(fx_workloads(model, x)) == _key(hook_workloads(model, x))


def test_sdpa_and_explicit_matmuls_map_alike():
    x = torch.zeros(2, 16, 48)
    a = BertLayer(48, 4, 96, use_sdpa=False).eval()
    b = BertLayer(48, 4, 96, use_sdpa=True).eval()
    for fn in (fx_workloads, hook_workloads):
        ka, kb = _key(fn(a, x)), _key(fn(b, x))
        assert ka == kb
        assert ka[3] == ("matmul0", "matmul", 16, 12, 16, 8)       # batch 2 x 4 heads


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=8)
        self.pw = nn.Conv2d(8, 12, 1)
        self.grp = nn.Conv2d(12, 12, (3, 1), padding=(1, 0), groups=3)

    def forward(self, x):
        y = self.grp(self.pw(self.dw(x)))
        t = y.flatten(2)                                   # [B, 12, P]
        return torch.bmm(t, t.transpose(1, 2)) @ torch.ones(12, 5)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = _Block()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.fc = nn.Linear(5, 16)

    def forward(self, x):
        z = self.fc(self.block(x))                          # [B, 12, 16]
        return self.attn(z, z, z, need_weights=False)[0].sum()


def test_conv_geometry_matches_torch_output_and_fx_equals_hooks():
    net = _Net().eval()
    x = torch.randn(3, 8, 13, 11)
    fx, hk = fx_workloads(net, x), hook_workloads(net, x)
    assert _key(fx) == _key(hk)
    names = [w.name for w in fx]
    assert names == ["block.dw", "block.pw", "block.grp", "block.matmul0", "block.matmul1",
                     "fc", "attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.matmul0",
                     "attn.matmul1", "attn.out_proj"]
    dw, pw, grp = fx[:3]
    out = net.block.dw(x)
    assert dw.T == 3 * out.shape[2] * out.shape[3] and dw.repeat == 8 and dw.K == 9
    assert dw.op == "depthwise" and dw.geometry.dilation == (2, 2)
    assert (grp.K, grp.N, grp.repeat, grp.op) == (3 * 4, 4, 3, "conv2d")
    assert pw.input_elems == 3 * out.shape[2] * out.shape[3] * 8
    mm0, mm1 = fx[3], fx[4]
    assert (mm0.T, mm0.K, mm0.N, mm0.repeat) == (12, out.shape[2] * out.shape[3], 12, 3)
    assert (mm1.T, mm1.K, mm1.N, mm1.repeat) == (12, 12, 5, 3)
    assert (fx[9].T, fx[9].K, fx[9].N, fx[9].repeat) == (12, 8, 12, 3 * 2)


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 2)

    def forward(self, x):
        if x.sum() > 0:                  # data-dependent control flow: fx cannot trace this
            x = x * 2
        return self.b(self.a(x))


def test_auto_falls_back_to_hooks_and_records_why(caplog):
    m, x = _Untraceable(), torch.ones(5, 4)
    with pytest.raises(torch.fx.proxy.TraceError):
        fx_workloads(m, x)
    with caplog.at_level(logging.WARNING, logger="qaccel.mapping"):
        ws = workloads_from_model(m, x)
    assert _key(ws) == [("a", "linear", 5, 4, 6, 1), ("b", "linear", 5, 6, 2, 1)]
    assert ws.method == "hooks"
    assert ws.fallback_reason.startswith("TraceError: symbolically traced variables")
    assert "_Untraceable: torch.fx mapping failed (TraceError" in caplog.text
    traced = workloads_from_model(_Block(), torch.zeros(1, 8, 9, 9))
    assert traced.method == "fx" and traced.fallback_reason is None
    hooked = workloads_from_model(m, x, method="hooks")
    assert hooked.method == "hooks" and hooked.fallback_reason is None
    with pytest.raises(ValueError, match="method must be"):
        workloads_from_model(m, x, method="jit")
    with pytest.raises(ValueError, match="no Conv2d / Linear / matmul"):
        workloads_from_model(nn.ReLU(), x)


def test_unknown_network():
    with pytest.raises(ValueError, match="unknown network 'vgg16'; choose one of resnet18"):
        build_network("vgg16")
    assert {"resnet18", "resnet50", "mobilenet_v2", "bert_base", "digits_cnn",
            "digits_mobilenet"} <= set(network_names())


@pytest.mark.parametrize("name, convs", [("digits_cnn", 3), ("digits_mobilenet", 7)])
def test_digits_models(name, convs):
    from qaccel.quant import digits

    ws = network_workloads(name)
    assert sum(w.op in ("conv2d", "depthwise") for w in ws) == convs
    assert ws[-1].op == "linear" and ws[-1].N == 10
    real = workloads_from_model(getattr(digits, name)(), torch.zeros(1, 1, 8, 8))
    assert _key(real) == _key(ws)
    assert ws[0].T == 64                               # 8x8, padding 1


@pytest.mark.shared
@pytest.mark.skipif(not PEER.is_dir(), reason="../shared/peer/scalesim not present")
def test_topology_workloads():
    ws = workloads_from_topology(PEER / "resnet18.csv")
    assert len(ws) == 21 and ws[0].T == 110 * 110 and ws[-1].K == 512
