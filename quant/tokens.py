"""Token-level ops of transformer models: embeddings as integer tables, attention masks
and the mean over tokens (masked mean pooling, as sentence-transformers pool).

- :class:`QuantEmbedding` wraps an ``nn.Embedding``: ``output_quantizer(W[ids])``. Its
  rows are quantized once, on the output grid, so the exported ``embedding`` (or
  ``position_embedding``) layer is the table ``output_quantizer.to_int(W)`` and the lookup
  is exact in both the float32 and the exact mode.
- :func:`masked_mean` / :class:`QuantTokenMean`: ``sum(mask x) / max(sum mask, eps)`` over
  the token axis (no mask: ``x.mean(dim)``), then the output quantizer; exported as a
  ``mean`` layer (``sim.vector.i_mean``).
- :func:`additive_mask_keep`: the positions an additive float attention mask (BERT's
  extended mask, ``(1 - mask) * min``) keeps; the softmax becomes a masked softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .intops import IntOp
from .modules import act_quantizer
from .quantizers import Quantizer

__all__ = ["QuantEmbedding", "QuantTokenMean", "masked_mean", "additive_mask_keep",
           "ADDITIVE_MASK_LIMIT"]

#: an additive attention mask holds 0 (kept) or values <= this (masked: exp underflows)
ADDITIVE_MASK_LIMIT = -1.0e4


def additive_mask_keep(mask: torch.Tensor) -> torch.Tensor:
    """``mask == 0`` for an additive float mask whose values are 0 or
    <= :data:`ADDITIVE_MASK_LIMIT`; ``ValueError`` for other values (an attention bias,
    not a mask, which the integer softmax cannot add)."""
    bad = (mask != 0) & (mask > ADDITIVE_MASK_LIMIT)
    if bool(bad.any()):
        v = float(mask[bad].reshape(-1)[0])
        raise ValueError(f"additive attention mask holds {v:g}: only 0 (kept) and values "
                         f"<= {ADDITIVE_MASK_LIMIT:g} (masked) are a mask; an attention "
                         "bias is not supported")
    return mask == 0


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, dim: int = 1,
                eps: float = 1e-9) -> torch.Tensor:
    """Mean of ``x`` over ``dim`` counting only positions where ``mask`` (broadcast to
    ``x``, e.g. ``[B, S, H]``) is non-zero: ``sum(mask x) / max(sum mask, eps)``."""
    if mask is None:
        return x.mean(dim=dim)
    m = mask.to(x.dtype).expand_as(x)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=eps)


class QuantEmbedding(nn.Module):
    """``output_quantizer(embedding(ids))``: an ``nn.Embedding`` whose table is quantized
    on the output activation grid (exported as integer table rows)."""

    def __init__(self, module: nn.Embedding, a_bits: int, *, signed: bool = False):
        super().__init__()
        if module.max_norm is not None:
            raise ValueError("QuantEmbedding: an nn.Embedding with max_norm (rows renormed "
                             "at lookup) cannot be a fixed integer table")
        self.module = module
        self.output_quantizer: Quantizer = act_quantizer(a_bits, signed)

    def forward(self, ids):
        return self.output_quantizer(F.embedding(ids, self.module.weight,
                                                 self.module.padding_idx))


class QuantTokenMean(nn.Module):
    """:func:`masked_mean` over ``dim`` followed by an output quantizer (vector unit)."""

    exact: IntOp | None = None

    def __init__(self, a_bits: int, *, dim: int = 1, signed: bool = False):
        super().__init__()
        self.dim = int(dim)
        self.output_quantizer: Quantizer = act_quantizer(a_bits, signed)

    def forward(self, x, mask=None):
        if self.exact is not None:
            return self.output_quantizer(self.exact(x) if mask is None
                                         else self.exact(x, mask))
        return self.output_quantizer(masked_mean(x, mask, self.dim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
