"""A small ViT-style encoder on real data (scikit-learn digits, the 8 image rows as
tokens), trained in seconds: integer-only (vector-unit softmax / LayerNorm / GELU)
accuracy vs FP32, exact mode == executor."""

import math

import pytest
import torch
import torch.nn.functional as F
from qaccel.quant import QuantConfig
from qaccel.quant.digits import load_split
from qaccel.sim import executor
from torch import nn

from qaccel import quant


class RowViT(nn.Module):
    """Rows as tokens -> Linear embedding -> pre-LN encoder blocks (multi-head attention,
    GELU FFN) -> LayerNorm -> flatten -> classifier."""

    def __init__(self, d=32, heads=4, ff=64, layers=2):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.embed = nn.Linear(8, d)
        self.blocks = nn.ModuleList(nn.ModuleDict(dict(
            ln1=nn.LayerNorm(d), q=nn.Linear(d, d), k=nn.Linear(d, d), v=nn.Linear(d, d),
            o=nn.Linear(d, d), ln2=nn.LayerNorm(d), f1=nn.Linear(d, ff),
            f2=nn.Linear(ff, d))) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(8 * d, 10)

    def forward(self, x):
        b = x.shape[0]
        x = self.embed(x.reshape(b, 8, 8))
        for blk in self.blocks:
            h = blk["ln1"](x)
            q, k, v = (blk[n](h).reshape(b, 8, self.h, self.dh).permute(0, 2, 1, 3)
                       for n in "qkv")
            att = F.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.dh), dim=-1)
            x = x + blk["o"]((att @ v).transpose(1, 2).reshape(b, 8, -1))
            x = x + blk["f2"](F.gelu(blk["f1"](blk["ln2"](x))))
        return self.head(torch.flatten(self.ln(x), 1))


@pytest.fixture(scope="module")
def trained():
    x_tr, y_tr, x_te, y_te = load_split()
    torch.manual_seed(0)                 # seeds 0-2 checked: all pass with these margins
    m = RowViT()
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    for _ in range(25):
        perm = torch.randperm(len(x_tr))
        for i in range(0, len(x_tr), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(m(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    m.eval()
    with torch.no_grad():
        fp = float((m(x_te).argmax(1) == y_te).float().mean())
    cal = x_tr[torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(0))[:256]]
    return m, fp, cal, x_te, y_te.numpy()


@pytest.mark.parametrize("cfg, max_drop", [
    (QuantConfig(w_bits=8, a_bits=8, per_channel=True), 0.01),
    (QuantConfig(w_bits=8, a_bits=8), 0.01),
    (QuantConfig(w_bits=4, a_bits=8, per_channel=True), 0.03)],
    ids=["w8a8pc", "w8a8pt", "w4a8pc"])
def test_digits_vit_integer_accuracy_and_exactness(trained, cfg, max_drop):
    m, fp, cal, x_te, y_te = trained
    assert fp > 0.93
    qm = quant.quantize(m, [cal[:128], cal[128:]], cfg)
    net = quant.export(qm, cal[:1])
    kinds = {L.kind for L in net.layers}
    assert {"softmax", "layernorm", "lut", "matmul"} <= kinds
    y = executor.run(net, net.input_q.quantize(x_te.numpy()))
    acc = float((y.argmax(1) == y_te).mean())
    assert acc >= fp - max_drop, (acc, fp)    # seed 0: FP32 98.1 %, int 98.0 / 98.0 / 98.1 %
    assert int((quant.exact_outputs(qm, x_te, net=net) != y).sum()) == 0
