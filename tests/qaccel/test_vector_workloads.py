"""Model -> vector-unit layers (qaccel.mapping.vector_workloads_from_model): the shipped
CNNs' pooling and residual adds, ReLU fusion as the export does it, equality with the
integer executor's description of an exported network, and the sweep's cached copy."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from flow_models import Encoder
from qaccel.sim import ArrayConfig
from qaccel.sim.analytic import analyze_vector
from qaccel.sim.vector import LUT_MAX_BITS
from torch import nn

from qaccel.mapping import vector_workloads_from_model, vectors_at_bits
from qaccel.networks import build_network, network_vector_workloads
from qaccel.networks.bert import BertLayer, bert_vector_workloads


def _desc(vs):
    """Everything but the name."""
    return [(v.kind, v.in_shapes, v.out_shape, v.window, v.params) for v in vs]


def test_resnet18_pooling_and_eight_residual_adds():
    vs = network_vector_workloads("resnet18")
    assert Counter(v.kind for v in vs) == {"add": 8, "maxpool2d": 1, "global_avgpool": 1}
    mp, gap = vs[0], vs[-1]
    assert (mp.name, mp.kind, mp.window) == ("maxpool", "maxpool2d", 9)
    assert mp.in_shapes == ((1, 64, 112, 112),) and mp.out_shape == (1, 64, 56, 56)
    assert (gap.name, gap.kind, gap.window) == ("avgpool", "global_avgpool", 49)
    assert gap.in_shapes == ((1, 512, 7, 7),) and gap.out_shape == (1, 512, 1, 1)
    adds = vs[1:-1]
    want = [(f"layer{s}.{b}.add0", (1, c, h, h)) for s, c, h in
            ((1, 64, 56), (2, 128, 28), (3, 256, 14), (4, 512, 7)) for b in (0, 1)]
    assert [(v.name, v.out_shape) for v in adds] == want
    assert all(v.kind == "add" and v.in_shapes == (v.out_shape,) * 2 for v in adds)
    # every ReLU follows a conv (through its BatchNorm) or a residual add: all fused
    assert not [v for v in vs if v.kind == "relu"]
    # ops from VECTOR_OPS: 7 per added element, 1 per maxpool window element, 1 + 4 per
    # global-pool window element / output
    assert mp.cost.ops == 64 * 56 * 56 * 9
    assert adds[0].cost.ops == 7 * 64 * 56 * 56
    assert gap.cost.ops == 512 * (49 + 4)


def test_resnet50_sixteen_adds_and_batch():
    vs = network_vector_workloads("resnet50", batch=2)
    adds = [v for v in vs if v.kind == "add"]
    assert len(adds) == 16 and len(vs) == 18
    assert Counter(v.out_shape[1] for v in adds) == {256: 3, 512: 4, 1024: 6, 2048: 3}
    assert adds[0].out_shape == (2, 256, 56, 56) and adds[-1].out_shape == (2, 2048, 7, 7)
    assert vs[0].in_shapes == ((2, 64, 112, 112),) and vs[-1].window == 49


def test_mobilenet_v2_ten_residual_adds():
    vs = network_vector_workloads("mobilenet_v2")
    adds = [v for v in vs if v.kind == "add"]
    # the stride-1 blocks with c_in == c_out: 24 x1, 32 x2, 64 x3, 96 x2, 160 x2
    assert [v.name for v in adds] == [f"features.{i}.add0"
                                      for i in (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)]
    assert [v.out_shape[1:] for v in adds] == [
        (24, 56, 56), (32, 28, 28), (32, 28, 28), (64, 14, 14), (64, 14, 14), (64, 14, 14),
        (96, 14, 14), (96, 14, 14), (160, 7, 7), (160, 7, 7)]
    gap = vs[-1]
    assert len(vs) == 11 and (gap.name, gap.kind, gap.window) == ("pool", "global_avgpool", 49)
    assert gap.in_shapes == ((1, 1280, 7, 7),)           # ReLU6s all fused: no tables


def test_digits_cnn_pools():
    vs = network_vector_workloads("digits_cnn")
    assert _desc(vs) == [("maxpool2d", ((1, 32, 8, 8),), (1, 32, 4, 4), 4, 0),
                         ("global_avgpool", ((1, 64, 4, 4),), (1, 64, 1, 1), 16, 0)]


class _Mixed(nn.Module):
    """Constant and parameter adds, fused and standalone ReLUs, functional pools."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.c3 = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.bias = nn.Parameter(torch.zeros(1, 8, 1, 1))
        self.relu, self.r6 = nn.ReLU(), nn.ReLU6()
        self.ln = nn.LayerNorm(8)

    def forward(self, x):
        x = self.relu(self.b1(self.c1(x)))              # fused (conv -> BN -> ReLU)
        x = x + 1.0                                      # a constant: not an add
        x = x + self.bias                                # a parameter: not an add
        y = self.c2(x)
        z = F.relu(y)                                    # c2 has two users: standalone
        x = torch.add(y, z)                              # add ...
        x = F.relu(x)                                    # ... with its ReLU fused
        x = F.max_pool2d(x, 2)
        x = self.r6(x)                                   # standalone ReLU6: a table
        w = self.c3(x)
        w += x                                           # iadd of two activations
        p = F.avg_pool2d(w, (2, 1))
        g = p.mean((2, 3))                               # global average pool
        t = self.ln(w.flatten(2).transpose(1, 2))        # [B, HW, C]
        return g + t.mean(1) + F.adaptive_avg_pool2d(w, 1).flatten(1)


def test_adds_relus_and_pools_of_a_mixed_model():
    vs = vector_workloads_from_model(_Mixed(), torch.zeros(2, 3, 8, 8))
    got = [(v.name, v.kind, v.out_shape, v.window, v.params) for v in vs]
    assert got == [
        ("relu0", "relu", (2, 8, 8, 8), 1, 0),
        ("add0", "add", (2, 8, 8, 8), 1, 0),
        ("maxpool0", "maxpool2d", (2, 8, 4, 4), 4, 0),
        ("r6", "lut", (2, 8, 4, 4), 1, 0),
        ("add1", "add", (2, 8, 4, 4), 1, 0),
        ("avgpool0", "avgpool2d", (2, 8, 2, 4), 2, 0),
        ("mean0", "global_avgpool", (2, 8), 8, 0),
        ("ln", "layernorm", (2, 16, 8), 1, 16),
        ("mean1", "mean", (2, 8), 16, 0),
        ("add2", "add", (2, 8), 1, 0),
        ("avgpool1", "global_avgpool", (2, 8, 1, 1), 16, 0),
        ("add3", "add", (2, 8), 1, 0)]
    assert vs[1].in_shapes == ((2, 8, 8, 8), (2, 8, 8, 8))


def test_bad_a_bits():
    with pytest.raises(ValueError, match="a_bits"):
        vector_workloads_from_model(_Mixed(), torch.zeros(1, 3, 8, 8), a_bits=0)


class _TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1, self.relu = nn.Conv2d(3, 8, 3, padding=1, bias=False), \
            nn.BatchNorm2d(8), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.c2, self.c3, self.c4 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1), \
            nn.Conv2d(8, 8, 1)
        self.ap, self.gap, self.fc = nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.pool(self.relu(self.b1(self.c1(x)))))
        x = F.relu(x + self.c3(F.relu(self.c2(x))))
        x = F.silu(self.ap(x + self.c4(x)))
        return self.fc(self.gap(x).flatten(1))


@pytest.mark.parametrize("model, shape", [(_TinyResNet, (8, 3, 8, 8)),
                                          (Encoder, (8, 6, 16))])
def test_same_layers_as_the_exported_integer_network(model, shape):
    """The float model's description == sim.executor.vector_workloads of its export
    (kinds, shapes, windows, params; widths aside): the ReLUs fused and kept alike."""
    from qaccel.quant import QuantConfig
    from qaccel.sim import executor

    from qaccel import quant

    torch.manual_seed(0)
    m, x = model().eval(), torch.randn(*shape)
    net = quant.export(quant.quantize(m, [x], QuantConfig()), x[:1])
    ref = executor.vector_workloads(net, executor.sample_inputs(net, seq=shape[1]))
    gen = vector_workloads_from_model(m, x[:1])
    assert _desc(gen) == _desc(ref) and len(gen) == (7 if model is _TinyResNet else 6)


@pytest.mark.parametrize("a_bits", [8, 12])
@pytest.mark.parametrize("sdpa", [False, True])
def test_bert_generic_equals_the_hand_written_description(a_bits, sdpa):
    """The trace finds bert_vector_workloads' ops (only the names differ: softmax0, add0
    ... against softmax, attn_residual ...), with SDPA too."""
    gen = vector_workloads_from_model(BertLayer(use_sdpa=sdpa).eval(),
                                      torch.zeros(2, 16, 768), a_bits=a_bits)
    hand = bert_vector_workloads(2, 16, a_bits=a_bits)
    assert _desc(gen) == _desc(hand)
    assert [v.kind for v in gen][3] == ("lut" if a_bits <= LUT_MAX_BITS else "gelu")
    assert [v.name for v in network_vector_workloads("bert_base", seq_len=16)] == [
        v.name for v in hand]


def test_multihead_attention_softmax():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
            self.ln = nn.LayerNorm(32)

        def forward(self, x):
            return self.ln(x + self.attn(x, x, x, need_weights=False)[0])

    vs = vector_workloads_from_model(Block(), torch.zeros(3, 10, 32))
    assert [(v.name, v.kind, v.out_shape) for v in vs] == [
        ("attn.softmax", "softmax", (3, 4, 10, 10)), ("add0", "add", (3, 10, 32)),
        ("ln", "layernorm", (3, 10, 32))]


def test_vectors_at_bits_resolves_gelu():
    raw = network_vector_workloads("bert_base", a_bits=None, seq_len=8)
    kinds = [v.kind for v in raw]
    assert "gelu" in kinds and "lut" not in kinds
    assert [v.kind for v in vectors_at_bits(raw, 8)] == [
        "lut" if k == "gelu" else k for k in kinds]
    assert vectors_at_bits(raw, LUT_MAX_BITS + 1) == raw
    assert vectors_at_bits(raw, 8) == bert_vector_workloads(1, 8, a_bits=8)


def test_sweep_context_costs_the_cnn_vector_layers(tmp_path):
    """A sweep of a shipped CNN costs its pooling and adds (cached once in the
    workspace, read back equal)."""
    from qaccel import workspace
    from qaccel.sweep.spec import parse_spec
    from qaccel.sweep.workload import prepare

    ws = workspace.Workspace(tmp_path / "ws")
    spec = parse_spec({"workload": {"network": "resnet18"}, "grid": {"rows": [8]}},
                      base_dir=tmp_path)
    ctx = prepare(spec.workload, ws)
    cached = list((tmp_path / "ws").rglob("resnet18-vectors-*.json"))
    assert len(cached) == 1
    again = prepare(spec.workload, ws)
    cfg = ArrayConfig(rows=8, cols=8)
    assert ctx.vectors(cfg) == again.vectors(cfg) == network_vector_workloads("resnet18")
    assert sum(analyze_vector(cfg, v).cycles for v in ctx.vectors(cfg)) == sum(
        -(-v.cost.ops // 8) for v in network_vector_workloads("resnet18"))


def test_network_vector_workloads_validates_like_build_network():
    with pytest.raises(ValueError, match="unknown network"):
        network_vector_workloads("vgg16")
    with pytest.raises(ValueError, match="batch"):
        network_vector_workloads("resnet18", batch=0)
    model, x = build_network("resnet18", image_size=64)
    assert vector_workloads_from_model(model, x)[-1].window == 4        # 2x2 before pooling
