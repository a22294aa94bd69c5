"""Range setting of a quantized model (whitepaper sec. 3.1): weight ranges (min-max, MSE,
output-aware MSE on calibration inputs) and activation ranges from calibration data
(min-max, MSE, cross-entropy for the logits,
BN-based, Bit-split's least-squares scale)."""

from __future__ import annotations

import torch
from torch import nn

from .calib_data import run_batch
from .config import QuantConfig
from .modules import QuantLayer, act_quantizers, quant_layers
from .padding import padding_mask, valid_values
from .quantizers import Observer, Quantizer
from .ranges import bn_range, cross_entropy_range, minmax_range, mse_range, output_mse_range

__all__ = ["set_weight_ranges", "layer_grams", "calibrate_activations"]


#: input rows (im2col patches) per layer kept for the ``output_mse`` Gram matrices
GRAM_ROWS = 20000


@torch.no_grad()
def layer_grams(model: nn.Module, batches: list, *, max_rows: int = GRAM_ROWS, seed: int = 0
                ) -> dict[str, torch.Tensor]:
    """``G = X^T X`` (float64) of every :class:`QuantLayer`'s input rows over ``batches``, in
    one pass of ``model`` as it is (run it with quantization off for FP inputs): ``[K, K]``
    (``[C, k*k, k*k]`` for depthwise convs), at most ``max_rows`` random rows (im2col
    patches for convs) per layer. Layers ``quant.bitsplit.layer_patches`` cannot unfold
    (Conv1d/3d, grouped non-depthwise convs) and layers that saw no data are left out."""
    from .bitsplit import layer_patches

    grams: dict[str, torch.Tensor] = {}
    per_batch = max(1, -(-max_rows // max(len(batches), 1)))
    hooks, calls = [], [0]

    def hook(name, ql, _m, inp):
        try:
            X, _ = layer_patches(ql.module, inp[0], max_rows=per_batch, seed=seed + calls[0])
        except (TypeError, ValueError):
            return
        calls[0] += 1
        X = X.detach().to(torch.float64)
        g = X.transpose(-1, -2) @ X
        grams[name] = grams[name] + g if name in grams else g

    for name, ql in quant_layers(model):
        hooks.append(ql.register_forward_pre_hook(
            lambda m, inp, name=name, ql=ql: hook(name, ql, m, inp)))
    try:
        for b in batches:
            run_batch(model, b)
    finally:
        for h in hooks:
            h.remove()
    return grams


@torch.no_grad()
def set_weight_ranges(model: nn.Module, method: str, batches: list | None = None,
                      info=None, *, seed: int = 0) -> None:
    """Weight quantizer ranges of every :class:`QuantLayer`: ``"mse"`` (eq. 16),
    ``"minmax"`` or ``"output_mse"`` (:func:`quant.ranges.output_mse_range`: the layer's
    output error on the inputs it sees when ``model`` runs ``batches``; needs ``batches``,
    and falls back to ``"mse"`` -- noted in ``info`` -- for a layer whose inputs cannot be
    unfolded into rows)."""
    grams = {}
    if method == "output_mse":
        if not batches:
            raise ValueError("weight_range 'output_mse' needs calibration batches")
        grams = layer_grams(model, batches, seed=seed)
    for name, ql in quant_layers(model):
        q, w = ql.weight_quantizer, ql.module.weight.detach()
        if method == "output_mse" and name in grams:
            lo, hi = output_mse_range(w, q, grams[name])
        elif method in ("mse", "output_mse"):
            if method == "output_mse" and info is not None:
                info.note("weight_range output_mse: %s has no input rows (unsupported layer "
                          "or no data); MSE range instead", name)
            lo, hi = mse_range(w, q)
        else:
            lo, hi = minmax_range(w, q)
        q.set_range(lo, hi)


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


def _bitsplit_range(name: str, q: Quantizer, ob: Observer, info
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
        info.note("act_range bitsplit: %s %s; min-max range instead", name, why)
        return ob.min, ob.max
    alpha = bitsplit_act_scale(ob.values(), q.bits)
    return torch.tensor(0.0), torch.tensor(alpha * float((1 << q.bits) - 1))


class _Unpadded:
    """An observer that sees only the real tokens of the current batch
    (``quant.padding``)."""

    def __init__(self, observer: Observer, current: dict):
        self.observer = observer
        self.current = current

    def __call__(self, x: torch.Tensor) -> None:
        x = valid_values(x, self.current["mask"])
        if x.numel():
            self.observer(x)


@torch.no_grad()
def calibrate_activations(model: nn.Module, batches: list, cfg: QuantConfig, info) -> None:
    """Observe every activation quantizer on ``batches`` and set its range by
    ``cfg.act_range`` (padding positions of batches with an attention mask left out,
    :mod:`quant.padding`); decisions (min-max where a method does not apply, quantizers that
    saw no data) are noted in ``info`` (:class:`quant.summary.QuantInfo`)."""
    quantizers = act_quantizers(model)
    owners = _output_quantizer_owner(model)
    logits_q = _logits_quantizer(model, batches) if cfg.act_range == "cross_entropy" else None
    if cfg.act_range == "cross_entropy" and logits_q is None:
        info.note("act_range cross_entropy: the model output is not an activation "
                  "quantizer's output; MSE for every quantizer")
    obs: dict[int, Observer] = {}
    current: dict[str, torch.Tensor | None] = {"mask": None}
    for i, (_, q) in enumerate(quantizers):
        q.enabled = False
        obs[id(q)] = Observer(cap=cfg.calib_samples, keep_rows=q is logits_q,
                              seed=cfg.seed + i)
        q.observer = _Unpadded(obs[id(q)], current)
    try:
        for b in batches:
            current["mask"] = padding_mask(b)        # padding stays out of the ranges
            run_batch(model, b)
    finally:
        for _, q in quantizers:
            q.observer = None
    layer_name = {id(ql): n for n, ql in quant_layers(model)}
    for name, q in quantizers:
        ob = obs[id(q)]
        if ob is None or ob.n_seen == 0:
            info.note("activation quantizer %s saw no floating-point data; left disabled",
                      name)
            continue
        if not (bool(torch.isfinite(ob.min).all()) and bool(torch.isfinite(ob.max).all())):
            raise ValueError(f"calib_data: activation quantizer {name} saw NaN/inf values "
                             "(the model produces them on the calibration data)")
        owner = owners.get(id(q))
        act = owner.act if owner is not None else "none"
        method = cfg.act_range
        if method == "bn":
            st = info.stats.get(layer_name.get(id(owner)))
            if st is not None:
                lo, hi = bn_range(st.beta, st.gamma, cfg.bn_alpha, relu=act == "relu",
                                  relu6=act == "relu6")
            else:
                info.note("act_range bn: %s has no BN statistics; min-max range instead",
                          name)
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
