"""``QuantConfig``: the frozen, validated options of :func:`quant.quantize`, and
``LayerOverride``, a per-layer bit-width override."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from qaccel.sim.validate import (
    check_acc_bits,
    check_bool,
    check_choice,
    check_int,
    check_number,
    fail,
)

from .progress import check_progress

__all__ = ["QuantConfig", "LayerOverride", "QuantizerOverride", "WEIGHT_RANGES",
           "ACT_RANGES", "ROUNDINGS",
           "BIAS_CORRECTIONS", "BITS_RANGE", "INT_RANGES"]

WEIGHT_RANGES = ("minmax", "mse", "output_mse")
ACT_RANGES = ("minmax", "mse", "cross_entropy", "bn", "bitsplit")
ROUNDINGS = ("nearest", "adaround", "bitsplit", "brecq", "qdrop", "nwq")
BIAS_CORRECTIONS = ("none", "empirical", "analytic")

_CHOICES = {"weight_range": WEIGHT_RANGES, "act_range": ACT_RANGES, "rounding": ROUNDINGS,
            "bias_correction": BIAS_CORRECTIONS}
INT_RANGES = {"w_bits": (2, 16), "a_bits": (2, 16), "iterations": (0, 10_000_000),
         "seed": (0, 2**63 - 1), "mult_bits": (1, 32), "acc_bits": (4, 60),
         "calib_samples": (1, 10_000_000)}
_BOOLS = ("per_channel", "cle", "a_signed", "high_bias_absorption", "quantize_input",
          "snap_scales", "power_of_two", "allow_fallback", "first_last_8bit")
BITS_RANGE = INT_RANGES["w_bits"]


def _check_path(owner: str, name, what: str) -> None:
    """An override's ``name``: a non-empty string (``ValueError`` naming the field)."""
    if not isinstance(name, str) or not name:
        raise fail(owner, "name", what, name)


@dataclass(frozen=True)
class LayerOverride:
    """Bit-widths of one layer, overriding :attr:`QuantConfig.w_bits` / ``a_bits``.

    Parameters
    ----------
    name : str
        Module path of an ``nn.Linear`` / ``nn.Conv*`` layer (as in
        ``model.named_modules()``, e.g. ``"features.3"``).
    w_bits : int or None
        The layer's weight bits, in [2, 16]; ``None`` keeps ``QuantConfig.w_bits``.
    a_bits : int or None
        Bits of the activation quantizers the layer owns: its output quantizer (the
        activations it produces) and, where it has one, its own input quantizer. ``None``
        keeps ``QuantConfig.a_bits``.
    """

    name: str
    w_bits: int | None = None
    a_bits: int | None = None

    def __post_init__(self):
        _check_path("LayerOverride", self.name, "a non-empty module path")
        for field_name in ("w_bits", "a_bits"):
            v = getattr(self, field_name)
            if v is not None:
                object.__setattr__(self, field_name, check_int(
                    f"LayerOverride({self.name!r})", field_name, v, *BITS_RANGE,
                    why=f"or None for QuantConfig.{field_name}"))


@dataclass(frozen=True)
class QuantizerOverride:
    """Bit-width and granularity of one quantizer, overriding the config and ``layer_bits``.

    Parameters
    ----------
    name : str
        The quantizer's path in the quantized model, as :func:`quant.modules.act_quantizers`
        and the sensitivity report name it: ``"<layer>.weight_quantizer"`` (or
        ``"<layer>.weight"``), ``"<layer>.output_quantizer"``, ``"<layer>.input_quantizer"``,
        ``"input_quantizer_0"``; a module path alone (``"blocks.0.ln1"``,
        ``"quant_add_12"``) means its output quantizer. Linear inputs/weights/outputs, the
        operands of activation x activation matmuls (the outputs that feed them), residual
        adds and LayerNorm / softmax / GELU / SiLU outputs are all addressable.
    bits : int or None
        Its bit-width, in [2, 16] (e.g. 16 for the whitepaper's "a few activations in 16
        bit", sec. 3.6-3.7); ``None`` keeps the layer's / config's.
    per_channel : bool or None
        Per-output-channel scales; only the weights of ``nn.Linear`` / ``nn.Conv*`` layers
        can be per channel (the integer network gives every activation tensor, and
        LayerNorm's gamma, one scale). ``None`` keeps ``QuantConfig.per_channel``.
    """

    name: str
    bits: int | None = None
    per_channel: bool | None = None

    def __post_init__(self):
        _check_path("QuantizerOverride", self.name, "a non-empty quantizer path")
        own = f"QuantizerOverride({self.name!r})"
        if self.bits is not None:
            object.__setattr__(self, "bits", check_int(own, "bits", self.bits, *BITS_RANGE,
                                                       why="or None"))
        if self.per_channel is not None:
            object.__setattr__(self, "per_channel", check_bool(own, "per_channel",
                                                               self.per_channel))
        if self.bits is None and self.per_channel is None:
            raise fail(own, "bits", "set (or per_channel)", None, "the override changes nothing")

    @property
    def is_weight(self) -> bool:
        """Names a weight quantizer (by its ``weight_quantizer`` / ``.weight`` suffix)."""
        return self.name.endswith((".weight_quantizer", ".weight"))


def _quantizer_override(item) -> QuantizerOverride:
    if isinstance(item, QuantizerOverride):
        return item
    if isinstance(item, tuple | list) and len(item) in (2, 3):
        return QuantizerOverride(*item)
    raise fail("QuantConfig", "quantizer_bits", "QuantizerOverride or (name, bits[, "
               "per_channel]) entries", item)


def _layer_override(item) -> LayerOverride:
    if isinstance(item, LayerOverride):
        return item
    if isinstance(item, tuple | list) and len(item) == 3:
        return LayerOverride(*item)
    raise fail("QuantConfig", "layer_bits", "LayerOverride or (name, w_bits, a_bits) entries",
               item)


@dataclass(frozen=True)
class QuantConfig:
    """Post-training quantization options (whitepaper Figure 8).

    Parameters
    ----------
    w_bits, a_bits : int
        Weight and activation bit-widths, in [2, 16] (SPEC).
    per_channel : bool
        Per-output-channel weight scales (and per-channel ``(M, S)`` on export).
    weight_range : {"minmax", "mse", "output_mse"}
        Weight range setting (sec. 3.1, eq. 14-16). ``output_mse`` minimises the layer's
        output error on the calibration inputs (FP network) instead of the weights' own
        error (:func:`quant.ranges.output_mse_range`); it clips less at 4 bits.
    act_range : {"minmax", "mse", "cross_entropy", "bn", "bitsplit"}
        Activation range setting. ``cross_entropy`` is "MSE + Xent" of Table 2: MSE for
        every activation quantizer and cross-entropy (eq. 17) for the network's logits.
        ``bn`` uses eq. 18-19 with ``bn_alpha`` where BN statistics are known (min-max
        elsewhere). ``bitsplit`` is Bit-split's activation scale (Wang et al. 2020):
        alternating least squares on the positive samples
        (:func:`quant.bitsplit.bitsplit_act_scale`), zero-point 0, for unsigned per-tensor
        quantizers that see no negative value; min-max (logged) for the others (e.g.
        logits).
    rounding : {"nearest", "adaround", "bitsplit", "brecq", "qdrop", "nwq"}
        Weight rounding. ``brecq`` / ``qdrop`` / ``nwq`` reconstruct blocks / the whole
        network and learn the activation step sizes jointly (``quant.reconstruction``).
    cle : bool
        Cross-layer equalization (eq. 20-22), with high-bias absorption (eq. 23-24) when
        ``high_bias_absorption``.
    bias_correction : {"none", "empirical", "analytic"}
        Sec. 3.3, eq. 27 / eq. 28. Applied after nearest rounding (not with AdaRound or
        Bit-split, which already minimise the output error).
    iterations : int
        Optimisation steps per layer for AdaRound / Bit-split, per block for BRECQ /
        QDrop, for the whole network for NWQ.
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
        reproduces the integer network (see ``quant.scales.snap_scales``).
    power_of_two : bool
        Power-of-two weight scales ``2^k`` (sec. 2.2.2); such scales are not snapped.
    allow_fallback : bool
        ``False`` (default): a requested step that cannot be applied raises ``ValueError``
        naming the step and why (e.g. the model does not trace with torch.fx, so BN folding,
        CLE, analytic bias correction and the quantization of op outputs are impossible;
        CLE finds no layer pair; a BN cannot be folded). ``True``: quantize what can be
        (untraceable models: only the ``nn.Linear`` / ``nn.Conv*`` leaves, weights and
        inputs) and ``warnings.warn`` (:class:`quant.summary.FallbackWarning`) each step
        dropped. Either way :attr:`QuantInfo.summary` lists what is quantized and what
        stays float.
    progress : {"auto", True, False}
        Progress bars for AdaRound / Bit-split (and the sensitivity report): ``"auto"``
        shows them when stderr is a TTY.
    layer_bits : tuple of LayerOverride
        Per-layer bit-widths (``LayerOverride`` or ``(name, w_bits, a_bits)`` tuples, one
        per layer name); names that are not quantizable layers of the model raise
        ``ValueError`` in :func:`quant.quantize`.
    first_last_8bit : bool
        Keep the first and last layer (network order) at 8-bit weights and activations,
        and the network input at 8 bits; ``layer_bits`` entries take precedence.
    quantizer_bits : tuple of QuantizerOverride
        Per-quantizer bit-widths / per-channel choices (``QuantizerOverride`` or ``(name,
        bits[, per_channel])`` tuples), the most specific setting: they win over
        ``layer_bits`` and ``first_last_8bit``. Unknown names, and per-channel activation
        quantizers, raise ``ValueError`` in :func:`quant.quantize`.
        :func:`quant.sensitivity.a16_exceptions` picks the most sensitive activations.
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
    allow_fallback: bool = False
    progress: str | bool = "auto"
    layer_bits: tuple[LayerOverride, ...] = ()
    first_last_8bit: bool = False
    quantizer_bits: tuple[QuantizerOverride, ...] = ()

    def __post_init__(self):
        for name, allowed in _CHOICES.items():
            check_choice("QuantConfig", name, getattr(self, name), allowed)
        for name, (lo, hi) in INT_RANGES.items():
            object.__setattr__(self, name, check_int("QuantConfig", name, getattr(self, name),
                                                     lo, hi))
        for name in _BOOLS:
            object.__setattr__(self, name, check_bool("QuantConfig", name, getattr(self, name)))
        check_number("QuantConfig", "bn_alpha", self.bn_alpha, positive=True)
        check_progress(self.progress, "QuantConfig.progress")
        if not isinstance(self.layer_bits, tuple | list):
            raise ValueError(f"QuantConfig.layer_bits must be a tuple of LayerOverride; got "
                             f"{self.layer_bits!r}")
        overrides = tuple(_layer_override(o) for o in self.layer_bits)
        object.__setattr__(self, "layer_bits", overrides)
        names = [o.name for o in overrides]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"QuantConfig.layer_bits names a layer more than once: "
                             f"{', '.join(map(repr, dup))}")
        if not isinstance(self.quantizer_bits, tuple | list):
            raise fail("QuantConfig", "quantizer_bits", "a tuple of QuantizerOverride",
                       self.quantizer_bits)
        qover = tuple(_quantizer_override(o) for o in self.quantizer_bits)
        object.__setattr__(self, "quantizer_bits", qover)
        names = [o.name for o in qover]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"QuantConfig.quantizer_bits names a quantizer more than once: "
                             f"{', '.join(map(repr, dup))}")
        w_max, a_max = max(self.all_bits("w_bits")), max(self.all_bits("a_bits"))
        check_acc_bits("QuantConfig", w_max, a_max, self.acc_bits, self.mult_bits,
                       product="w_bits + a_bits" if (w_max, a_max) == (self.w_bits, self.a_bits)
                       else "the largest w_bits + a_bits (per-layer bits included)")
        if self.bias_correction != "none" and self.rounding != "nearest":
            raise fail("QuantConfig", "bias_correction", "'none'", self.bias_correction,
                       f"rounding is {self.rounding!r}: Figure 8 applies AdaRound/Bit-split "
                       "*or* bias correction")

    def all_bits(self, kind: str) -> set[int]:
        """Every ``kind`` (``"w_bits"`` / ``"a_bits"``) bit-width a layer may get."""
        bits = {getattr(self, kind)} | {getattr(o, kind) for o in self.layer_bits
                                        if getattr(o, kind) is not None}
        bits |= {o.bits for o in self.quantizer_bits
                 if o.bits is not None and o.is_weight == (kind == "w_bits")}
        return bits | ({8} if self.first_last_8bit else set())

    def replace(self, **changes) -> QuantConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
