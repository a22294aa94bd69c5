"""Weight rounding by optimisation, layer by layer in network order: AdaRound (Nagel et al.
2020; inputs from the partially quantized model, eq. 35) or Bit-split (Wang et al. 2020;
inputs from the FP network). The maths live in ``quant.adaround`` / ``quant.bitsplit``.
BRECQ, QDrop and NWQ (blocks / the whole network, activation step sizes learned jointly)
run on ``quant.reconstruction``."""

from __future__ import annotations

import torch
from torch import nn

from .calib_data import collect
from .config import QuantConfig
from .modules import QuantLayer, quant_layers, quant_state
from .progress import bar

__all__ = ["apply_rounding"]

_NAMES = {"adaround": "AdaRound", "bitsplit": "Bit-split", "brecq": "BRECQ", "qdrop": "QDrop",
          "nwq": "NWQ"}


def _act_fn(act: str):
    return {"relu": torch.relu, "relu6": nn.functional.relu6}.get(act)


def _round_layer(method: str, ql: QuantLayer, inputs_q: torch.Tensor, target: torch.Tensor,
                 cfg: QuantConfig, inner_progress) -> torch.Tensor:
    """One line per algorithm; the layer's own weight bits (per-layer overrides)."""
    w_bits = ql.weight_quantizer.bits
    if method == "adaround":
        from .adaround import adaround_layer
        return adaround_layer(ql.module, ql.weight_scale(), inputs_q, target,
                              w_bits=w_bits, iterations=cfg.iterations,
                              act_fn=_act_fn(ql.act), seed=cfg.seed, progress=inner_progress)
    if method == "bitsplit":
        from .bitsplit import bitsplit_layer
        return bitsplit_layer(ql.module, ql.weight_scale(), inputs_q, target,
                              w_bits=w_bits, iterations=cfg.iterations,
                              act_fn=_act_fn(ql.act), seed=cfg.seed)
    raise ValueError(f"unknown rounding {method!r}")


def apply_rounding(model: nn.Module, batches: list, cfg: QuantConfig, info=None) -> bool:
    """AdaRound / Bit-split layer by layer in network order: inputs from the model with all
    preceding layers quantized (eq. 35), targets from the FP model. A progress bar over the
    layers (and AdaRound's iterations) follows ``cfg.progress``. BRECQ / QDrop / NWQ:
    activation ranges calibrated first (``info``: :class:`quant.summary.QuantInfo`), then
    ``quant.reconstruction.reconstruct``. Returns whether the activation ranges are set."""
    # AdaRound's own bar per layer (not left behind) only when bars are shown at all
    inner = cfg.progress is True or (cfg.progress == "auto" and _stderr_tty())
    if cfg.rounding in ("brecq", "qdrop", "nwq"):
        from .calibrate import calibrate_activations
        from .reconstruction import reconstruct

        with quant_state(model, weights=False):     # ranges of the FP activations
            calibrate_activations(model, batches, cfg, info)
        reconstruct(model, batches, cfg, cfg.rounding, progress=inner,
                    bar=lambda units: bar(units, cfg.progress, desc=_NAMES[cfg.rounding],
                                          unit="unit"))
        return True
    layers = quant_layers(model)
    for _name, ql in bar(layers, cfg.progress, desc=_NAMES[cfg.rounding], unit="layer"):
        with quant_state(model, weights=False, acts=False):
            target = collect(model, ql, batches, output=True)
        with quant_state(model, weights=cfg.rounding == "adaround", acts=False):
            inputs_q = collect(model, ql, batches, output=False)
        result = _round_layer(cfg.rounding, ql, inputs_q, target, cfg, inner)
        if isinstance(result, tuple):           # (w_int, scale)
            ql.set_integer_weight(result[0], result[1])
        else:
            ql.set_integer_weight(result)
    return False


def _stderr_tty() -> bool:
    import sys

    return bool(getattr(sys.stderr, "isatty", lambda: False)())
