"""One BERT-base encoder layer (Devlin et al. 2019): hidden 768, 12 heads, FFN 3072.

The attention's two matmuls are explicit ``torch.matmul`` calls (``Q K^T`` and ``P V``),
or one ``F.scaled_dot_product_attention`` with ``use_sdpa=True``; the mapper turns either
into per-head GEMMs. :func:`bert_vector_workloads` describes the layer's non-GEMM ops
on the vector unit (softmax per head, the two residual adds and LayerNorms, GELU), which
the GEMM mapper does not see.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BertLayer", "bert_base_layer", "bert_vector_workloads"]


class BertLayer(nn.Module):
    def __init__(self, hidden: int = 768, heads: int = 12, ffn: int = 3072,
                 use_sdpa: bool = False):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden={hidden} must be a multiple of heads={heads}")
        self.heads, self.head_dim, self.use_sdpa = heads, hidden // heads, use_sdpa
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden)
        self.ffn_in = nn.Linear(hidden, ffn)
        self.ffn_out = nn.Linear(ffn, hidden)
        self.ln2 = nn.LayerNorm(hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)   # [B, H, S, D]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        if self.use_sdpa:
            ctx = F.scaled_dot_product_attention(q, k, v)
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            ctx = torch.matmul(scores.softmax(dim=-1), v)
        ctx = ctx.transpose(1, 2).reshape(b, s, h)
        x = self.ln1(x + self.attn_out(ctx))
        return self.ln2(x + self.ffn_out(F.gelu(self.ffn_in(x))))


def bert_base_layer(use_sdpa: bool = False) -> BertLayer:
    return BertLayer(use_sdpa=use_sdpa)


def bert_vector_workloads(batch: int = 1, seq_len: int = 128, *, hidden: int = 768,
                          heads: int = 12, ffn: int = 3072, a_bits: int = 8) -> list:
    """The vector-unit ops of one :class:`BertLayer` on ``batch x seq_len`` tokens, as the
    integer export runs them (:class:`qaccel.sim.workload.VectorWorkload`, widths left to
    the array's ``a_bits``): softmax over each head's ``seq x seq`` scores (the
    ``1/sqrt(d)`` is folded into ``QK^T``'s requantizer), the attention residual add,
    LayerNorm, GELU (a table up to :data:`qaccel.sim.vector.LUT_MAX_BITS` input bits,
    I-BERT's integer GELU above), the FFN residual add and LayerNorm."""
    from qaccel.sim.vector import LUT_MAX_BITS
    from qaccel.sim.workload import VectorWorkload

    tok, scores, ff = (batch, seq_len, hidden), (batch, heads, seq_len, seq_len), \
        (batch, seq_len, ffn)
    gelu = "lut" if a_bits <= LUT_MAX_BITS else "gelu"
    return [VectorWorkload("softmax", "softmax", (scores,), scores),
            VectorWorkload("attn_residual", "add", (tok, tok), tok),
            VectorWorkload("ln1", "layernorm", (tok,), tok, params=2 * hidden),
            VectorWorkload("gelu", gelu, (ff,), ff),
            VectorWorkload("ffn_residual", "add", (tok, tok), tok),
            VectorWorkload("ln2", "layernorm", (tok,), tok, params=2 * hidden)]
