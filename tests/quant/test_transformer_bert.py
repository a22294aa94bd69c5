"""A BERT-style encoder built with transformers' BertModel (small BertConfig, random
weights, nothing downloaded): quant.capture (torch.export) -> quantize -> export ->
executor, exact mode == executor, close to FP32. The full BertModel too: token ids,
embeddings as integer tables, position ids per sequence length, attention masks (boolean
for SDPA, BERT's additive float mask for eager attention), the pooler's tanh table, and
masked mean pooling."""

import importlib.util
import pathlib

import numpy as np
import pytest
import torch
import transformers  # dev extra (tests only)
from qaccel.quant import QuantConfig
from qaccel.quant.capture import capture
from qaccel.sim import executor
from qaccel.sim.network import IntNetwork
from torch import nn

from qaccel import quant


def _bert(layers=2, hidden=32, seed=0, attn="sdpa"):
    cfg = transformers.BertConfig(hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=4, intermediate_size=2 * hidden,
                                  vocab_size=100, max_position_embeddings=64,
                                  attn_implementation=attn)
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


def test_additive_float_mask_is_a_masked_softmax_and_a_bias_is_refused():
    """The encoder given BERT's extended mask ((1 - mask) * min, float) computes what the
    model computes; an additive bias that is not a mask is refused when it is met."""
    bert = _bert(layers=1)
    keep = _padded_mask(4, 9, 0)
    add = (1.0 - keep.float()) * torch.finfo(torch.float32).min
    gm = capture(bert.encoder, (torch.randn(4, 9, 32),), {"attention_mask": add})
    h = torch.randn(4, 9, 32)
    with torch.no_grad():
        torch.testing.assert_close(gm(h, add),
                                   bert.encoder(h, attention_mask=add).last_hidden_state)
    with pytest.raises(ValueError, match="additive attention mask holds -0.5"):
        gm(h, torch.full((4, 1, 9, 9), -0.5))


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
    assert net.mask_shape == (1, 1, -1)              # the sequence axis stays variable
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


def _tokens(batch, seq, seed, vocab=100):
    """Token ids and a 0/1 attention mask padded at the end to random lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    lengths = torch.randint(2, seq + 1, (batch,), generator=g)
    return ids, (torch.arange(seq)[None, :] < lengths[:, None]).long()


def _cos(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_full_bert_model_with_pooler_is_exact_at_any_length(attn, tmp_path):
    """input_ids + attention_mask -> pooler_output: word / position / token-type embeddings
    as integer tables, position ids sliced per length, the mask as the model computes it
    (boolean for SDPA, additive float for eager), CLS select, tanh table. Exact mode ==
    executor (0 differing) on a padded batch of the export length and of another length."""
    bert = _bert(layers=1, seed=1, attn=attn)
    gm = capture(bert, (), dict(zip(("input_ids", "attention_mask"), _tokens(4, 9, 0))),
                 output=1)
    cal = [_tokens(32, 9, 1), _tokens(32, 12, 2)]
    qm = quant.quantize(gm, cal, QuantConfig(w_bits=8, a_bits=8, per_channel=True))
    net = quant.export(qm, cal[0])
    kinds = [L.kind for L in net.layers]
    assert [(v.name, v.kind, v.shape) for v in net.inputs] == [
        ("input_ids", "ids", (-1,)), ("attention_mask", "mask", (-1,))]
    assert kinds[:2] == ["embedding", "position_embedding"] and \
        kinds.count("position_embedding") == 2                # positions, token types 0
    assert kinds[-3:] == ["select", "linear", "lut"] and net.layers[-1].func == "tanh"
    back = IntNetwork.load(net.save(tmp_path / "bert.npz"))
    for seq, seed in ((9, 3), (13, 4)):
        ids, mask = _tokens(8, seq, seed)
        want = executor.run(net, (ids.numpy(), mask.numpy()))
        np.testing.assert_array_equal(
            executor.run(back, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}),
            want)
        got = quant.exact_outputs(qm, (ids, mask), net=net)
        assert want.shape == (8, 32) and int((got != want).sum()) == 0
        with torch.no_grad():
            ref = bert(input_ids=ids, attention_mask=mask).pooler_output.numpy()
        assert _cos(net.output_q.dequantize(want), ref).min() > 0.99       # measured 0.999
    if attn == "sdpa":                        # every GEMM on the cycle model: the same
        from qaccel.sim.config import ArrayConfig
        from qaccel.sim.cycle import simulate
        # 9-bit stationary operands: an unsigned activation minus its zero-point (AV, QK^T)
        cfg = ArrayConfig(rows=8, cols=8, w_bits=9, a_bits=8, acc_bits=32, mult_bits=16,
                          per_channel=True)
        ids, mask = _tokens(1, 6, 5)
        x = (ids.numpy(), mask.numpy())
        np.testing.assert_array_equal(
            executor.run(net, x, gemm_fn=lambda job: simulate(cfg, job).y),
            executor.run(net, x))
    with pytest.raises(ValueError, match="token id 100 is not in"):
        executor.run(net, (np.full((1, 5), 100), np.ones((1, 5), dtype=np.int64)))
    with pytest.raises(ValueError, match="sequence length 65 exceeds the 64 positions"):
        executor.run(net, (np.zeros((1, 65), dtype=np.int64), np.ones((1, 65), np.int64)))


class _MeanPooled(nn.Module):
    """Sentence-transformers' mean pooling over the tokens the mask keeps."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                      token_type_ids=token_type_ids).last_hidden_state
        m = attention_mask.unsqueeze(-1).expand(h.size()).float()
        return torch.sum(h * m, 1) / torch.clamp(m.sum(1), min=1e-9)


def test_masked_mean_pooling_with_three_inputs_is_exact_and_ignores_padding():
    """input_ids, attention_mask and token_type_ids (two id inputs, one mask) -> masked
    mean over the tokens, an integer ``mean`` layer with the mask; padding changes
    nothing."""
    model = _MeanPooled(_bert(layers=1, seed=2)).eval()

    def batch(n, seq, seed):
        ids, mask = _tokens(n, seq, seed)
        return ids, mask, (torch.arange(seq)[None, :] >= seq // 2).long().expand(n, seq)

    gm = capture(model, batch(4, 10, 0))
    qm = quant.quantize(gm, [batch(32, 10, 1), batch(32, 7, 2)],
                        QuantConfig(w_bits=8, a_bits=8, per_channel=True))
    net = quant.export(qm, batch(1, 10, 1))
    assert [v.kind for v in net.inputs] == ["ids", "mask", "ids"]
    mean = net.layers[-1]
    assert mean.kind == "mean" and mean.axis == 1 and mean.inputs[1] == -2
    assert [L.kind for L in net.layers].count("embedding") == 2
    ids, mask, tt = batch(8, 11, 3)
    want = executor.run(net, (ids.numpy(), mask.numpy(), tt.numpy()))
    assert int((quant.exact_outputs(qm, (ids, mask, tt), net=net) != want).sum()) == 0
    res = executor.run(net, (ids.numpy(), mask.numpy(), tt.numpy()), trace=True)
    per_layer = quant.integer_outputs(qm, (ids, mask, tt), exact=True)
    checked = [L.name for L in net.layers if L.name in per_layer]
    assert len(checked) >= 10                     # every layer with an output quantizer
    for L, out in zip(net.layers, res.outputs):
        if L.name in per_layer:
            np.testing.assert_array_equal(np.broadcast_to(per_layer[L.name], out.shape), out,
                                          err_msg=L.name)   # position tables: [1, S, D]
    with torch.no_grad():
        ref = model(ids, mask, tt).numpy()
    assert _cos(net.output_q.dequantize(want), ref).min() > 0.99
    ids2 = torch.where(mask.bool(), ids, (ids + 7) % 100)        # other padding tokens
    np.testing.assert_array_equal(
        executor.run(net, (ids2.numpy(), mask.numpy(), tt.numpy())), want)


def _example():
    path = pathlib.Path(__file__).parents[2] / "examples" / "sentence_transformer.py"
    spec = importlib.util.spec_from_file_location("sentence_transformer_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sentence_transformer_example_on_a_saved_random_bert(tmp_path, capsys):
    """examples/sentence_transformer.py on a random-weight BertModel and a WordPiece
    tokenizer saved with save_pretrained (no network): integer vs FP32 sentence embeddings
    (mean pooling) close, exact fake-quant == executor; a bad directory exits 2."""
    st = _example()
    words = sorted({w.strip(".,").lower() for s in st.SENTENCES for w in s.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=64, vocab_size=len(vocab),
                                  max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(tmp_path)
    r = st.integer_sentence_embeddings(tmp_path, st.SENTENCES[:8], batch_size=4)
    assert r["tokenizer"] and len(r["cosine"]) == 8
    assert r["outputs"] == 8 * 32 and r["differing"] == 0
    assert r["cosine"].min() > 0.99                                   # measured 0.9998
    assert [v.kind for v in r["net"].inputs] == ["ids", "mask"]
    assert r["net"].layers[-1].kind == "mean"
    with pytest.raises(SystemExit) as exc:
        st.main([str(tmp_path / "missing")])
    assert exc.value.code == 2 and "is not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert st.main([str(tmp_path / "empty")]) == 2
    assert "not a local Hugging Face model directory" in capsys.readouterr().err
