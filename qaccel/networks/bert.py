"""One BERT-base encoder layer (Devlin et al. 2019): hidden 768, 12 heads, FFN 3072.

The attention's two matmuls are explicit ``torch.matmul`` calls (``Q K^T`` and ``P V``),
or one ``F.scaled_dot_product_attention`` with ``use_sdpa=True``; the mapper turns either
into per-head GEMMs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BertLayer", "bert_base_layer"]


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
