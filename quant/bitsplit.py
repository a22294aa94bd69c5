"""Bit-split and Stitching (Wang, Chen, He, Cheng, ICML 2020), vectorised over channels.

Per output channel ``c`` (a conv weight is viewed as ``(C_out, C_in*k*k)``) the b-bit
weights are ``alpha_c * q_c`` with ``q_c`` integer in ``[-(2^(b-1)-1), 2^(b-1)-1]``. The
method minimises the *output* reconstruction on calibration data

    || y_c - alpha_c * X q_c ||^2,      q_c = sum_{m=1}^{b-1} 2^(m-1) q_c^(m),
                                        q_c^(m) in {-1, 0, +1}^K                       (1)

where the rows of ``X`` (P x K) are the layer's input patches (im2col rows) from the
full-precision network and ``y_c`` the full-precision output minus bias. Steps, following
the authors' reference implementation (see ``/work/shared/papers/README.md``):

1. Init (:func:`init_alpha_q`): ``alpha = max|w| / (2^(b-1)-1)``, then alternate
   ``q = clip(round(w / alpha), +-(2^(b-1)-1))`` and ``alpha = <w, q> / <q, q>`` until alpha
   stops changing (1e-9).
2. Split (:func:`split_planes`) ``q`` into ``b-1`` ternary planes
   ``q^(m) = sign(q) * bit_{m-1}(|q|)``.
3. Refine for ``epochs`` epochs (about 100), using only the Gram matrix ``A = X^T X``
   (K x K) and ``B = X^T Y`` (K x C): per epoch, the closed-form per-channel scale
   ``alpha = q^T b / (q^T A q)`` (= ``y^T X^T q / (q^T X^T X q)``), then for each plane m in
   turn, with the other planes fixed, the residual target ``b_m = b - alpha A r_m``
   (``r_m`` the stitched other planes) and the plane's scale ``alpha_m = alpha 2^(m-1)``,
   coordinate descent over the input dimension n: the gradient term
   ``g_n = 2 (alpha_m sum_{j != n} A[n, j] q_j - b_m[n])`` makes the entry
   ``-sign(g_n)``, or 0 when ``|g_n| <= alpha_m A[n, n]`` -- the exact minimiser of (1)
   in that entry. Every step is a vector operation over all output channels at once.
4. Stitch (:func:`stitch_planes`) the planes back into integers.

Depthwise convolutions (``groups == C_in == C_out``) have a different input per channel:
they use a per-channel ``k*k`` Gram matrix ``A_c = X_c^T X_c``. Alpha is guarded against
division by zero (an all-zero ``q`` keeps its previous alpha).

API for the PTQ pipeline (``quant.quantize`` with ``rounding="bitsplit"``)
--------------------------------------------------------------------------
``quant.rounding`` calls, per layer in network order::

    q_int, alpha = bitsplit_layer(ql.module, ql.weight_scale(), inputs, target,
                                  w_bits=cfg.w_bits, iterations=cfg.iterations,
                                  act_fn=..., seed=cfg.seed)
    ql.set_integer_weight(q_int, alpha)

Note for the pipeline owner: the paper (README facts) takes ``inputs`` from the *FP*
network -- collect them with weights and activations off (``quant_state(model,
weights=False, acts=False)``); ``Y`` is computed here from the FP weights on those inputs.
``weight_scale`` only selects per-channel (``(C_out,)``) vs one shared alpha (scalar);
``iterations`` caps the epochs at ``min(iterations, 100)``. ``q_int`` is int32 in
``[-(2^(b-1)-1), 2^(b-1)-1]`` (inside the SPEC's signed range), ``alpha`` the new
``s_w`` (``(C_out,)`` float32; equal entries when per tensor).

``bitsplit_module(layer, inputs_fp, bits, epochs=100, per_channel=True)`` is the same on a
plain layer. For activations, :func:`bitsplit_act_scale(samples, a_bits)` returns the
per-tensor unsigned scale (zero-point 0) by the same alternating least squares on the
positive samples (range ``[0, alpha * (2^a - 1)]``).

The lower-level ``bitsplit_layer(weight, X, Y, bits)`` takes the patches directly:
``X`` is ``(P, K)`` shared by all channels or ``(C, P, K)`` per channel (depthwise), and
``Y`` is ``(P, C)``; :func:`bitsplit_gram` takes the Gram statistics.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "init_alpha_q", "split_planes", "stitch_planes", "bitsplit_layer", "bitsplit_gram",
    "layer_patches", "bitsplit_module", "bitsplit_act_scale", "max_scale_quantize",
    "output_error",
]

_EPS = 1e-12


def _qmax(bits: int) -> int:
    if not 2 <= int(bits) <= 16:
        raise ValueError(f"bits: must be in [2, 16], got {bits}")
    return 2 ** (bits - 1) - 1


def init_alpha_q(w2d: torch.Tensor, bits: int, *, per_channel: bool = True,
                 tol: float = 1e-9, max_iter: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (channel) alternating least squares on the weights themselves.

    ``w2d`` is ``(C, K)``. Returns ``(q, alpha)``: float64 integer-valued ``(C, K)`` and
    ``(C,)``. Starts from max scaling and alternates rounding / closed-form alpha until the
    largest change in alpha is below ``tol``. ``per_channel=False`` shares one alpha over
    the whole tensor (returned repeated ``C`` times).
    """
    if not per_channel:
        C = w2d.shape[0]
        q, alpha = init_alpha_q(w2d.reshape(1, -1), bits, tol=tol, max_iter=max_iter)
        return q.reshape(C, -1), alpha.expand(C).clone()
    qm = _qmax(bits)
    w = w2d.detach().to(torch.float64)
    alpha = w.abs().amax(dim=1) / qm
    alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    q = torch.clamp(torch.round(w / alpha[:, None]), -qm, qm)
    for _ in range(max_iter):
        qq = (q * q).sum(1)
        new = torch.where(qq > 0, (w * q).sum(1) / qq.clamp_min(_EPS), alpha)
        q = torch.clamp(torch.round(w / new[:, None]), -qm, qm)
        done = (new - alpha).abs().max().item() < tol
        alpha = new
        if done:
            break
    return q, alpha


def split_planes(q: torch.Tensor, bits: int) -> torch.Tensor:
    """``(b-1, *q.shape)`` ternary planes: plane m is ``sign(q) * bit_m(|q|)`` (m = 0..b-2)."""
    qm = _qmax(bits)
    qi = q.to(torch.int64)
    if qi.abs().max() > qm:
        raise ValueError(f"q: values outside +-{qm}")
    mag, sgn = qi.abs(), torch.sign(qi)
    return torch.stack([(sgn * ((mag >> m) & 1)) for m in range(bits - 1)]).to(q.dtype)


def stitch_planes(planes: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_planes`: ``sum_m 2^m planes[m]``."""
    w = (2.0 ** torch.arange(planes.shape[0], dtype=planes.dtype)).view(
        (-1,) + (1,) * (planes.dim() - 1))
    return (planes * w).sum(0)


def _matvec(A: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """``A q_c`` for every channel; Q is (K, C). A is (K, K) shared or (C, K, K)."""
    if A.ndim == 2:
        return A @ Q
    return np.einsum("ckj,jc->kc", A, Q)


def _refine_plane(A, cols, diag_kc, plane, U, Bm, am):
    """Coordinate descent over the input dimension for one ternary plane (all channels).

    ``plane`` (K, C) and ``U = A @ plane`` (per channel) are updated in place; ``U`` by
    rank-1 updates restricted to the channels whose entry changed.
    """
    shared = A.ndim == 2
    for n in range(plane.shape[0]):
        pn = plane[n]
        dn = diag_kc[n]
        g = 2.0 * (am * (U[n] - dn * pn) - Bm[n])
        new = np.where(np.abs(g) > am * dn, -np.sign(g), 0.0)
        d = new - pn
        nz = np.flatnonzero(d)
        if nz.size:
            plane[n] = new
            if shared:
                U[:, nz] += np.outer(A[:, n], d[nz])
            else:
                U[:, nz] += cols[n][:, nz] * d[nz]


def bitsplit_gram(A: torch.Tensor, B: torch.Tensor, w2d: torch.Tensor, bits: int, *,
                  epochs: int = 100, per_channel: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bit-split refinement given the Gram statistics.

    ``A``: ``X^T X``, ``(K, K)`` or per-channel ``(C, K, K)``; ``B``: ``X^T Y``, ``(K, C)``;
    ``w2d``: ``(C, K)`` FP weights (for the initialisation). Returns ``(q, alpha)`` with
    ``q`` a ``(C, K)`` int32 tensor in ``[-(2^(b-1)-1), 2^(b-1)-1]`` and ``alpha`` ``(C,)``
    float64. ``A @ plane`` is kept for every plane and updated incrementally, so an epoch
    costs O(K * C) vector work plus O(K) per changed entry, with no K x K x C products.
    ``per_channel=False`` (per-tensor hardware) shares one alpha over all channels: its
    closed form sums numerator and denominator over channels.
    """
    qm = _qmax(bits)
    q0, alpha = init_alpha_q(w2d, bits, per_channel=per_channel)
    A = np.ascontiguousarray(torch.as_tensor(A).detach().to(torch.float64).numpy())
    B = np.ascontiguousarray(torch.as_tensor(B).detach().to(torch.float64).numpy())
    alpha = alpha.numpy().copy()
    planes = split_planes(q0.T.contiguous(), bits).numpy().copy()  # (b-1, K, C)
    diag = np.diagonal(A, axis1=-2, axis2=-1)  # (K,) or (C, K)
    diag_kc = diag if A.ndim == 2 else np.ascontiguousarray(diag.T)  # (K,) or (K, C)
    cols = None if A.ndim == 2 else np.ascontiguousarray(A.transpose(2, 1, 0))  # [n]: (K, C)
    weights = np.asarray([2.0 ** m for m in range(bits - 1)])
    U = np.stack([_matvec(A, planes[m]) for m in range(bits - 1)])  # A @ plane_m

    def stitched(arr):
        return (arr * weights[:, None, None]).sum(0)

    def closed_form_alpha(alpha):
        Q, AQ = stitched(planes), stitched(U)
        den, num = (Q * AQ).sum(0), (Q * B).sum(0)
        if not per_channel:
            den, num = np.full_like(den, den.sum()), np.full_like(num, num.sum())
        return np.where(den > _EPS, num / np.maximum(den, _EPS), alpha)

    for _ in range(epochs):
        alpha = closed_form_alpha(alpha)
        for m in range(bits - 1):
            AR = stitched(U) - weights[m] * U[m]  # A @ (other planes, stitched)
            Bm = B - alpha[None, :] * AR  # X^T (y - alpha X r)
            _refine_plane(A, cols, diag_kc, planes[m], U[m], Bm, alpha * weights[m])
    alpha = closed_form_alpha(alpha)
    Q = stitched(planes)
    q = torch.from_numpy(np.clip(np.rint(Q.T), -qm, qm).astype(np.int32)).contiguous()
    return q, torch.from_numpy(alpha)


def bitsplit_layer(weight, X, Y, bits: int | None = None, *, epochs: int = 100,
                   per_channel: bool = True, w_bits: int | None = None,
                   iterations: int | None = None, act_fn=None, seed: int = 0,
                   max_rows: int = 10000) -> tuple[torch.Tensor, torch.Tensor]:
    """Bit-split for one layer. Two call forms:

    **Patches** -- ``bitsplit_layer(weight, X, Y, bits, epochs=100, per_channel=True)``:
    ``weight`` ``(C, ...)`` (viewed as ``(C, K)``); ``X`` ``(P, K)`` input patches shared by
    all channels, or ``(C, P, K)`` per channel (depthwise); ``Y`` ``(P, C)`` the FP output
    minus bias.

    **Pipeline** -- ``bitsplit_layer(module, weight_scale, inputs, target, w_bits=b,
    iterations=n, act_fn=..., seed=s)`` as ``quant.rounding`` calls it: ``module`` is the
    ``nn.Linear`` / ``nn.Conv2d`` (BN folded), ``inputs`` its calibration inputs. Per the
    paper ``X`` should come from the *FP* network; ``Y`` is always computed here as the
    layer's FP weights applied to the given ``inputs`` (FP output minus bias, pre-activation;
    ``target`` and ``act_fn`` are accepted for signature compatibility and not used: Bit-split
    reconstructs the linear output). ``weight_scale`` only selects the granularity: a
    ``(C_out,)`` tensor -> per-channel alpha, a scalar -> one shared alpha (per tensor); the
    scale itself is replaced by Bit-split's. ``iterations`` caps the number of epochs
    (``min(iterations, epochs)``, so the AdaRound-sized default of 10000 means the paper's
    100 epochs). Rows are subsampled to ``max_rows`` with ``seed``.

    Returns ``(q_int, alpha)``: int32 with ``weight``'s shape, values in
    ``[-(2^(b-1)-1), 2^(b-1)-1]``, and the ``(C_out,)`` float32 scales (all equal when per
    tensor).
    """
    if isinstance(weight, nn.Module):
        module, weight_scale, inputs = weight, X, Y
        b = w_bits if w_bits is not None else bits
        if b is None:
            raise ValueError("w_bits: required")
        n_ep = epochs if iterations is None else max(0, min(int(iterations), epochs))
        pc = torch.as_tensor(weight_scale).numel() > 1 if weight_scale is not None else True
        return bitsplit_module(module, inputs, b, epochs=n_ep, max_rows=max_rows, seed=seed,
                               per_channel=pc)
    if bits is None:
        bits = w_bits
    if bits is None:
        raise ValueError("bits: required")
    C = weight.shape[0]
    w2d = weight.detach().reshape(C, -1)
    X = X.detach().to(torch.float64)
    Y = Y.detach().to(torch.float64)
    if X.dim() == 2:
        A = X.T @ X
        B = X.T @ Y
    elif X.dim() == 3 and X.shape[0] == C:
        A = X.transpose(1, 2) @ X  # (C, K, K)
        B = torch.einsum("cpk,pc->kc", X, Y)
    else:
        raise ValueError(f"X: expected (P, K) or (C, P, K), got {tuple(X.shape)}")
    if A.shape[-1] != w2d.shape[1] or Y.shape[1] != C:
        raise ValueError(f"X/Y: shapes {tuple(X.shape)}, {tuple(Y.shape)} do not match "
                         f"weight {tuple(weight.shape)}")
    q, alpha = bitsplit_gram(A, B, w2d, bits, epochs=epochs, per_channel=per_channel)
    return q.reshape(weight.shape), alpha.to(torch.float32)


def _is_depthwise(layer: nn.Module) -> bool:
    return (isinstance(layer, nn.Conv2d) and layer.groups > 1
            and layer.groups == layer.in_channels and layer.weight.shape[1] == 1)


def layer_patches(layer: nn.Module, inputs: torch.Tensor, *, max_rows: int = 10000,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, Y)`` for :func:`bitsplit_layer` from FP inputs of ``layer``.

    Linear: rows of ``inputs``. Conv2d: im2col rows (zero padding, as the FP network does),
    subsampled to at most ``max_rows`` random rows. ``Y`` is the FP output minus bias, i.e.
    ``X @ W^T``. Depthwise convs give per-channel patches ``(C, P, k*k)``. Grouped
    (non-depthwise) convolutions are not supported.
    """
    w = layer.weight.detach()
    x = inputs.detach().to(w.dtype)
    gen = torch.Generator().manual_seed(seed)
    if isinstance(layer, nn.Linear):
        X = x.reshape(-1, x.shape[-1])
        if X.shape[0] > max_rows:
            X = X[torch.randperm(X.shape[0], generator=gen)[:max_rows]]
        return X, X @ w.T
    if not isinstance(layer, nn.Conv2d):
        raise TypeError(f"layer: Bit-split supports nn.Linear / nn.Conv2d, got "
                        f"{type(layer).__name__}")
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise ValueError("layer: only explicit zero padding is supported")
    cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding,
                    stride=layer.stride)  # (N, C_in*k*k, L)
    cols = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (N*L, C_in*k*k)
    if cols.shape[0] > max_rows:
        cols = cols[torch.randperm(cols.shape[0], generator=gen)[:max_rows]]
    C = w.shape[0]
    if layer.groups == 1:
        return cols, cols @ w.reshape(C, -1).T
    if _is_depthwise(layer) and layer.out_channels == layer.in_channels:
        kk = w[0].numel()
        Xc = cols.reshape(cols.shape[0], C, kk).transpose(0, 1).contiguous()  # (C, P, kk)
        Y = torch.einsum("cpk,ck->pc", Xc, w.reshape(C, kk))
        return Xc, Y
    raise ValueError(f"layer: grouped conv with groups={layer.groups} (not depthwise) is "
                     "not supported")


def bitsplit_module(layer: nn.Module, inputs_fp: torch.Tensor, bits: int, *,
                    epochs: int = 100, max_rows: int = 10000, seed: int = 0,
                    per_channel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Bit-split ``layer`` (Linear / Conv2d incl. depthwise) on its FP inputs.

    Returns ``(q_int, alpha)``: int32 weights of ``layer.weight``'s shape and ``(C_out,)``
    per-channel scales; ``layer`` is not modified.
    """
    X, Y = layer_patches(layer, inputs_fp, max_rows=max_rows, seed=seed)
    return bitsplit_layer(layer.weight, X, Y, bits, epochs=epochs, per_channel=per_channel)


def bitsplit_act_scale(samples: torch.Tensor, bits: int, *, tol: float = 1e-9,
                       max_iter: int = 1000) -> float:
    """Per-tensor unsigned activation scale (zero-point 0) for ``bits``-bit activations.

    Alternating least squares on the positive samples: start at ``max / (2^b - 1)``, then
    ``q = clip(round(x / alpha), 0, 2^b - 1)``, ``alpha = <x, q> / <q, q>`` until alpha changes
    by less than ``tol``. Non-positive samples are ignored (they quantize to 0). Returns 1.0
    if there is no positive sample.
    """
    if not 2 <= int(bits) <= 16:
        raise ValueError(f"bits: must be in [2, 16], got {bits}")
    x = samples.detach().reshape(-1).to(torch.float64)
    x = x[x > 0]
    if x.numel() == 0:
        return 1.0
    top = 2 ** bits - 1
    alpha = float(x.max()) / top
    for _ in range(max_iter):
        q = torch.clamp(torch.round(x / alpha), 0, top)
        qq = float((q * q).sum())
        if qq <= 0:
            break
        new = float((x * q).sum()) / qq
        done = abs(new - alpha) < tol
        alpha = new
        if done:
            break
    return alpha


def max_scale_quantize(weight: torch.Tensor, bits: int, *, per_channel: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """TF-Lite-style max scaling baseline: ``alpha = max|w| / (2^(b-1)-1)``,
    ``q = round(w / alpha)``; per tensor (as in TF-Lite / the paper's baseline) or per
    output channel. Returns ``(q_int, alpha)`` with ``alpha`` of shape ``(C_out,)``."""
    qm = _qmax(bits)
    w = weight.detach()
    C = w.shape[0]
    if per_channel:
        alpha = w.reshape(C, -1).abs().amax(1) / qm
    else:
        alpha = (w.abs().max() / qm).expand(C).clone()
    alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    q = torch.clamp(torch.round(w / alpha.view((-1,) + (1,) * (w.dim() - 1))), -qm, qm)
    return q.to(torch.int32), alpha


@torch.no_grad()
def output_error(X: torch.Tensor, Y: torch.Tensor, q: torch.Tensor, alpha: torch.Tensor
                 ) -> float:
    """Mean squared output reconstruction error ``mean (Y - alpha * X q)^2`` for patches
    from :func:`layer_patches`."""
    C = q.shape[0]
    Wq = q.reshape(C, -1).to(torch.float64) * alpha.to(torch.float64)[:, None]
    X = X.to(torch.float64)
    if X.dim() == 2:
        pred = X @ Wq.T
    else:
        pred = torch.einsum("cpk,ck->pc", X, Wq)
    return float((Y.to(torch.float64) - pred).pow(2).mean())
