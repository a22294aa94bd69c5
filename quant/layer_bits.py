"""Per-layer bit-widths: ``QuantConfig.layer_bits`` and ``first_last_8bit`` applied to the
quantizers of a model whose layers :func:`quant.quantize` has just wrapped."""

from __future__ import annotations

from torch import nn

from .config import QuantConfig
from .modules import QuantLayer, act_quantizers

__all__ = ["resolve_layer_bits", "apply_layer_bits"]


def resolve_layer_bits(cfg: QuantConfig, layers: list[str]) -> dict[str, tuple[int, int]]:
    """``{layer: (w_bits, a_bits)}`` for the quantizable ``layers`` (network order).

    ``ValueError`` naming every ``cfg.layer_bits`` entry that is not one of ``layers``.
    """
    unknown = [o.name for o in cfg.layer_bits if o.name not in layers]
    if unknown:
        raise ValueError(f"QuantConfig.layer_bits: unknown layer(s) "
                         f"{', '.join(map(repr, unknown))}; the model's quantizable layers "
                         f"are {', '.join(map(repr, layers))}")
    bits = {name: (cfg.w_bits, cfg.a_bits) for name in layers}
    if cfg.first_last_8bit and layers:
        for name in (layers[0], layers[-1]):
            bits[name] = (8, 8)
    for o in cfg.layer_bits:
        w, a = bits[o.name]
        bits[o.name] = (o.w_bits if o.w_bits is not None else w,
                        o.a_bits if o.a_bits is not None else a)
    return bits


def apply_layer_bits(model: nn.Module, cfg: QuantConfig, layers: list[str]
                     ) -> dict[str, tuple[int, int]]:
    """Set each layer's weight quantizer and the activation quantizers it owns (output,
    and its own input quantizer if any) to its bits; with ``first_last_8bit`` the network
    input quantizers too. Call before any range is set. Returns the resolved bits."""
    bits = resolve_layer_bits(cfg, layers)
    for name, (w, a) in bits.items():
        ql = model.get_submodule(name)
        if not isinstance(ql, QuantLayer):
            raise ValueError(f"layer {name!r} is not a QuantLayer")
        if ql.weight_quantizer.bits != w:
            ql.weight_quantizer.set_bits(w)
        for q in (ql.input_quantizer, ql.output_quantizer):
            if q is not None and q.bits != a:
                q.set_bits(a)
    if cfg.first_last_8bit:
        for name, q in act_quantizers(model):
            if name.startswith("input_quantizer_") and "." not in name:
                q.set_bits(8)
    return bits
