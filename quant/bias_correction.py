"""Bias correction (whitepaper sec. 3.3): the biased error ``E[dW x]`` of weight
quantization (eq. 25-26) is subtracted from the bias.

- empirical (eq. 27): ``dW E[x] = E[W^ x] - E[W x]`` measured layer by layer on
  calibration data, with the input ``x`` taken from the model whose preceding layers are
  already quantized and corrected;
- analytic (eq. 28): ``E[x]`` from the BN statistics of the producing layer, assuming a
  normal pre-activation ``N(beta, gamma^2)``: after ReLU
  ``E[x] = gamma phi(-beta/gamma) + beta (1 - Phi(-beta/gamma))``; without activation
  ``E[x] = beta``. ReLU6 is approximated by ReLU (the clip at 6 is ignored).
"""

from __future__ import annotations

import math

import torch
from torch import fx, nn

from .calib_data import collect
from .graph import LayerStats, avgpool_spec, is_quantizable, module_of
from .modules import QuantLayer, quant_layers, quant_state

__all__ = ["producers", "relu_mean", "expected_input", "empirical_bias_correction",
           "analytic_bias_correction"]


def _mean_preserving(gm: fx.GraphModule, node: fx.Node) -> bool:
    m = module_of(gm, node)
    if isinstance(m, nn.Flatten | nn.Dropout | nn.Identity):
        return True
    if avgpool_spec(gm, node) is not None:
        return True
    return node.op == "call_method" and node.target in ("flatten", "view", "reshape")


def producers(gm: fx.GraphModule, stats: dict[str, LayerStats]) -> dict[str, str | None]:
    """For each conv/linear target: the layer whose BN statistics describe its input
    (through mean-preserving ops only), or ``None``."""
    out = {}
    for node in gm.graph.nodes:
        if not is_quantizable(module_of(gm, node)):
            continue
        cur = node.args[0]
        while isinstance(cur, fx.Node) and _mean_preserving(gm, cur):
            cur = cur.args[0]
        src = cur.target if isinstance(cur, fx.Node) and is_quantizable(module_of(gm, cur)) \
            else None
        out[node.target] = src if src in stats else None
    return out


def relu_mean(beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``E[ReLU(x)]`` for ``x ~ N(beta, gamma^2)`` (eq. 28)."""
    gamma = gamma.abs().clamp_min(1e-12)
    t = -beta / gamma
    pdf = torch.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    cdf = 0.5 * (1.0 + torch.erf(t / math.sqrt(2.0)))
    return gamma * pdf + beta * (1.0 - cdf)


def expected_input(stats: LayerStats, act: str) -> torch.Tensor:
    if act in ("relu", "relu6"):
        return relu_mean(stats.beta, stats.gamma)
    return stats.beta.clone()


def _delta_w(ql: QuantLayer) -> torch.Tensor:
    return (ql.quantized_weight() - ql.module.weight).detach()


def _ensure_bias(ql: QuantLayer) -> nn.Parameter:
    m = ql.module
    if m.bias is None:
        m.bias = nn.Parameter(torch.zeros(m.weight.shape[0], dtype=m.weight.dtype))
    return m.bias


@torch.no_grad()
def empirical_bias_correction(model: nn.Module, batches: list) -> dict[str, torch.Tensor]:
    """Eq. 27, layer by layer in network order; returns the corrections."""
    done = {}
    for name, ql in quant_layers(model):
        with quant_state(model, weights=True, acts=False):
            x = collect(model, ql, batches, output=False)
            dw = _delta_w(ql)
        out = ql.linear_op(x, dw, None)                 # dW x = W^ x - W x
        if isinstance(ql.module, nn.Linear):
            corr = out.reshape(-1, out.shape[-1]).mean(0)
        else:
            corr = out.transpose(0, 1).reshape(out.shape[1], -1).mean(1)
        _ensure_bias(ql).sub_(corr)
        done[name] = corr
    return done


@torch.no_grad()
def analytic_bias_correction(model: fx.GraphModule, info) -> dict[str, torch.Tensor]:
    """Eq. 28 for layers whose input comes from a BN-folded layer; others are skipped and
    noted (``info.note``, :class:`quant.summary.QuantInfo`)."""
    done = {}
    for name, ql in quant_layers(model):
        src = info.producers.get(name)
        if src is None:
            info.note("analytic bias correction: %s skipped (input not described by BN "
                      "statistics)", name)
            continue
        ex = expected_input(info.stats[src], info.acts.get(src, "none"))
        with quant_state(model, weights=True, acts=False):
            dw = _delta_w(ql)
        m = ql.module
        if isinstance(m, nn.Linear):
            k = m.in_features
            if k % ex.numel():
                info.note("analytic bias correction: %s skipped (shape)", name)
                continue
            ex_full = ex.repeat_interleave(k // ex.numel())
            corr = dw @ ex_full
        else:
            if m.in_channels != ex.numel():
                info.note("analytic bias correction: %s skipped (channels)", name)
                continue
            spatial = dw.shape[2:]
            img = ex.reshape((1, -1) + (1,) * len(spatial)).expand((1, -1) + tuple(spatial))
            conv = {1: nn.functional.conv1d, 2: nn.functional.conv2d,
                    3: nn.functional.conv3d}[len(spatial)]
            corr = conv(img, dw, None, 1, 0, 1, m.groups).reshape(-1)
        _ensure_bias(ql).sub_(corr)
        done[name] = corr
    return done
