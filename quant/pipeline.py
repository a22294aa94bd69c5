"""``quant.quantize``: the standard PTQ pipeline of the whitepaper's Figure 8.

Check calibration data -> trace -> BN folding -> CLE (+ high-bias absorption) -> add
quantizers (per-layer bits) -> weight range setting -> AdaRound / Bit-split, or bias
correction -> activation range setting -> scale snapping -> summary.

Graph-aware steps (BN folding, activation fusion, CLE, analytic bias correction, the
quantization of op outputs, the export structure) need torch.fx. A requested step that
cannot be applied raises ``ValueError`` naming it and why, unless
``QuantConfig(allow_fallback=True)``: then an untraceable model is quantized by wrapping its
``nn.Linear`` / ``nn.Conv*`` leaves (weight quantizer + input quantizer) and each dropped
step is warned about (:class:`quant.summary.FallbackWarning`). ``qmodel.qaccel_quant.summary``
lists what is quantized and what stays float.

The stages live in their own modules: ``calib_data`` (batches), ``graph`` (tracing, BN
folding, quantizer insertion), ``cle``, ``layer_bits``, ``calibrate`` (ranges),
``rounding``, ``bias_correction``, ``scales`` (bias grids, ``M / 2^S`` snapping) and
``summary``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from . import bias_correction as bc
from .calib_data import as_batches, check_model, run_batch
from .calibrate import calibrate_activations, set_weight_ranges
from .cle import absorb_high_bias, cross_layer_equalization
from .config import QuantConfig
from .graph import fold_batchnorm, fuse_activations, insert_quantizers, trace
from .layer_bits import apply_layer_bits
from .modules import quant_state, wrap_leaves
from .rounding import apply_rounding
from .scales import refresh_scales, snap_scales
from .summary import QuantInfo, summarize

__all__ = ["quantize", "refresh_scales", "snap_scales", "QuantInfo", "run_batch", "as_batches",
           "set_weight_ranges", "calibrate_activations", "apply_rounding"]

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _graph_steps(gm, cfg: QuantConfig, info: QuantInfo) -> None:
    skipped: list[tuple[str, str]] = []
    info.folded_bn = fold_batchnorm(gm, info.stats, skipped)
    for bn, why in skipped:
        info.fallback("BN folding", f"BatchNorm {bn!r} is {why}; it would stay a float op")
    info.acts = fuse_activations(gm)
    if cfg.cle:
        before = dict(info.acts)
        pairs = cross_layer_equalization(gm, info.acts, info.stats)
        if not pairs:
            info.fallback("CLE", "the model has no conv/linear pair (A -> B through "
                          "positively homogeneous ops, A with one user) to equalize")
        info.cle_pairs = [(p.first, p.second) for p in pairs]
        for name, act in info.acts.items():
            if before.get(name) != act:
                info.note("CLE: %s after %s replaced by %s (scaling equivariance)",
                          before.get(name), name, act)
        if cfg.high_bias_absorption:
            absorb_high_bias(gm, pairs, info.acts, info.stats)
    info.producers = bc.producers(gm, info.stats)
    info.layers = insert_quantizers(gm, cfg, info.acts)


def _leaf_steps(model: nn.Module, cfg: QuantConfig, reason: str) -> QuantInfo:
    info = QuantInfo(cfg, "leaf")
    dropped = []
    bns = [n for n, m in model.named_modules() if isinstance(m, _BN_TYPES)]
    if bns:
        dropped.append(f"BN folding ({', '.join(bns)})")
    if cfg.cle:
        dropped.append("CLE")
    if cfg.bias_correction == "analytic":
        dropped.append("analytic bias correction")
    dropped.append("activation quantization of op outputs")
    info.fallback(", ".join(dropped), f"{reason}; these steps need the torch.fx graph",
                  instead="quantize only the weights and inputs of the nn.Linear / "
                          "nn.Conv* leaves")
    info.layers = wrap_leaves(model, cfg)
    return info


def quantize(model: nn.Module, calib_data, config: QuantConfig | None = None
             ) -> nn.Module:
    """Return a fake-quantized copy of ``model`` (the input model is not modified).

    Parameters
    ----------
    model : torch.nn.Module
        FP32 model (put in eval mode on the copy).
    calib_data : iterable of batches
        Tensor -> ``model(x)``, tuple/list -> ``model(*x)``, dict -> ``model(**x)``.
        ``ValueError`` (naming ``calib_data`` and the batch) for empty batches, NaN/inf
        values and batches the FP32 model fails on or outputs NaN/inf for.
    config : QuantConfig, optional
        The options (default ``QuantConfig()``).

    Returns
    -------
    torch.nn.Module
        The quantized model, carrying ``qaccel_quant`` (:class:`QuantInfo`) whose
        ``summary`` (:class:`quant.summary.QuantSummary`) lists the quantized and float
        layers and ops.

    Raises
    ------
    ValueError
        Bad calibration data; a requested step that cannot be applied (without
        ``allow_fallback``); ``layer_bits`` naming an unknown layer; no layer to quantize.
    """
    cfg = config if config is not None else QuantConfig()
    if not isinstance(cfg, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, not {type(cfg).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    batches = as_batches(calib_data)
    torch.manual_seed(cfg.seed)
    model = copy.deepcopy(model).eval()
    check_model(model, batches)
    gm, reason = trace(model, batches)
    if gm is not None:
        info = QuantInfo(cfg, "graph")
        _graph_steps(gm, cfg, info)
        qmodel: nn.Module = gm
    else:
        info = _leaf_steps(model, cfg, reason)
        qmodel = model
    if not info.layers:
        raise ValueError("model has no nn.Linear / nn.Conv* layer to quantize")
    apply_layer_bits(qmodel, cfg, info.layers)
    qmodel.eval()
    with quant_state(qmodel, weights=False, acts=False):
        set_weight_ranges(qmodel, cfg.weight_range, batches, info, seed=cfg.seed)
    acts_done = False
    if cfg.rounding != "nearest":
        acts_done = apply_rounding(qmodel, batches, cfg, info)
    elif cfg.bias_correction == "empirical":
        info.bias_corrected = list(bc.empirical_bias_correction(qmodel, batches))
    elif cfg.bias_correction == "analytic" and info.mode == "graph":
        info.bias_corrected = list(bc.analytic_bias_correction(qmodel, info))
        if not info.bias_corrected:
            info.fallback("analytic bias correction", "no layer's input is described by "
                          "the BN statistics of a folded layer")
    if not acts_done:                   # BRECQ / QDrop / NWQ learned them already
        with quant_state(qmodel, weights=True):
            calibrate_activations(qmodel, batches, cfg, info)
    qmodel.qaccel_quant = info
    refresh_scales(qmodel)
    info.summary = summarize(qmodel, batches[0])
    return qmodel
