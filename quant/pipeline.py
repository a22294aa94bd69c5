"""``quant.quantize``: the standard PTQ pipeline of the whitepaper's Figure 8.

BN folding -> CLE (+ high-bias absorption) -> add quantizers -> weight range setting ->
AdaRound / Bit-split, or bias correction -> activation range setting.

Graph-aware steps (BN folding, activation fusion, CLE, the export structure) need torch.fx;
a model that cannot be traced is still quantized by wrapping its ``nn.Linear`` /
``nn.Conv*`` leaves (weight quantizer + input quantizer), and the skipped steps are logged.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from . import bias_correction as bc
from .cle import absorb_high_bias, cross_layer_equalization
from .config import QuantConfig
from .graph import (
    LayerStats,
    fold_batchnorm,
    fuse_activations,
    insert_quantizers,
    is_quantizable,
    trace,
)
from .modules import QuantLayer, act_quantizers, quant_layers, quant_state
from .quantizers import Observer, Quantizer
from .ranges import bn_range, cross_entropy_range, minmax_range, mse_range

log = logging.getLogger("quant")

__all__ = ["quantize", "refresh_scales", "snap_scales", "QuantInfo", "run_batch", "as_batches",
           "set_weight_ranges",
           "calibrate_activations", "apply_rounding"]


@dataclass
class QuantInfo:
    """What :func:`quantize` did; attached to the returned model as ``qaccel_quant``."""

    config: QuantConfig
    mode: str                                  # "graph" or "leaf"
    layers: list[str] = field(default_factory=list)
    stats: dict[str, LayerStats] = field(default_factory=dict)
    acts: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    folded_bn: list[str] = field(default_factory=list)
    cle_pairs: list[tuple[str, str]] = field(default_factory=list)
    producers: dict[str, str | None] = field(default_factory=dict)


def run_batch(model: nn.Module, batch):
    """Feed one calibration batch: tensor -> ``model(x)``, tuple/list -> ``model(*x)``,
    dict -> ``model(**x)``."""
    if isinstance(batch, torch.Tensor):
        return model(batch)
    if isinstance(batch, tuple | list):
        return model(*batch)
    if isinstance(batch, dict):
        return model(**batch)
    raise TypeError(f"calib_data batches must be a tensor, tuple/list or dict, not "
                    f"{type(batch).__name__}")


def as_batches(calib_data) -> list:
    if isinstance(calib_data, torch.Tensor):
        raise TypeError("calib_data must be an iterable of batches; wrap a single tensor "
                        "as [x]")
    if not isinstance(calib_data, Iterable):
        raise TypeError(f"calib_data must be an iterable of batches, not "
                        f"{type(calib_data).__name__}")
    batches = list(calib_data)
    if not batches:
        raise ValueError("calib_data is empty")
    for b in batches:
        if not isinstance(b, torch.Tensor | tuple | list | dict):
            raise TypeError(f"calib_data batches must be a tensor, tuple/list or dict, not "
                            f"{type(b).__name__}")
    return batches


def _note(info: QuantInfo, msg: str, *args) -> None:
    text = msg % args if args else msg
    info.notes.append(text)
    log.info(text)


# ---- weight ranges ---------------------------------------------------------------------
@torch.no_grad()
def set_weight_ranges(model: nn.Module, method: str) -> None:
    for _, ql in quant_layers(model):
        q, w = ql.weight_quantizer, ql.module.weight.detach()
        lo, hi = mse_range(w, q) if method == "mse" else minmax_range(w, q)
        q.set_range(lo, hi)


# ---- rounding dispatch (AdaRound / Bit-split live in their own modules) -----------------
def _collect(model: nn.Module, module: nn.Module, batches: list, *, output: bool
             ) -> torch.Tensor:
    got = []

    def hook(_m, inp, out):
        got.append((out if output else inp[0]).detach())

    h = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for b in batches:
                run_batch(model, b)
    finally:
        h.remove()
    return torch.cat(got)


def _act_fn(act: str):
    return {"relu": torch.relu, "relu6": nn.functional.relu6}.get(act)


def _round_layer(method: str, ql: QuantLayer, inputs_q: torch.Tensor, target: torch.Tensor,
                 cfg: QuantConfig) -> torch.Tensor:
    """One line per algorithm: the other modules own the maths."""
    if method == "adaround":
        from .adaround import adaround_layer
        return adaround_layer(ql.module, ql.weight_scale(), inputs_q, target,
                              w_bits=cfg.w_bits, iterations=cfg.iterations,
                              act_fn=_act_fn(ql.act), seed=cfg.seed, progress=False)
    if method == "bitsplit":
        from .bitsplit import bitsplit_layer
        return bitsplit_layer(ql.module, ql.weight_scale(), inputs_q, target,
                              w_bits=cfg.w_bits, iterations=cfg.iterations,
                              act_fn=_act_fn(ql.act), seed=cfg.seed)
    raise ValueError(f"unknown rounding {method!r}")


def apply_rounding(model: nn.Module, batches: list, cfg: QuantConfig) -> None:
    """AdaRound / Bit-split layer by layer in network order: inputs from the model with all
    preceding layers quantized (eq. 35), targets from the FP model."""
    for _name, ql in quant_layers(model):
        with quant_state(model, weights=False, acts=False):
            target = _collect(model, ql, batches, output=True)
        # AdaRound: inputs from the partially quantized model (eq. 35); Bit-split (Wang et
        # al. 2020): inputs from the FP network
        with quant_state(model, weights=cfg.rounding == "adaround", acts=False):
            inputs_q = _collect(model, ql, batches, output=False)
        result = _round_layer(cfg.rounding, ql, inputs_q, target, cfg)
        if isinstance(result, tuple):           # (w_int, scale)
            ql.set_integer_weight(result[0], result[1])
        else:
            ql.set_integer_weight(result)


# ---- activation ranges -----------------------------------------------------------------
def _output_quantizer_owner(model: nn.Module) -> dict[int, QuantLayer]:
    return {id(ql.output_quantizer): ql for _, ql in quant_layers(model)
            if ql.output_quantizer is not None}


def _logits_quantizer(model: nn.Module, batches: list) -> Quantizer | None:
    """The activation quantizer whose output is the model output (if any)."""
    last = {}
    hooks = []
    for _, q in act_quantizers(model):
        hooks.append(q.register_forward_hook(
            lambda m, i, o: last.__setitem__("out", (m, o))))
    try:
        with torch.no_grad():
            out = run_batch(model, batches[0])
    finally:
        for h in hooks:
            h.remove()
    if "out" in last and isinstance(out, torch.Tensor) and last["out"][1] is out:
        return last["out"][0]
    return None


def _bitsplit_range(name: str, q: Quantizer, ob: Observer, info: QuantInfo
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bit-split's activation range (Wang et al. 2020): ``[0, alpha (2^b - 1)]`` with the
    least-squares scale ``alpha`` of the observed positive samples, so the quantizer's scale
    is ``alpha`` and its zero-point 0. Only for unsigned per-tensor quantizers that see no
    negative value; the others fall back to min-max (noted)."""
    from .bitsplit import bitsplit_act_scale

    why = None
    if q.per_channel or q.signed:
        why = "not an unsigned per-tensor quantizer"
    elif float(ob.min) < 0:
        why = f"sees negative values (min {float(ob.min):.4g})"
    if why is not None:
        _note(info, "act_range bitsplit: %s %s; min-max range instead", name, why)
        return ob.min, ob.max
    alpha = bitsplit_act_scale(ob.values(), q.bits)
    return torch.tensor(0.0), torch.tensor(alpha * float((1 << q.bits) - 1))


@torch.no_grad()
def calibrate_activations(model: nn.Module, batches: list, cfg: QuantConfig,
                          info: QuantInfo) -> None:
    quantizers = act_quantizers(model)
    owners = _output_quantizer_owner(model)
    logits_q = _logits_quantizer(model, batches) if cfg.act_range == "cross_entropy" else None
    for i, (_, q) in enumerate(quantizers):
        q.enabled = False
        q.observer = Observer(cap=cfg.calib_samples, keep_rows=q is logits_q,
                              seed=cfg.seed + i)
    try:
        for b in batches:
            run_batch(model, b)
    finally:
        obs = {id(q): q.observer for _, q in quantizers}
        for _, q in quantizers:
            q.observer = None
    layer_name = {id(ql): n for n, ql in quant_layers(model)}
    for name, q in quantizers:
        ob = obs[id(q)]
        if ob is None or ob.n_seen == 0:
            _note(info, "activation quantizer %s saw no data; left disabled", name)
            continue
        owner = owners.get(id(q))
        act = owner.act if owner is not None else "none"
        method = cfg.act_range
        if method == "bn":
            st = info.stats.get(layer_name.get(id(owner)))
            if st is not None:
                lo, hi = bn_range(st.beta, st.gamma, cfg.bn_alpha, relu=act == "relu",
                                  relu6=act == "relu6")
            else:
                lo, hi = ob.min, ob.max
        elif method == "cross_entropy" and q is logits_q:
            lo, hi = cross_entropy_range(torch.cat(ob.rows), q)
        elif method in ("mse", "cross_entropy"):
            lo, hi = mse_range(ob.values(), q)
        elif method == "bitsplit":
            lo, hi = _bitsplit_range(name, q, ob, info)
        else:
            lo, hi = ob.min, ob.max
        if act == "relu6":
            hi = torch.clamp(torch.as_tensor(hi), max=6.0)
        q.set_range(lo, hi)
        q.enabled = True


def _producer_quantizer(gm: fx.GraphModule, node: fx.Node) -> Quantizer | None:
    from .graph import module_of

    m = module_of(gm, node)
    if isinstance(m, Quantizer):
        return m
    q = getattr(m, "output_quantizer", None)
    return q if isinstance(q, Quantizer) else None


def _source_quantizer(gm: fx.GraphModule, arg) -> Quantizer | None:
    """The activation quantizer whose grid ``arg`` is on (through grid-preserving ops)."""
    from .graph import is_passthrough

    cur = arg
    while isinstance(cur, fx.Node) and _producer_quantizer(gm, cur) is None \
            and is_passthrough(gm, cur) and cur.args:
        cur = cur.args[0]
    return _producer_quantizer(gm, cur) if isinstance(cur, fx.Node) else None


def _link_input_scales(gm: fx.GraphModule) -> None:
    """Set ``in_scale`` of every QuantLayer from the quantizer producing its input."""
    from .graph import module_of

    for node in gm.graph.nodes:
        ql = module_of(gm, node)
        if not isinstance(ql, QuantLayer):
            continue
        src_q = ql.input_quantizer if ql.input_quantizer is not None \
            else _source_quantizer(gm, node.args[0])
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
        _link_input_scales(qmodel)
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
    from .graph import module_of
    from .modules import QuantAdd, QuantAvgPool

    for node in gm.graph.nodes:
        m = module_of(gm, node)
        if isinstance(m, QuantAvgPool | QuantAdd):
            src = _source_quantizer(gm, node.args[0])
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
    _link_input_scales(gm)
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


def _leaf_wrap(model: nn.Module, cfg: QuantConfig) -> list[str]:
    from .modules import _act_quantizer

    names = []
    for name, m in list(model.named_modules()):
        for child_name, child in list(m.named_children()):
            if is_quantizable(child):
                ql = QuantLayer(child, cfg.w_bits, per_channel=cfg.per_channel,
                                power_of_two=cfg.power_of_two)
                ql.input_quantizer = _act_quantizer(cfg.a_bits, cfg.a_signed)
                setattr(m, child_name, ql)
                names.append(f"{name}.{child_name}" if name else child_name)
    return names


# ---- the public entry point ------------------------------------------------------------
def quantize(model: nn.Module, calib_data, config: QuantConfig | None = None
             ) -> nn.Module:
    """Return a fake-quantized copy of ``model`` (the input model is not modified).

    ``calib_data``: iterable of batches (tensor -> ``model(x)``, tuple/list ->
    ``model(*x)``, dict -> ``model(**x)``). See :class:`QuantConfig` for the options.
    The returned module carries ``qaccel_quant`` (:class:`QuantInfo`).
    """
    cfg = config if config is not None else QuantConfig()
    if not isinstance(cfg, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, not {type(cfg).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    batches = as_batches(calib_data)
    torch.manual_seed(cfg.seed)
    model = copy.deepcopy(model).eval()
    gm, reason = trace(model, batches)
    if gm is not None:
        info = QuantInfo(cfg, "graph")
        info.folded_bn = fold_batchnorm(gm, info.stats)
        info.acts = fuse_activations(gm)
        if cfg.cle:
            pairs = cross_layer_equalization(gm, info.acts, info.stats)
            info.cle_pairs = [(p.first, p.second) for p in pairs]
            if cfg.high_bias_absorption:
                absorb_high_bias(gm, pairs, info.acts, info.stats)
        info.producers = bc.producers(gm, info.stats)
        info.layers = insert_quantizers(gm, cfg, info.acts)
        qmodel: nn.Module = gm
    else:
        info = QuantInfo(cfg, "leaf")
        _note(info, "model is not torch.fx-traceable (%s): wrapping nn.Linear/nn.Conv* leaves; "
              "BN folding, activation fusion and CLE skipped", reason)
        if cfg.cle:
            _note(info, "CLE skipped: needs the graph")
        info.layers = _leaf_wrap(model, cfg)
        qmodel = model
    if not info.layers:
        raise ValueError("model has no nn.Linear / nn.Conv* layer to quantize")
    qmodel.eval()
    with quant_state(qmodel, weights=False, acts=False):
        set_weight_ranges(qmodel, cfg.weight_range)
    if cfg.rounding != "nearest":
        apply_rounding(qmodel, batches, cfg)
    elif cfg.bias_correction == "empirical":
        bc.empirical_bias_correction(qmodel, batches)
    elif cfg.bias_correction == "analytic":
        if info.mode != "graph":
            _note(info, "analytic bias correction skipped: needs BN statistics from the graph")
        else:
            bc.analytic_bias_correction(qmodel, info, _note)
    with quant_state(qmodel, weights=True):
        calibrate_activations(qmodel, batches, cfg, info)
    qmodel.qaccel_quant = info
    refresh_scales(qmodel)
    return qmodel
