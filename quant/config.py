"""``QuantConfig``: the frozen, validated options of :func:`quant.quantize`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["QuantConfig", "WEIGHT_RANGES", "ACT_RANGES", "ROUNDINGS", "BIAS_CORRECTIONS"]

WEIGHT_RANGES = ("minmax", "mse")
ACT_RANGES = ("minmax", "mse", "cross_entropy", "bn", "bitsplit")
ROUNDINGS = ("nearest", "adaround", "bitsplit")
BIAS_CORRECTIONS = ("none", "empirical", "analytic")

_CHOICES = {"weight_range": WEIGHT_RANGES, "act_range": ACT_RANGES, "rounding": ROUNDINGS,
            "bias_correction": BIAS_CORRECTIONS}
_INTS = {"w_bits": (2, 16), "a_bits": (2, 16), "iterations": (0, 10_000_000),
         "seed": (0, 2**63 - 1), "mult_bits": (1, 32), "acc_bits": (4, 60),
         "calib_samples": (1, 10_000_000)}
_BOOLS = ("per_channel", "cle", "a_signed", "high_bias_absorption", "quantize_input",
          "snap_scales", "power_of_two")


@dataclass(frozen=True)
class QuantConfig:
    """Post-training quantization options (whitepaper Figure 8).

    Parameters
    ----------
    w_bits, a_bits : int
        Weight and activation bit-widths, in [2, 16] (SPEC).
    per_channel : bool
        Per-output-channel weight scales (and per-channel ``(M, S)`` on export).
    weight_range : {"minmax", "mse"}
        Weight range setting (sec. 3.1, eq. 14-16).
    act_range : {"minmax", "mse", "cross_entropy", "bn", "bitsplit"}
        Activation range setting. ``cross_entropy`` is "MSE + Xent" of Table 2: MSE for
        every activation quantizer and cross-entropy (eq. 17) for the network's logits.
        ``bn`` uses eq. 18-19 with ``bn_alpha`` where BN statistics are known (min-max
        elsewhere). ``bitsplit`` is Bit-split's activation scale (Wang et al. 2020):
        alternating least squares on the positive samples
        (:func:`quant.bitsplit.bitsplit_act_scale`), zero-point 0, for unsigned per-tensor
        quantizers that see no negative value; min-max (logged) for the others (e.g.
        logits).
    rounding : {"nearest", "adaround", "bitsplit"}
        Weight rounding.
    cle : bool
        Cross-layer equalization (eq. 20-22), with high-bias absorption (eq. 23-24) when
        ``high_bias_absorption``.
    bias_correction : {"none", "empirical", "analytic"}
        Sec. 3.3, eq. 27 / eq. 28. Applied after nearest rounding (not with AdaRound or
        Bit-split, which already minimise the output error).
    iterations : int
        Optimisation steps per layer for AdaRound / Bit-split.
    seed : int
        Seeds every random choice (sub-sampling, AdaRound mini-batches).
    a_signed : bool
        Signed symmetric activations (zero-point 0) instead of unsigned asymmetric.
    mult_bits, acc_bits : int
        Requantizer multiplier width and accumulator width used by :func:`quant.export`.
    calib_samples : int
        Values kept per activation quantizer for MSE / cross-entropy range search.
    quantize_input : bool
        Quantize the network input (needed for export).
    snap_scales : bool
        Nudge weight (and pooling/add output) scales by less than ``2^-mult_bits`` so
        every requantization scale is exactly ``M / 2^S``: the fake-quant model then
        reproduces the integer network (see ``quant.pipeline.snap_scales``).
    power_of_two : bool
        Power-of-two weight scales ``2^k`` (sec. 2.2.2); such scales are not snapped.
    """

    w_bits: int = 8
    a_bits: int = 8
    per_channel: bool = False
    weight_range: str = "mse"
    act_range: str = "mse"
    rounding: str = "nearest"
    cle: bool = False
    bias_correction: str = "none"
    iterations: int = 10000
    seed: int = 0
    a_signed: bool = False
    high_bias_absorption: bool = True
    bn_alpha: float = 6.0
    mult_bits: int = 16
    acc_bits: int = 32
    calib_samples: int = 65536
    quantize_input: bool = True
    snap_scales: bool = True
    power_of_two: bool = False

    def __post_init__(self):
        for name, allowed in _CHOICES.items():
            v = getattr(self, name)
            if v not in allowed:
                raise ValueError(f"QuantConfig.{name} must be one of "
                                 f"{', '.join(map(repr, allowed))}; got {v!r}")
        for name, (lo, hi) in _INTS.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"QuantConfig.{name} must be an integer in [{lo}, {hi}]; "
                                 f"got {v!r}")
            if not lo <= v <= hi:
                raise ValueError(f"QuantConfig.{name} must be in [{lo}, {hi}]; got {v}")
        for name in _BOOLS:
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise ValueError(f"QuantConfig.{name} must be a bool (True or False); "
                                 f"got {v!r}")
        if isinstance(self.bn_alpha, bool) or not isinstance(self.bn_alpha, int | float) \
                or not self.bn_alpha > 0:
            raise ValueError(f"QuantConfig.bn_alpha must be a number > 0; got "
                             f"{self.bn_alpha!r}")
        if self.acc_bits + self.mult_bits > 62:
            raise ValueError(f"QuantConfig.acc_bits must be <= {62 - self.mult_bits} "
                             f"(acc_bits + mult_bits <= 62); got {self.acc_bits}")
        if self.acc_bits < self.w_bits + self.a_bits:
            raise ValueError(f"QuantConfig.acc_bits must be >= w_bits + a_bits = "
                             f"{self.w_bits + self.a_bits}; got {self.acc_bits}")
        if self.bias_correction != "none" and self.rounding != "nearest":
            raise ValueError(f"QuantConfig.bias_correction must be 'none' when rounding is "
                             f"{self.rounding!r} (Figure 8: AdaRound/Bit-split *or* bias "
                             f"correction); got {self.bias_correction!r}")

    def replace(self, **changes) -> QuantConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
