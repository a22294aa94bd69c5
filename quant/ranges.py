"""Range setting (whitepaper sec. 3.1): min-max (eq. 14-15), MSE (eq. 16),
cross-entropy for logits (eq. 17) and BN-based (eq. 18-19); for weights also the
output-aware MSE of the layer's output on calibration inputs (:func:`output_mse_range`).

Every function returns the real range ``(q_min, q_max)`` (tensors; per channel when the
quantizer is per channel) to hand to :meth:`quant.quantizers.Quantizer.set_range`.
The MSE and cross-entropy searches are grid searches over a shrink factor ``alpha`` of the
min-max range (``[alpha * min, alpha * max]``, ``alpha`` log-spaced in ``[1e-3, 1]``),
vectorised over channels, followed by a golden-section refinement between the best grid
point's neighbours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .quantizers import Quantizer, fake_quantize, qparams_from_range

__all__ = ["minmax_range", "mse_range", "output_mse_range", "cross_entropy_range", "bn_range",
           "quant_error"]

_GOLDEN = 0.6180339887498949


def _per_channel_view(x: torch.Tensor, q: Quantizer) -> torch.Tensor:
    """``[C, -1]`` view for per-channel quantizers, ``[1, -1]`` otherwise."""
    x = x.detach().float()
    if q.per_channel:
        return x.transpose(0, q.ch_axis).reshape(x.shape[q.ch_axis], -1)
    return x.reshape(1, -1)


def minmax_range(x: torch.Tensor, q: Quantizer) -> tuple[torch.Tensor, torch.Tensor]:
    """``q_min = min V``, ``q_max = max V`` (eq. 14-15), per channel if ``q`` is."""
    v = _per_channel_view(x, q)
    lo, hi = v.min(1).values, v.max(1).values
    if not q.per_channel:
        lo, hi = lo[0], hi[0]
    return lo, hi


def _fq_rows(v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, q: Quantizer) -> torch.Tensor:
    """Fake-quantize each row of ``v`` ``[C, L]`` with its own range ``[lo[c], hi[c]]``."""
    s, z = qparams_from_range(lo, hi, q.bits, mode=q.mode, signed=q.signed,
                              power_of_two=q.power_of_two)
    n, p = q.grid
    return fake_quantize(v, s[:, None], z[:, None], n, p, ch_axis=0)


def quant_error(v: torch.Tensor, lo, hi, q: Quantizer) -> torch.Tensor:
    """Per-row squared error ``||V - V^(q_min, q_max)||^2`` (the objective of eq. 16)."""
    return (_fq_rows(v, lo, hi, q) - v).pow(2).sum(1)


def _search(loss_fn, lo0: torch.Tensor, hi0: torch.Tensor, n_grid: int, n_golden: int,
            alpha_min: float):
    """Minimise ``loss_fn(lo, hi) -> [C]`` over ``alpha`` in ``[alpha_min, 1]`` with
    ``(lo, hi) = alpha * (lo0, hi0)``: grid, then golden section in the bracketing cell."""
    alphas = torch.logspace(torch.log10(torch.tensor(alpha_min)), 0.0, n_grid)
    losses = torch.stack([loss_fn(a * lo0, a * hi0) for a in alphas])  # [G, C]
    best = losses.argmin(0)
    a = alphas[torch.clamp(best - 1, min=0)]
    b = alphas[torch.clamp(best + 1, max=n_grid - 1)]
    best_a, best_l = alphas[best].clone(), losses.gather(0, best[None])[0].clone()
    c = b - _GOLDEN * (b - a)
    d = a + _GOLDEN * (b - a)
    lc, ld = loss_fn(c * lo0, c * hi0), loss_fn(d * lo0, d * hi0)
    for _ in range(n_golden):
        left = lc < ld
        b = torch.where(left, d, b)
        a = torch.where(left, a, c)
        c_new = b - _GOLDEN * (b - a)
        d_new = a + _GOLDEN * (b - a)
        c, d = c_new, d_new
        lc, ld = loss_fn(c * lo0, c * hi0), loss_fn(d * lo0, d * hi0)
    for cand, lcand in ((c, lc), (d, ld)):
        better = lcand < best_l
        best_a = torch.where(better, cand, best_a)
        best_l = torch.where(better, lcand, best_l)
    return best_a * lo0, best_a * hi0


def mse_range(x: torch.Tensor, q: Quantizer, *, n_grid: int = 100, n_golden: int = 12,
              alpha_min: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """``argmin ||V - V^(q_min, q_max)||_F^2`` (eq. 16) over shrunk min-max ranges."""
    v = _per_channel_view(x, q)
    lo0, hi0 = v.min(1).values, v.max(1).values
    lo, hi = _search(lambda lo, hi: quant_error(v, lo, hi, q), lo0, hi0, n_grid, n_golden,
                     alpha_min)
    if not q.per_channel:
        lo, hi = lo[0], hi[0]
    return lo, hi


def output_mse_range(w: torch.Tensor, q: Quantizer, gram: torch.Tensor, *, n_grid: int = 100,
                     n_golden: int = 12, alpha_min: float = 1e-3
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight range minimising the layer's output error on calibration inputs,
    ``sum_x ||(W^(q_min, q_max) - W) x||^2 = sum_c dW_c G dW_c^T``, over shrunk min-max
    ranges (per channel if ``q`` is, else one range for the tensor: the error summed over
    the output channels).

    ``w`` is ``[C_out, ...]`` (``ch_axis`` 0); ``gram`` is ``G = X^T X`` of the layer's
    input rows ``X`` (im2col patches for a conv), ``[K, K]`` with ``K = w[0].numel()``,
    or ``[C_out, K, K]``, one per output channel (depthwise convs). Unlike eq. 16, a large
    weight that meets large inputs counts more than a small one, so the range clips less
    where clipping would hurt the output.
    """
    c_out = w.shape[0]
    v = _per_channel_view(w, q)
    k = w[0].numel()
    gram = gram.detach().to(torch.float64)
    if tuple(gram.shape) not in ((k, k), (c_out, k, k)):
        raise ValueError(f"gram must be [{k}, {k}] or [{c_out}, {k}, {k}] for weights of "
                         f"shape {tuple(w.shape)}; got {tuple(gram.shape)}")

    def loss(lo, hi):
        d = (_fq_rows(v, lo, hi, q) - v).reshape(c_out, k).to(torch.float64)
        if gram.dim() == 2:
            err = ((d @ gram) * d).sum(1)
        else:
            err = torch.einsum("ck,ckl,cl->c", d, gram, d)
        return err if q.per_channel else err.sum().reshape(1)

    lo, hi = _search(loss, v.min(1).values, v.max(1).values, n_grid, n_golden, alpha_min)
    if not q.per_channel:
        lo, hi = lo[0], hi[0]
    return lo, hi


def cross_entropy_range(logits: torch.Tensor, q: Quantizer, *, n_grid: int = 100,
                        n_golden: int = 12, alpha_min: float = 1e-3
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``argmin H(softmax(v), softmax(v^(q_min, q_max)))`` (eq. 17) over shrunk ranges;
    ``logits`` is ``[B, classes]`` (per-tensor quantizer)."""
    if q.per_channel:
        raise ValueError("cross-entropy range setting is for per-tensor logit quantizers")
    v = logits.detach().float().reshape(-1, logits.shape[-1])
    p_ref = F.softmax(v, dim=-1)
    lo0, hi0 = v.min().reshape(1), v.max().reshape(1)

    def loss(lo, hi):
        vq = _fq_rows(v.reshape(1, -1), lo, hi, q).reshape(v.shape)
        return -(p_ref * F.log_softmax(vq, dim=-1)).sum(-1).mean().reshape(1)

    lo, hi = _search(loss, lo0, hi0, n_grid, n_golden, alpha_min)
    return lo[0], hi[0]


def bn_range(beta: torch.Tensor, gamma: torch.Tensor, alpha: float = 6.0, *,
             relu: bool = False, relu6: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``q_min = min(beta - alpha gamma)``, ``q_max = max(beta + alpha gamma)`` (eq. 18-19);
    clipped to the output of a following ReLU / ReLU6."""
    gamma = gamma.detach().abs().float()
    beta = beta.detach().float()
    lo = (beta - alpha * gamma).min()
    hi = (beta + alpha * gamma).max()
    if relu or relu6:
        lo = torch.clamp(lo, min=0.0)
        hi = torch.clamp(hi, min=0.0)
    if relu6:
        lo, hi = torch.clamp(lo, max=6.0), torch.clamp(hi, max=6.0)
    return lo, hi
