"""Padding positions of calibration batches: kept out of activation ranges and of the
reconstruction (AdaRound / Bit-split) losses.

A batch carries an attention mask when it is a dict with a key containing ``"mask"``
(``attention_mask``, ``attn_mask``, ...) or a tuple/list with a boolean / 0-1 integer
tensor after its first element, shaped ``[B, S]``, ``[B, 1, S]`` or ``[B, 1, 1, S]``
(1 / True: a real token). Tensors the model computes from such a batch are recognised by
their shape: ``[B, S, ...]`` (tokens), ``[B, h, S, S]`` (attention scores and
probabilities: both the query and the key must be real), ``[B, h, S, d]`` (per-head
queries / values) and ``[B, h, d, S]`` (transposed keys). Anything else (pooled vectors,
logits, images) is kept whole.
"""

from __future__ import annotations

import torch

__all__ = ["padding_mask", "valid_mask", "valid_values"]


def _as_token_mask(m) -> torch.Tensor | None:
    if not isinstance(m, torch.Tensor) or m.is_floating_point() or m.dim() < 2:
        return None
    if m.dtype != torch.bool and not bool(((m == 0) | (m == 1)).all()):
        return None
    while m.dim() > 2 and m.shape[1] == 1:
        m = m[:, 0]
    return (m != 0) if m.dim() == 2 else None


def padding_mask(batch) -> torch.Tensor | None:
    """The ``[B, S]`` boolean token mask (True: a real token) of a calibration batch, or
    ``None`` if it carries no attention mask or the mask pads nothing."""
    cand = None
    if isinstance(batch, dict):
        cand = next((v for k, v in batch.items() if "mask" in str(k).lower()
                     and _as_token_mask(v) is not None), None)
    elif isinstance(batch, tuple | list):
        cand = next((v for v in list(batch)[1:] if _as_token_mask(v) is not None), None)
    m = _as_token_mask(cand)
    return None if m is None or bool(m.all()) else m


def valid_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """A boolean mask broadcastable to ``x`` keeping the values of real tokens, or ``None``
    (keep everything) if ``x`` has no token axis of ``mask``'s ``[B, S]``."""
    if mask is None or not isinstance(x, torch.Tensor) or x.dim() < 2:
        return None
    b, s = mask.shape
    if x.shape[0] != b:
        return None
    if x.dim() == 4 and x.shape[2] == s and x.shape[3] == s:
        return mask[:, None, :, None] & mask[:, None, None, :]
    if x.shape[1] == s:
        return mask.reshape(b, s, *([1] * (x.dim() - 2)))
    if x.dim() == 4 and x.shape[2] == s:
        return mask[:, None, :, None]
    if x.dim() == 4 and x.shape[3] == s:
        return mask[:, None, None, :]
    return None


def valid_values(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` without its padding positions: token tensors ``[B, S, ...]`` -> rows
    ``[N, ...]`` of the real tokens, other token-shaped tensors -> the flat values of
    real positions, anything else unchanged."""
    v = valid_mask(x, mask)
    if v is None:
        return x
    if x.dim() >= 2 and v.dim() == x.dim() and v.shape[:2] == x.shape[:2] and \
            all(n == 1 for n in v.shape[2:]):
        return x[v.reshape(v.shape[:2])]
    return x[v.expand_as(x)]
