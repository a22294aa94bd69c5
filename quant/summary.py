"""What :func:`quant.quantize` did: :class:`QuantInfo` (attached to the quantized model as
``qaccel_quant``), the fallback rule, and :class:`QuantSummary`, the exact list of the
layers and ops that are quantized and of those that stay float.

Fallbacks are never silent: :meth:`QuantInfo.fallback` raises ``ValueError`` naming the
step and the reason unless ``QuantConfig.allow_fallback`` is set, in which case it
``warnings.warn`` s a :class:`FallbackWarning` and records the step.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from .config import QuantConfig
from .graph import LayerStats, ValueRecorder, is_passthrough, module_of
from .modules import (
    QuantAct,
    QuantAdd,
    QuantAvgPool,
    QuantLayer,
    QuantLayerNorm,
    QuantMatmul,
    QuantSoftmax,
    act_quantizers,
    quant_layers,
)
from .quantizers import Quantizer
from .scales import source_quantizer
from .tokens import QuantEmbedding, QuantTokenMean

log = logging.getLogger("quant")

__all__ = ["QuantInfo", "FallbackWarning", "LayerSummary", "OpSummary", "QuantSummary",
           "summarize"]


class FallbackWarning(UserWarning):
    """A requested quantization step was dropped (``QuantConfig(allow_fallback=True)``)."""


@dataclass
class QuantInfo:
    """What :func:`quant.quantize` did; attached to the returned model as ``qaccel_quant``.

    ``mode`` is ``"graph"`` (torch.fx) or ``"leaf"`` (untraceable model, fallback allowed);
    ``fallbacks`` the steps dropped (with their reasons), ``notes`` the smaller decisions
    (e.g. a layer analytic bias correction skipped); ``summary`` the
    :class:`QuantSummary`; ``bias_corrected`` the layers whose bias was corrected.
    """

    config: QuantConfig
    mode: str                                  # "graph" or "leaf"
    layers: list[str] = field(default_factory=list)
    stats: dict[str, LayerStats] = field(default_factory=dict)
    acts: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    folded_bn: list[str] = field(default_factory=list)
    cle_pairs: list[tuple[str, str]] = field(default_factory=list)
    producers: dict[str, str | None] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)
    bias_corrected: list[str] = field(default_factory=list)
    summary: QuantSummary | None = None

    def note(self, msg: str, *args) -> None:
        """Record (and log at INFO) a decision that does not drop a requested step."""
        text = msg % args if args else msg
        self.notes.append(text)
        log.info(text)

    def fallback(self, step: str, reason: str, instead: str = "continue without it") -> None:
        """A requested ``step`` cannot be applied: ``ValueError`` unless
        ``config.allow_fallback``; then a :class:`FallbackWarning` and a record."""
        if not self.config.allow_fallback:
            raise ValueError(f"quantize: cannot apply {step}: {reason} (pass "
                             f"QuantConfig(allow_fallback=True) to {instead})")
        text = f"{step} not applied: {reason}"
        self.fallbacks.append(text)
        warnings.warn(f"quantize: {text}", FallbackWarning, stacklevel=3)


@dataclass(frozen=True)
class LayerSummary:
    """One quantized ``nn.Linear`` / ``nn.Conv*`` layer."""

    name: str
    kind: str                   # module type, e.g. "Conv2d"
    w_bits: int
    in_bits: int | None         # bits of the quantizer its input is on (None: float input)
    out_bits: int | None        # bits of its output quantizer (None: float output)
    per_channel: bool
    act: str                    # fused activation
    bias_correction: str        # "none", "empirical", "analytic" or "skipped"


@dataclass(frozen=True)
class OpSummary:
    """A non-GEMM op: quantized (requantizing, ``bits``), integer (keeps its input's grid)
    or float (``bits`` None, with the reason)."""

    name: str
    op: str
    status: str                 # "quantized" | "integer" | "float"
    bits: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class QuantSummary:
    """Exactly which layers and ops of a quantized model are quantized and which stay float
    (``str(summary)`` is a readable table)."""

    mode: str
    config: QuantConfig
    layers: tuple[LayerSummary, ...]
    ops: tuple[OpSummary, ...]
    steps: tuple[tuple[str, str], ...]
    fallbacks: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def float_ops(self) -> tuple[OpSummary, ...]:
        return tuple(o for o in self.ops if o.status == "float")

    @property
    def layer_bits(self) -> dict[str, tuple[int, int | None]]:
        """``{layer: (w_bits, out_bits)}``."""
        return {s.name: (s.w_bits, s.out_bits) for s in self.layers}

    def to_text(self) -> str:
        c = self.config
        lines = [f"quantized model: {self.mode} mode, W{c.w_bits}A{c.a_bits} "
                 f"{'per-channel' if c.per_channel else 'per-tensor'}, "
                 f"{len(self.layers)} layers quantized, {len(self.float_ops)} ops float"]
        lines += [f"  {step}: {status}" for step, status in self.steps]
        rows = [("layer", "type", "W", "in", "out", "act", "bias corr.")]
        rows += [(s.name, s.kind, str(s.w_bits), _b(s.in_bits), _b(s.out_bits), s.act,
                  s.bias_correction) for s in self.layers]
        lines += ["layers:"] + _table(rows)
        if self.ops:
            rows = [("op", "kind", "status", "bits", "why")]
            rows += [(o.name, o.op, o.status, _b(o.bits) if o.status == "quantized" else "",
                      o.reason) for o in self.ops]
            lines += ["ops:"] + _table(rows)
        if self.float_ops:
            lines.append("stay float: " + ", ".join(o.name for o in self.float_ops))
        else:
            lines.append("stay float: none")
        lines += [f"fallback: {f}" for f in self.fallbacks]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    __str__ = to_text


def _b(bits: int | None) -> str:
    return "float" if bits is None else str(bits)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def _node_kind(gm: fx.GraphModule, node: fx.Node) -> str:
    m = module_of(gm, node)
    if m is not None:
        return type(m).__name__
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


_VECTOR_KINDS = {QuantLayerNorm: "layernorm", QuantMatmul: "matmul (act x act)",
                 QuantSoftmax: "softmax", QuantTokenMean: "mean", QuantEmbedding: "embedding"}


def _graph_ops(gm: fx.GraphModule, batch) -> list[OpSummary]:
    rec = ValueRecorder(gm)
    with torch.no_grad():
        if isinstance(batch, dict):
            rec.run(*[batch[n.target] for n in gm.graph.nodes
                      if n.op == "placeholder" and n.target in batch])
        else:
            rec.run(*(batch if isinstance(batch, tuple | list) else (batch,)))
    values = rec.values
    ops = []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        m = module_of(gm, node)
        if isinstance(m, QuantLayer):
            continue
        if isinstance(m, Quantizer):
            src = node.args[0]
            if isinstance(values.get(src), torch.Tensor) and values[src].is_floating_point():
                ops.append(OpSummary(str(node.target), f"input {src.name}", "quantized",
                                     m.bits))
            continue
        if isinstance(m, QuantAdd | QuantAvgPool | QuantAct | QuantLayerNorm | QuantMatmul
                      | QuantSoftmax | QuantTokenMean | QuantEmbedding):
            kind = "add" if isinstance(m, QuantAdd) else f"table ({m.func})" \
                if isinstance(m, QuantAct) else f"avgpool ({m.kind})" \
                if isinstance(m, QuantAvgPool) else _VECTOR_KINDS[type(m)]
            ops.append(OpSummary(str(node.target), kind, "quantized",
                                 m.output_quantizer.bits))
            continue
        val = values.get(node)
        if not isinstance(val, torch.Tensor) or not val.is_floating_point():
            continue                          # size(), getattr, integer tensors
        if is_passthrough(gm, node) and node.args and isinstance(node.args[0], fx.Node):
            if source_quantizer(gm, node) is not None:
                ops.append(OpSummary(node.name, _node_kind(gm, node), "integer",
                                     reason="keeps its input's grid"))
            else:
                ops.append(OpSummary(node.name, _node_kind(gm, node), "float",
                                     reason="its input is float"))
            continue
        ops.append(OpSummary(node.name, _node_kind(gm, node), "float",
                             reason="no quantized form (a later quantizer requantizes it)"))
    return ops


def _leaf_ops(model: nn.Module) -> list[OpSummary]:
    inside = {id(m) for _, ql in quant_layers(model) for m in ql.modules()}
    ops = []
    for name, m in model.named_modules():
        if id(m) in inside or isinstance(m, Quantizer) or list(m.children()) or not name:
            continue
        ops.append(OpSummary(name, type(m).__name__, "float",
                             reason="leaf mode: the model did not trace"))
    ops.append(OpSummary("forward()", "functional ops", "float",
                         reason="leaf mode: ops outside modules are not seen"))
    return ops


def summarize(qmodel: nn.Module, batch=None) -> QuantSummary:
    """The :class:`QuantSummary` of a model returned by :func:`quant.quantize`; ``batch``
    (one calibration batch) lets graph mode tell tensor ops from shape arithmetic."""
    info = getattr(qmodel, "qaccel_quant", None)
    if not isinstance(info, QuantInfo):
        raise ValueError("summarize needs a model returned by quant.quantize")
    cfg = info.config
    graph = info.mode == "graph" and isinstance(qmodel, fx.GraphModule)
    nodes = {n.target: n for n in qmodel.graph.nodes if n.op == "call_module"} if graph \
        else {}
    layers = []
    for name, ql in quant_layers(qmodel):
        q_in = ql.input_quantizer
        if q_in is None and name in nodes:
            q_in = source_quantizer(qmodel, nodes[name].args[0])
        bc = cfg.bias_correction
        if bc == "analytic" and name not in info.bias_corrected:
            bc = "skipped"
        layers.append(LayerSummary(
            name, type(ql.module).__name__, ql.weight_quantizer.bits,
            q_in.bits if q_in is not None else None,
            ql.output_quantizer.bits if ql.output_quantizer is not None else None,
            ql.weight_quantizer.per_channel, ql.act, bc))
    if graph:
        try:
            ops = _graph_ops(qmodel, batch) if batch is not None else None
        except Exception:  # noqa: BLE001 - e.g. a dict batch fx.Interpreter cannot feed
            ops = None
        if ops is None:       # without a run: the quantized ops only
            ops = [OpSummary(n, "activation quantizer", "quantized", q.bits)
                   for n, q in act_quantizers(qmodel) if ".output_quantizer" not in n]
    else:
        ops = _leaf_ops(qmodel)
    unused = [n for n, q in act_quantizers(qmodel) if q.scale is None]
    steps = (
        ("BN folding", _listed(info.folded_bn, "folded") if graph else "not applied (leaf mode)"),
        ("CLE", "off" if not cfg.cle else _listed([f"{a}->{b}" for a, b in info.cle_pairs],
                                                  "pairs")),
        ("rounding", cfg.rounding),
        ("bias correction", cfg.bias_correction if cfg.bias_correction == "none" else
         f"{cfg.bias_correction}: " + _listed(info.bias_corrected, "layers")),
        ("ranges", f"weights {cfg.weight_range}, activations {cfg.act_range}"
         + (f"; unused quantizers (saw no data): {', '.join(unused)}" if unused else "")),
    )
    return QuantSummary(info.mode, cfg, tuple(layers), tuple(ops), steps,
                        tuple(info.fallbacks), tuple(info.notes))


def _listed(names: list[str], what: str) -> str:
    return f"{len(names)} {what}" + (f" ({', '.join(names)})" if names else "")
