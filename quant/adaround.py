"""AdaRound: adaptive rounding of weights (Nagel et al. 2020; whitepaper sec. 3.4, eq. 32-35).

The rounding parameterisation, the schedule and the loop live in ``quant.reconstruction``
(shared with BRECQ, QDrop and NWQ); this module is AdaRound's layer-wise use of them.

For a fixed quantization grid (scale ``s``, integer limits ``n, p``) AdaRound learns, per
weight, whether to round down or up by minimising the layer's output reconstruction

    || f_a(W x) - f_a(W~ x^) ||_F^2 + lambda * sum_ij (1 - |2 h(V_ij) - 1|^beta)   (35)

with the soft-quantized weights ``W~ = s * clamp(floor(W / s) + h(V), n, p)`` (33) and the
rectified sigmoid ``h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)``, zeta = 1.1,
gamma = -0.1. ``x^`` is the layer's input with all *preceding layers already quantized*,
``W x`` the full-precision output on full-precision inputs. ``V`` is initialised so that
``h(V)`` equals the fractional part of ``W / s`` (so the start is the FP weight), the
regulariser (34) is off during the first ``warm_start`` fraction of the iterations and its
``beta`` is then annealed from 20 to 2 (cosine or linear), Adam on ``V``, and at the end
the rounding is made hard: ``W_int = clamp(floor(W / s) + [V >= 0], n, p)``.

API for the PTQ pipeline (``quant.quantize`` with ``rounding="adaround"``)
--------------------------------------------------------------------------
Quantize layers in network order. For each ``nn.Linear`` / ``nn.Conv2d`` (after BN folding
/ CLE, with its weight scale already chosen by range setting), collect on the calibration
set

- ``inputs_q``: the layer's input when every preceding layer (weights *and* activations)
  is already quantized -- i.e. run the partially quantized model and hook the layer input;
- ``target_fp``: the layer's output in the FP32 model on FP32 inputs, *after* its fused
  activation if you pass ``act_fn`` (eq. 35; e.g. ``torch.relu`` for Conv-BN-ReLU).

then call::

    w_int = adaround_layer(layer, weight_scale, inputs_q, target_fp, w_bits=4,
                           iterations=10000, act_fn=torch.relu, seed=0)
    layer.weight.data = w_int * scale_broadcast   # or keep w_int for export

``weight_scale`` is a scalar / 0-d tensor (per-tensor) or a ``(C_out,)`` tensor
(per-channel). The integer grid defaults to the SPEC's signed range
``[-2^(w_bits-1), 2^(w_bits-1)-1]``; pass ``qmin``/``qmax`` to override (e.g. narrow
range). The bias stays in floating point during the optimisation (it is quantized later
with the accumulator scale). The returned tensor is ``torch.int32`` with ``layer.weight``'s
shape. :func:`beta_schedule` is exposed for tests (golden value: cosine beta at iteration
8000 of 10000 with warm start 0.2 is 4.636038969321072).

:func:`collect_io` is a small helper to gather ``(inputs, outputs)`` of a submodule over
calibration batches with a forward hook, and :func:`reconstruction_error` measures
``mean ||f_a(W_q x) - target||^2`` for a given integer weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .reconstruction import (
    GAMMA,
    ZETA,
    SoftRounding,
    beta_schedule,
    init_v,
    optimize_rounding,
    recon_loss,
    rectified_sigmoid,
    round_regularizer,
)

__all__ = [
    "ZETA", "GAMMA", "rectified_sigmoid", "init_v", "beta_schedule", "round_regularizer",
    "adaround_layer", "collect_io", "reconstruction_error", "nearest_int_weight",
]


def _scale_view(weight: torch.Tensor, weight_scale) -> torch.Tensor:
    s = torch.as_tensor(weight_scale, dtype=weight.dtype).detach()
    if s.numel() == 1:
        s = s.reshape(())
    elif s.numel() == weight.shape[0]:
        s = s.reshape((-1,) + (1,) * (weight.dim() - 1))
    else:
        raise ValueError(f"weight_scale: expected a scalar or {weight.shape[0]} per-channel "
                         f"scales, got shape {tuple(s.shape)}")
    if not torch.all(s > 0):
        raise ValueError("weight_scale: scales must be > 0")
    return s


def _grid(w_bits: int, qmin: int | None, qmax: int | None) -> tuple[int, int]:
    if not 2 <= int(w_bits) <= 16:
        raise ValueError(f"w_bits: must be in [2, 16], got {w_bits}")
    n = -(2 ** (w_bits - 1)) if qmin is None else int(qmin)
    p = 2 ** (w_bits - 1) - 1 if qmax is None else int(qmax)
    if n >= p:
        raise ValueError(f"qmin/qmax: need qmin < qmax, got {n}, {p}")
    return n, p


def _forward(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, layer.bias)
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise ValueError("layer: only zero-padded Conv2d is supported")
        return F.conv2d(x, weight, layer.bias, layer.stride, layer.padding, layer.dilation,
                        layer.groups)
    if isinstance(layer, nn.Conv1d):
        return F.conv1d(x, weight, layer.bias, layer.stride, layer.padding, layer.dilation,
                        layer.groups)
    raise TypeError(f"layer: AdaRound supports nn.Linear / nn.Conv1d / nn.Conv2d, "
                    f"got {type(layer).__name__}")


_recon = recon_loss     # the engine's one loss


def nearest_int_weight(weight: torch.Tensor, weight_scale, w_bits: int, *,
                       qmin: int | None = None, qmax: int | None = None) -> torch.Tensor:
    """Round-to-nearest integers (ties to even, SPEC) on the same grid, for comparison."""
    n, p = _grid(w_bits, qmin, qmax)
    s = _scale_view(weight, weight_scale)
    return torch.clamp(torch.round(weight.detach() / s), n, p).to(torch.int32)


def adaround_layer(layer: nn.Module, weight_scale, inputs_q: torch.Tensor,
                   target_fp: torch.Tensor, *, w_bits: int, iterations: int = 10000,
                   lam: float = 0.01, beta: tuple[float, float] = (20.0, 2.0),
                   warm_start: float = 0.2, schedule: str = "cosine", lr: float = 1e-3,
                   batch_size: int = 32, act_fn: Callable[[torch.Tensor], torch.Tensor]
                   | None = None, qmin: int | None = None, qmax: int | None = None,
                   seed: int = 0, progress: bool = True) -> torch.Tensor:
    """Learn the rounding of ``layer.weight`` on the grid ``weight_scale`` (eq. 35).

    Parameters
    ----------
    layer: ``nn.Linear``, ``nn.Conv1d`` or ``nn.Conv2d`` (any groups); not modified.
    weight_scale: scalar (per-tensor) or ``(C_out,)`` (per-channel) positive scales.
    inputs_q: ``(N, ...)`` inputs to the layer from the already-quantized preceding layers.
    target_fp: ``(N, ...)`` FP32 output of the layer on FP32 inputs, already passed through
        ``act_fn`` if one is given (eq. 35: ``f_a(W x)``).
    w_bits, qmin, qmax: integer grid; default ``[-2^(w_bits-1), 2^(w_bits-1)-1]``.
    iterations, lr, batch_size: Adam steps on ``V``, each on a random mini-batch of
        ``batch_size`` rows of ``inputs_q`` / ``target_fp``.
    lam, beta, warm_start, schedule: regulariser weight, (start, end) beta, fraction of
        iterations without regulariser, and annealing ``"cosine"`` | ``"linear"``.
    act_fn: activation applied to the soft-quantized output (``None`` = identity).
    seed: seeds the mini-batch sampling (the result is deterministic for a given seed).
    progress: show a tqdm bar.

    Returns the hard-rounded integer weights (``torch.int32``, shape of ``layer.weight``).
    """
    if schedule not in ("cosine", "linear"):
        raise ValueError(f"schedule: must be 'cosine' or 'linear', got {schedule!r}")
    if not 0.0 <= warm_start < 1.0:
        raise ValueError(f"warm_start: must be in [0, 1), got {warm_start}")
    if iterations < 0:
        raise ValueError(f"iterations: must be >= 0, got {iterations}")
    n, p = _grid(w_bits, qmin, qmax)
    w = layer.weight.detach()
    s = _scale_view(w, weight_scale)
    x_all = inputs_q.detach().to(w.dtype)
    y_all = target_fp.detach().to(w.dtype)
    if x_all.shape[0] != y_all.shape[0]:
        raise ValueError(f"inputs_q/target_fp: batch sizes differ ({x_all.shape[0]} vs "
                         f"{y_all.shape[0]})")

    rounding = SoftRounding(w, s, n, p)
    act = act_fn if act_fn is not None else (lambda t: t)

    def loss_fn(idx, _it):
        return _recon(act(_forward(layer, x_all[idx], rounding.soft_weight())), y_all[idx])

    optimize_rounding(loss_fn, [rounding], iterations, x_all.shape[0], batch_size=batch_size,
                      seed=seed, lr=lr, lam=lam, beta=beta, warm_start=warm_start,
                      schedule=schedule, desc=f"AdaRound {type(layer).__name__}"
                      f"{tuple(w.shape)}", progress=progress)
    w_int = rounding.hard_int()
    return w_int.to(torch.int32)


@torch.no_grad()
def reconstruction_error(layer: nn.Module, w_int: torch.Tensor, weight_scale,
                         inputs: torch.Tensor, target: torch.Tensor, *,
                         act_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                         ) -> float:
    """``mean ||f_a(layer(x) with weight w_int * s) - target||^2`` (the objective of eq. 35
    without the regulariser), summed over channels, averaged over rows / positions."""
    w = layer.weight.detach()
    s = _scale_view(w, weight_scale)
    out = _forward(layer, inputs, w_int.to(w.dtype) * s)
    if act_fn is not None:
        out = act_fn(out)
    return float(_recon(out, target))


@torch.no_grad()
def collect_io(model: nn.Module, module: nn.Module, batches: Iterable,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` over ``batches`` (tensors) and return the concatenated
    ``(inputs, outputs)`` of ``module`` (a submodule of ``model``)."""
    xs, ys = [], []

    def hook(_m, inp, out):
        xs.append(inp[0].detach())
        ys.append(out.detach())

    h = module.register_forward_hook(hook)
    try:
        for b in batches:
            model(b)
    finally:
        h.remove()
    return torch.cat(xs), torch.cat(ys)
