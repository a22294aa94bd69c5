"""Per-layer and per-quantizer bit-widths: ``QuantConfig.layer_bits``, ``first_last_8bit``
and ``quantizer_bits`` applied to the quantizers of a model whose layers and ops
:func:`quant.quantize` has just wrapped.

Precedence, least to most specific: ``w_bits`` / ``a_bits`` / ``per_channel`` of the
config, ``first_last_8bit``, ``layer_bits`` (a GEMM layer's weights and the activation
quantizers it owns), ``quantizer_bits`` (one quantizer, by its path in the quantized
model: any Linear/conv input, weight or output, the outputs feeding both operands of an
activation x activation matmul, residual adds, LayerNorm / softmax / GELU / SiLU outputs).
"""

from __future__ import annotations

import torch
from torch import fx, nn

from .config import QuantConfig
from .modules import QuantLayer, QuantLayerNorm, QuantMatmul, act_quantizers
from .quantizers import Quantizer
from .scales import source_quantizer

__all__ = ["resolve_layer_bits", "apply_layer_bits", "model_quantizers",
           "resolve_quantizer", "apply_quantizer_bits"]


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
    input quantizers too; then ``cfg.quantizer_bits`` (:func:`apply_quantizer_bits`).
    Call before any range is set. Returns the resolved layer bits."""
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
    apply_quantizer_bits(model, cfg)
    return bits


def model_quantizers(model: nn.Module) -> dict[str, Quantizer]:
    """Every quantizer of a quantized model by its path (weights, activations and the
    fixed softmax output grids), in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, Quantizer)}


def resolve_quantizer(model: nn.Module, name: str, field: str = "QuantConfig.quantizer_bits"
                      ) -> tuple[str, Quantizer]:
    """``(path, quantizer)`` named by ``name``: a quantizer path, ``<layer>.weight`` (the
    sensitivity report's name of a weight quantizer) or a module path (its output
    quantizer). ``ValueError`` naming ``field``, ``name`` and the model's quantizers."""
    qs = model_quantizers(model)
    for path in (name, f"{name}_quantizer" if name.endswith(".weight") else None,
                 f"{name}.output_quantizer"):
        if path in qs:
            return path, qs[path]
    raise ValueError(f"{field}: unknown quantizer {name!r}; the model's quantizers are "
                     f"{', '.join(map(repr, qs))}")


def _owner(model: nn.Module, path: str) -> nn.Module:
    parent = path.rpartition(".")[0]
    return model.get_submodule(parent) if parent else model


def apply_quantizer_bits(model: nn.Module, cfg: QuantConfig) -> dict[str, Quantizer]:
    """Apply ``cfg.quantizer_bits`` (before any range is set): each named quantizer gets
    its bits and, for Linear/conv weights, its per-channel choice. The fixed softmax output
    grid follows its bits (scale ``2^-bits``); LayerNorm's gamma is re-ranged. Returns
    ``{path: quantizer}`` of the overridden ones.

    Raises
    ------
    ValueError
        An unknown name, or ``per_channel=True`` for a quantizer other than a Linear/conv
        weight (naming ``QuantConfig.quantizer_bits`` and the entry).
    """
    done = {}
    for o in cfg.quantizer_bits:
        path, q = resolve_quantizer(model, o.name)
        owner = _owner(model, path)
        field = f"QuantConfig.quantizer_bits[{o.name!r}]"
        is_layer_weight = isinstance(owner, QuantLayer) and q is owner.weight_quantizer
        if o.per_channel is not None and o.per_channel != q.per_channel:
            if not is_layer_weight:
                raise ValueError(f"{field}.per_channel: only the weights of nn.Linear / "
                                 f"nn.Conv* layers can be per channel; {path} is a "
                                 f"{q.role} quantizer with one scale per tensor in the "
                                 "integer network")
            q.per_channel = o.per_channel
            q.scale = q.zero_point = None
        if o.bits is not None and o.bits != q.bits:
            q.set_bits(o.bits)
            if q.role == "fixed":                        # softmax: unsigned, 2^-bits
                q.set_qparams(torch.tensor(2.0 ** -o.bits), torch.tensor(0.0))
            elif isinstance(owner, QuantLayerNorm) and q is owner.weight_quantizer:
                g = owner.gamma().detach()
                q.set_range(g.min(), g.max())
        done[path] = q
    if isinstance(model, fx.GraphModule):
        _check_matmul_products(model, cfg)
    return done


def _check_matmul_products(gm: fx.GraphModule, cfg: QuantConfig) -> None:
    """One product of an activation x activation matmul must fit the accumulator, or the
    integer network wraps (e.g. both operands of QK^T at 16 bits): ``|a - z_a| |b - z_b| <
    2^(a + b + 1 - signed_a - signed_b - 1)``, so ``a + b + 1 - signed_a - signed_b <=
    acc_bits`` (the rule ``w_bits + a_bits <= acc_bits`` of the weight GEMMs, with both
    operands possibly unsigned)."""
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target),
                                                      QuantMatmul):
            continue
        qs = [source_quantizer(gm, a) for a in node.args[:2]]
        if any(q is None for q in qs):
            continue
        need = qs[0].bits + qs[1].bits + 1 - int(qs[0].signed) - int(qs[1].signed)
        if need > cfg.acc_bits:
            raise ValueError(f"QuantConfig.acc_bits must be >= {need} for {node.target}, "
                             f"which multiplies {qs[0].bits}-bit by {qs[1].bits}-bit "
                             f"activations (a_bits / layer_bits / quantizer_bits), not "
                             f"{cfg.acc_bits}; raise it (acc_bits + mult_bits <= 62) or keep "
                             "one operand narrower")
