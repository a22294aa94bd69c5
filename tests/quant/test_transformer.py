"""Transformer ops through quantize -> export -> executor: Linear on token tensors,
activation x activation matmuls (QK^T with the 1/sqrt(d) factor folded, AV), softmax and
LayerNorm on the vector unit, GELU table, residual adds; exact mode == executor."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from qaccel.quant import QuantConfig
from qaccel.sim import executor
from qaccel.sim.network import IntNetwork
from torch import nn

from qaccel import quant


class EncoderLayer(nn.Module):
    """A hand-written single-head post-LN encoder layer on ``(batch, seq, hidden)``."""

    def __init__(self, d=16, ff=32, classes=3):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.act = nn.GELU()
        self.head = nn.Linear(d, classes)
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        att = F.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)
        h = self.ln1(x + self.o(att @ v))
        h = self.ln2(h + self.ff2(self.act(self.ff1(h))))
        return self.head(h)


def _randomize_ln(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, nn.LayerNorm):
            with torch.no_grad():
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(mod.bias.shape, generator=g) - 0.5)
    return m.eval()


@pytest.mark.parametrize("cfg", [QuantConfig(w_bits=8, a_bits=8),
                                 QuantConfig(w_bits=4, a_bits=8, per_channel=True,
                                             weight_range="minmax"),
                                 QuantConfig(w_bits=8, a_bits=6, a_signed=True)],
                         ids=["w8a8", "w4a8pc", "w8a6signed"])
def test_encoder_layer_exports_and_exact_mode_equals_executor(cfg, tmp_path):
    torch.manual_seed(0)
    m = _randomize_ln(EncoderLayer())
    x = torch.randn(64, 10, 16)
    qm = quant.quantize(m, [x[:32], x[32:]], cfg)
    net = quant.export(qm, x[:1])
    kinds = [L.kind for L in net.layers]
    for k in ("linear", "matmul", "softmax", "layernorm", "lut", "add", "transpose"):
        assert k in kinds, (k, kinds)
    assert kinds.count("matmul") == 2 and kinds.count("layernorm") == 2
    xt = torch.randn(32, 10, 16)
    xi = net.input_q.quantize(xt.numpy())
    want = executor.run(net, xi, trace=True)
    got = quant.exact_outputs(qm, xt, net=net)
    assert got.shape == (32, 10, 3)
    assert int((got != want.output).sum()) == 0
    per_layer = quant.integer_outputs(qm, xt, exact=True)
    for L, out in zip(net.layers, want.outputs):
        if L.name in per_layer:
            np.testing.assert_array_equal(per_layer[L.name], out, err_msg=L.name)
    # the float32 straight-through model is close to float, and to the integers
    with torch.no_grad():
        y_fp, y_ste = m(xt), qm(xt)
    y_int = net.output_q.dequantize(want.output)
    ref = float(y_fp.abs().max())
    assert float((y_ste - y_fp).abs().max()) < 0.25 * ref
    assert np.abs(y_int - y_ste.numpy()).max() < 0.25 * ref
    back = IntNetwork.load(net.save(tmp_path / "enc.npz"))
    np.testing.assert_array_equal(executor.run(back, xi), want.output)


class MultiHeadEncoder(nn.Module):
    """Pre-LN encoder layer with ``heads`` attention heads (view / permute / transpose /
    reshape on the integer grid), ReLU FFN, mean-free head on the first token."""

    def __init__(self, d=16, heads=4, ff=24, classes=3):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.qkv = nn.ModuleList([nn.Linear(d, d) for _ in range(3)])
        self.o = nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.head = nn.Linear(d, classes)

    def split(self, t):
        b, s, _ = t.shape
        return t.view(b, s, self.h, self.dh).permute(0, 2, 1, 3)

    def forward(self, x):
        b, s, d = x.shape
        h = self.ln1(x)
        q, k, v = (self.split(lin(h)) for lin in self.qkv)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.dh), dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(b, s, d)
        x = x + self.o(ctx)
        x = x + self.ff2(F.relu(self.ff1(self.ln2(x))))
        return self.head(x)


def test_multi_head_encoder_exports_heads_and_is_exact():
    torch.manual_seed(1)
    m = _randomize_ln(MultiHeadEncoder(), seed=1)
    x = torch.randn(48, 7, 16)
    qm = quant.quantize(m, [x[:24], x[24:]], QuantConfig(w_bits=8, a_bits=8,
                                                         per_channel=True))
    net = quant.export(qm, x[:1])
    kinds = [L.kind for L in net.layers]
    assert kinds.count("matmul") == 2 and kinds.count("permute") == 4
    assert "reshape" in kinds and "softmax" in kinds and kinds.count("layernorm") == 2
    mm = [L for L in net.layers if L.kind == "matmul"][0]     # 1/sqrt(dh) folded into M/2^S
    assert mm.m[0] / 2.0 ** mm.s[0] == pytest.approx(
        0.5 * mm.in_q[0].scale * mm.in_q[1].scale / mm.out_q.scale, rel=2.0 ** -15)
    xt = torch.randn(16, 7, 16)
    want = executor.run(net, net.input_q.quantize(xt.numpy()))
    assert int((quant.exact_outputs(qm, xt, net=net) != want).sum()) == 0
    with torch.no_grad():
        y_fp = m(xt).numpy()
    y_int = net.output_q.dequantize(want)
    assert np.abs(y_int - y_fp).max() < 0.2 * np.abs(y_fp).max()


def test_attention_gemms_run_on_the_cycle_model():
    """Every GEMM (Linear and both activation x activation matmuls) of an encoder with
    signed 8-bit activations runs on sim.cycle and gives the executor's integers."""
    from qaccel.sim.config import ArrayConfig
    from qaccel.sim.cycle import simulate

    torch.manual_seed(2)
    m = _randomize_ln(EncoderLayer(d=8, ff=8), seed=2)
    x = torch.randn(32, 5, 8)
    qm = quant.quantize(m, [x], QuantConfig(w_bits=8, a_bits=8, a_signed=True))
    net = quant.export(qm, x[:1])
    cfg = ArrayConfig(rows=4, cols=4, w_bits=8, a_bits=8, a_signed=True, acc_bits=32,
                      mult_bits=16)
    calls = []

    def on_cycle_model(job):
        calls.append(job.K)
        return simulate(cfg, job).y

    xi = net.input_q.quantize(x[:2].numpy())
    np.testing.assert_array_equal(executor.run(net, xi, gemm_fn=on_cycle_model),
                                  executor.run(net, xi))
    n_linear = sum(L.kind == "linear" for L in net.layers)
    assert len(calls) == n_linear + 2 * 2           # + QK^T and AV per batch item


def test_vector_unit_costs_of_an_encoder_scale_with_tokens():
    """Operation and traffic counts of the vector-unit layers (softmax, LayerNorm, GELU
    table, adds): proportional to the batch, softmax per score element, LayerNorm reads
    its gamma/beta."""
    from qaccel.sim.vector import VECTOR_OPS

    torch.manual_seed(0)
    m = _randomize_ln(EncoderLayer())
    x = torch.randn(32, 10, 16)
    qm = quant.quantize(m, [x], QuantConfig())
    net = quant.export(qm, x[:1])
    xi = net.input_q.quantize(x[:4].numpy())
    c4 = executor.vector_costs(net, xi)
    c2 = executor.vector_costs(net, xi[:2])
    assert sorted({k for _, k, _ in c4}) == ["add", "layernorm", "lut", "softmax"]
    for (_, _, a), (_, _, b) in zip(c4, c2):
        assert a.ops == 2 * b.ops and a.writes == 2 * b.writes
    soft = next(c for _, k, c in c4 if k == "softmax")
    assert soft.writes == 4 * 10 * 10
    assert soft.ops == soft.writes * VECTOR_OPS["softmax"]["per_element"] + \
        4 * 10 * VECTOR_OPS["softmax"]["per_row"]
    ln = next(c for _, k, c in c4 if k == "layernorm")
    assert ln.reads == 4 * 10 * 16 + 2 * 16


class _TokenIds(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, ids):
        return self.fc(self.emb(ids))


def test_token_id_input_exports_an_integer_embedding_table():
    """A torch.fx-traced model on token ids: no input quantizer on the ids, the embedding
    is a table on its output grid (the quantized float rows), exact; ids out of the table
    are a ValueError."""
    m = _TokenIds().eval()
    ids = torch.randint(0, 20, (16, 5))
    qm = quant.quantize(m, [ids], QuantConfig())
    net = quant.export(qm, ids[:1])
    assert [(v.kind, v.shape) for v in net.inputs] == [("ids", (5,))]
    emb = net.layers[0]
    assert [L.kind for L in net.layers] == ["embedding", "linear"] and emb.table.shape == (20, 8)
    np.testing.assert_allclose(emb.out_q.dequantize(emb.table),          # float32 noise
                               qm.emb.output_quantizer(m.emb.weight).detach().numpy(),
                               atol=1e-6)
    want = executor.run(net, ids.numpy())
    assert int((quant.exact_outputs(qm, ids, net=net) != want).sum()) == 0
    with pytest.raises(ValueError, match="token id 20 is not in"):
        executor.run(net, np.full((1, 5), 20))


def test_wide_gelu_uses_the_integer_i_gelu_and_is_exact():
    """GELU of a 12-bit activation (too wide for a table) is the vector unit's I-BERT
    i-GELU; exact mode == executor, and close to float GELU."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 3)).eval()
    x = torch.randn(128, 6, 8)
    qm = quant.quantize(m, [x], QuantConfig(w_bits=8, a_bits=12))
    net = quant.export(qm, x[:1])
    assert [L.kind for L in net.layers] == ["linear", "gelu", "linear"]
    want = executor.run(net, net.input_q.quantize(x.numpy()), trace=True)
    assert int((quant.exact_outputs(qm, x, net=net) != want.output).sum()) == 0
    g = net.layers[1]
    pre = g.in_q[0].dequantize(want.outputs[0])
    ref = F.gelu(torch.from_numpy(pre)).numpy()
    assert np.abs(g.out_q.dequantize(want.outputs[1]) - ref).max() < 0.02 + g.out_q.scale


def test_adaround_with_batches_of_different_sequence_lengths():
    """Calibration batches padded per batch to different lengths (as a tokenizer does):
    AdaRound collects token rows instead of failing in torch.cat; the result exports and
    stays exact."""
    torch.manual_seed(0)
    m = _randomize_ln(EncoderLayer())
    batches = [torch.randn(16, 7, 16), torch.randn(16, 10, 16)]
    qm = quant.quantize(m, batches, QuantConfig(w_bits=4, a_bits=8, rounding="adaround",
                                                iterations=30))
    assert any(ql.w_int is not None for _, ql in quant.quant_layers(qm))
    net = quant.export(qm, batches[0][:1])
    xt = torch.randn(8, 7, 16)
    want = executor.run(net, net.input_q.quantize(xt.numpy()))
    assert int((quant.exact_outputs(qm, xt, net=net) != want).sum()) == 0


class _ArangePositions(nn.Module):
    """Position ids from ``torch.arange`` inside the model, a token mean without a mask."""

    def __init__(self):
        super().__init__()
        self.tok, self.pos = nn.Embedding(20, 8), nn.Embedding(16, 8)
        self.fc = nn.Linear(8, 8)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        return F.relu(self.fc(self.tok(ids) + self.pos(pos)[None])).mean(1)


def test_arange_position_ids_and_token_mean_at_any_length():
    """``arange`` positions become a ``position_embedding`` table sliced per length; the
    captured network runs other lengths than the export example, exactly."""
    from qaccel.quant.capture import capture

    torch.manual_seed(0)
    m = _ArangePositions().eval()
    gm = capture(m, (torch.randint(0, 20, (4, 6)),))
    qm = quant.quantize(gm, [torch.randint(0, 20, (32, 6)), torch.randint(0, 20, (32, 9))],
                        QuantConfig())
    net = quant.export(qm, torch.randint(0, 20, (1, 6)))
    assert [L.kind for L in net.layers] == ["embedding", "position_embedding", "add", "linear",
                                            "mean"]
    assert net.layers[1].table.shape == (16, 8) and net.inputs[0].shape == (-1,)
    for seq in (3, 6, 16):
        ids = torch.randint(0, 20, (5, seq))
        want = executor.run(net, ids.numpy())
        assert int((quant.exact_outputs(qm, ids, net=net) != want).sum()) == 0
        with torch.no_grad():
            ref = m(ids).numpy()
        assert np.abs(net.output_q.dequantize(want) - ref).max() < 0.05 * np.abs(ref).max()
