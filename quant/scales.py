"""Scales that tie quantizers together in a quantized graph: each layer's bias grid
``s_w s_x`` (linked to the quantizer its input is on) and the snapping of requantization
scales to ``M / 2^S`` (so the fake-quant model computes the integer network's arithmetic).
"""

from __future__ import annotations

import torch
from torch import fx, nn

from .graph import is_passthrough, module_of
from .modules import QuantAdd, QuantAvgPool, QuantLayer, quant_layers
from .quantizers import Quantizer

__all__ = ["source_quantizer", "link_input_scales", "snap_scales", "refresh_scales"]


def _producer_quantizer(gm: fx.GraphModule, node: fx.Node) -> Quantizer | None:
    m = module_of(gm, node)
    if isinstance(m, Quantizer):
        return m
    q = getattr(m, "output_quantizer", None)
    return q if isinstance(q, Quantizer) else None


def source_quantizer(gm: fx.GraphModule, arg) -> Quantizer | None:
    """The activation quantizer whose grid ``arg`` is on (through grid-preserving ops)."""
    cur = arg
    while isinstance(cur, fx.Node) and _producer_quantizer(gm, cur) is None \
            and is_passthrough(gm, cur) and cur.args:
        cur = cur.args[0]
    return _producer_quantizer(gm, cur) if isinstance(cur, fx.Node) else None


def link_input_scales(gm: fx.GraphModule) -> None:
    """Set ``in_scale`` of every QuantLayer from the quantizer producing its input."""
    for node in gm.graph.nodes:
        ql = module_of(gm, node)
        if not isinstance(ql, QuantLayer):
            continue
        src_q = ql.input_quantizer if ql.input_quantizer is not None \
            else source_quantizer(gm, node.args[0])
        if src_q is not None and src_q.scale is not None and src_q.scale.dim() == 0:
            ql.in_scale = src_q.scale.clone()
            ql.quantize_bias = True


def refresh_scales(qmodel: nn.Module) -> None:
    """Call after changing activation quantizer ranges of a quantized model by hand: re-links
    each layer's bias grid ``s_w s_x`` to its input scale and (graph mode, ``snap_scales``)
    re-snaps the requantization scales to ``M / 2^S``."""
    info = getattr(qmodel, "qaccel_quant", None)
    if info is None:
        raise ValueError("refresh_scales needs a model returned by quant.quantize")
    if info.mode == "graph":
        link_input_scales(qmodel)
        if info.config.snap_scales:
            snap_scales(qmodel, info.config.mult_bits)
    else:
        for _, ql in quant_layers(qmodel):
            q = ql.input_quantizer
            if q is not None and q.scale is not None:
                ql.in_scale = q.scale.clone()
                ql.quantize_bias = True


def _snapped(real: torch.Tensor, mult_bits: int) -> torch.Tensor:
    """``M / 2^S`` (float64) for the real scale(s), as ``sim.arith.quantize_multiplier``."""
    from qaccel.sim.arith import quantize_multiplier

    m, s = quantize_multiplier(real.detach().double().reshape(-1).numpy(), mult_bits)
    return torch.from_numpy(m / 2.0 ** s).reshape(real.shape)


@torch.no_grad()
def snap_scales(gm: fx.GraphModule, mult_bits: int) -> None:
    """Make every requantization scale exactly representable as ``M / 2^S``.

    Weight scales ``s_w`` (per tensor or channel) are nudged (relative change below
    ``2^-mult_bits``) so that ``s_w s_x / s_y = M / 2^S``; an average pool's output scale
    so that ``s_x / (n s_y) = M / 2^S``; an add's output scale so that its first input's
    ratio is exact. The fake-quant model then computes the integer network's arithmetic,
    and the remaining integer differences come only from float32 evaluation and the
    second input of adds.
    """
    for node in gm.graph.nodes:
        m = module_of(gm, node)
        if isinstance(m, QuantAvgPool | QuantAdd):
            src = source_quantizer(gm, node.args[0])
            out = m.output_quantizer
            if src is None or out.scale is None or src.scale is None:
                continue
            if isinstance(m, QuantAvgPool):
                if m.kind != "global":
                    k = m.kernel if isinstance(m.kernel, tuple) else (m.kernel, m.kernel)
                    n = k[0] * k[1]
                elif m.window is not None:
                    n = m.window        # H * W seen during calibration
                else:
                    continue
            else:
                n = 1
            real = src.scale.double() / (n * out.scale.double())
            new = src.scale.double() / (n * _snapped(real, mult_bits))
            out.set_qparams(new.float(), out.zero_point)
    link_input_scales(gm)
    for node in gm.graph.nodes:
        ql = module_of(gm, node)
        if not isinstance(ql, QuantLayer) or ql.output_quantizer is None \
                or ql.in_scale is None or ql.output_quantizer.scale is None:
            continue
        wq = ql.weight_quantizer
        if wq.power_of_two:
            continue                    # keep 2^k weight scales (sec. 2.2.2)
        s_x, s_y = ql.in_scale.double(), ql.output_quantizer.scale.double()
        real = wq.scale.double() * s_x / s_y
        wq.set_qparams((_snapped(real, mult_bits) * s_y / s_x).float(), wq.zero_point)
