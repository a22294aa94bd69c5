"""A BERT-style encoder built with transformers' BertModel (small BertConfig, random
weights, nothing downloaded): quant.capture (torch.export) -> quantize -> export ->
executor, exact mode == executor, close to FP32."""

import numpy as np
import pytest
import torch
import transformers  # dev extra (tests only)
from qaccel.quant import QuantConfig
from qaccel.quant.capture import capture
from qaccel.sim import executor
from torch import nn

from qaccel import quant


def _bert(layers=2, hidden=32, seed=0):
    cfg = transformers.BertConfig(hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=4, intermediate_size=2 * hidden,
                                  vocab_size=100, max_position_embeddings=64)
    torch.manual_seed(seed)
    return transformers.BertModel(cfg).eval()


def test_bert_encoder_captures_quantizes_exports_and_is_exact():
    bert = _bert()
    gm = capture(bert.encoder, (torch.randn(4, 9, 32),))
    with torch.no_grad():                    # the capture is the model, at another shape too
        for shape in ((4, 9, 32), (3, 5, 32)):
            h = torch.randn(shape)
            torch.testing.assert_close(gm(h), bert.encoder(h).last_hidden_state)
    x = torch.randn(64, 9, 32)
    qm = quant.quantize(gm, [x[:32], x[32:]], QuantConfig(w_bits=8, a_bits=8,
                                                          per_channel=True))
    net = quant.export(qm, x[:1])
    kinds = [L.kind for L in net.layers]
    assert kinds.count("matmul") == 4 and kinds.count("softmax") == 2
    assert kinds.count("layernorm") == 4 and kinds.count("lut") == 2      # GELU tables
    assert kinds.count("linear") == 12
    xt = torch.randn(8, 9, 32)
    want = executor.run(net, net.input_q.quantize(xt.numpy()))
    assert int((quant.exact_outputs(qm, xt, net=net) != want).sum()) == 0
    with torch.no_grad():
        ref = bert.encoder(xt).last_hidden_state.numpy()
    y = net.output_q.dequantize(want)
    cos = (y * ref).sum(-1) / np.linalg.norm(y, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert cos.min() > 0.99                  # measured 0.9996


class _Cumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.cumsum(self.fc(x), dim=-1)


def test_unsupported_op_names_op_module_path_and_supported_list():
    with pytest.raises(ValueError, match=r"cumsum.*<top level>.*supported: .*aten.linear"):
        capture(_Cumsum(), (torch.randn(2, 4),))
    bert = _bert(layers=1)
    mask = torch.zeros(2, 1, 9, 9)                 # an additive float mask
    with pytest.raises(ValueError, match="float .additive. attention mask"):
        capture(bert.encoder, (torch.randn(2, 9, 32),), {"attention_mask": mask})


def _padded_mask(batch, seq, seed):
    """Boolean attention masks ``[B, 1, 1, S]`` of random lengths (padding at the end)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, seq + 1, (batch,), generator=g)
    return (torch.arange(seq)[None, :] < lengths[:, None])[:, None, None, :]


def test_bert_encoder_with_attention_mask_is_exact_and_ignores_padding():
    bert = _bert(layers=1, seed=3)
    mask = _padded_mask(4, 9, 0)
    gm = capture(bert.encoder, (torch.randn(4, 9, 32),), {"attention_mask": mask})
    x = torch.randn(64, 9, 32)
    m_cal = _padded_mask(64, 9, 1)
    qm = quant.quantize(gm, [(x[:32], m_cal[:32]), (x[32:], m_cal[32:])],
                        QuantConfig(w_bits=8, a_bits=8, per_channel=True))
    net = quant.export(qm, x[:1], example_mask=m_cal[:1])
    assert net.mask_shape == (1, 1, 9)
    soft = [L for L in net.layers if L.kind == "softmax"]
    assert soft and all(L.inputs[1] == -2 for L in soft)
    xt, mt = torch.randn(16, 9, 32), _padded_mask(16, 9, 2)
    want = executor.run(net, net.input_q.quantize(xt.numpy()), mask=mt.numpy())
    assert int((quant.exact_outputs(qm, xt, net=net, mask=mt) != want).sum()) == 0
    # padding does not reach the real tokens: changing it leaves them unchanged
    xt2 = xt.clone()
    pad = ~mt[:, 0, 0, :]
    xt2[pad] = torch.randn(int(pad.sum()), 32) * 3
    want2 = executor.run(net, net.input_q.quantize(xt2.numpy()), mask=mt.numpy())
    keep = (~pad).numpy()
    np.testing.assert_array_equal(want2[keep], want[keep])
    with pytest.raises(ValueError, match="mask"):
        executor.run(net, net.input_q.quantize(xt.numpy()))
