"""Fake-quantized modules the pipeline puts into a model (whitepaper Figure 4b).

- :class:`QuantLayer` wraps an ``nn.Linear`` / ``nn.Conv1d/2d/3d``: weight quantizer
  (symmetric signed, per tensor or per output channel), bias quantized on the accumulator
  grid ``s_w * s_x`` (as the integer network stores it), fused ReLU/ReLU6 and output
  quantizer (graph mode) or an input quantizer (leaf mode, for untraceable models).
- :class:`QuantAct`: SiLU / Hardswish / LeakyReLU / stand-alone ReLU6 / GELU + output
  quantizer (a table op of the vector unit).
- :class:`QuantLayerNorm`, :class:`QuantSoftmax` (vector unit) and :class:`QuantMatmul`
  (activation x activation, e.g. QK^T and AV) for transformers.
- :class:`QuantAdd` (residual add + fused ReLU + output quantizer) and
  :class:`QuantAvgPool` (average pooling + output quantizer): the explicit requantizations
  of the integer network.

Each has two forward passes: the float32 straight-through one (training, calibration) and,
while :func:`quant.exact_mode` has set ``exact`` to the exported layer's :class:`IntOp`,
the integer network's own arithmetic (``quant.intops``), equal to the executor's integers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .intops import IntOp
from .quantizers import Quantizer, fake_quantize

__all__ = ["QuantLayer", "QuantAdd", "QuantAvgPool", "QuantAct", "QuantLayerNorm",
           "QuantSoftmax", "QuantMatmul", "masked_softmax", "TABLE_ACTS", "ACTS",
           "LINEAR_TYPES", "apply_act",
           "is_quantizable", "act_quantizer", "wrap_leaves", "quant_layers", "act_quantizers",
           "quant_state"]

ACTS = ("none", "relu", "relu6")
LINEAR_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_quantizable(m) -> bool:
    """An ``nn.Linear`` / ``nn.Conv*`` (not transposed, zero padding) :class:`QuantLayer`
    can wrap."""
    return isinstance(m, LINEAR_TYPES) and not getattr(m, "transposed", False) \
        and getattr(m, "padding_mode", "zeros") == "zeros"


def apply_act(y: torch.Tensor, act: str) -> torch.Tensor:
    if act == "relu":
        return F.relu(y)
    if act == "relu6":
        return F.relu6(y)
    return y


class QuantLayer(nn.Module):
    """A quantized ``nn.Linear`` / ``nn.ConvNd``.

    ``forward``: ``[input_quantizer] -> linear/conv with W^ and b^ -> act ->
    [output_quantizer]``. ``W^ = s_w * W_int`` where ``W_int`` is round-to-nearest of the
    float weight, or the integers set by :meth:`set_integer_weight` (AdaRound/Bit-split).
    Once ``in_scale`` is set, the bias is rounded to the grid ``s_w * s_x``.
    """

    def __init__(self, module: nn.Module, w_bits: int, *, per_channel: bool = False,
                 power_of_two: bool = False, act: str = "none"):
        super().__init__()
        if not isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            raise TypeError(f"QuantLayer wraps nn.Linear / nn.ConvNd, not "
                            f"{type(module).__name__}")
        if act not in ACTS:
            raise ValueError(f"act must be one of {ACTS}, not {act!r}")
        self.module = module
        self.act = act
        self.weight_quantizer = Quantizer(w_bits, mode="symmetric", signed=True,
                                          per_channel=per_channel, ch_axis=0,
                                          power_of_two=power_of_two, role="weight")
        self.input_quantizer: Quantizer | None = None
        self.output_quantizer: Quantizer | None = None
        self.quantize_bias = False
        self.register_buffer("in_scale", None)
        self.register_buffer("w_int", None)

    # ---- weights ---------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return "linear" if isinstance(self.module, nn.Linear) else "conv"

    def weight_scale(self) -> torch.Tensor:
        """``s_w`` (0-d per tensor, ``[C_out]`` per channel)."""
        return self.weight_quantizer.scale

    def _scale_view(self, s: torch.Tensor) -> torch.Tensor:
        w = self.module.weight
        return s.reshape((-1,) + (1,) * (w.dim() - 1)) if s.dim() else s

    def weight_int(self) -> torch.Tensor:
        """Integer weights (int64) exactly as the forward pass uses them."""
        if self.w_int is not None:
            return self.w_int.to(torch.int64)
        return self.weight_quantizer.to_int(self.module.weight)

    def set_integer_weight(self, w_int: torch.Tensor, scale=None) -> None:
        """Fix the integer weights (e.g. from AdaRound / Bit-split); optionally the scale."""
        w_int = torch.as_tensor(w_int).detach()
        if tuple(w_int.shape) != tuple(self.module.weight.shape):
            raise ValueError(f"w_int must have shape {tuple(self.module.weight.shape)}, got "
                             f"{tuple(w_int.shape)}")
        n, p = self.weight_quantizer.grid
        if w_int.numel() and (int(w_int.min()) < n or int(w_int.max()) > p):
            raise ValueError(f"w_int values must be in [{n}, {p}]")
        if scale is not None:
            s = torch.as_tensor(scale, dtype=torch.float32).detach().clone()
            if not self.weight_quantizer.per_channel and s.numel() > 1:
                if not bool(torch.all(s == s.reshape(-1)[0])):
                    raise ValueError("per-tensor layer given different per-channel scales")
                s = s.reshape(-1)[0].clone()
            self.weight_quantizer.set_qparams(s, torch.zeros_like(s))
        self.w_int = w_int.to(torch.float32).clone()

    def clear_integer_weight(self) -> None:
        self.w_int = None

    def quantized_weight(self) -> torch.Tensor:
        wq = self.weight_quantizer
        if not wq.enabled or wq.scale is None:
            return self.module.weight
        if self.w_int is not None:
            return self._scale_view(wq.scale) * self.w_int
        return wq(self.module.weight)

    def quantized_bias(self, weight_on: bool = True) -> torch.Tensor | None:
        b = self.module.bias
        if b is None or not self.quantize_bias or self.in_scale is None or not weight_on:
            return b
        acc_scale = self.weight_scale() * self.in_scale
        # 32-bit accumulator grid: round only (clamping is checked on export)
        return fake_quantize(b, acc_scale, torch.zeros_like(acc_scale), -(2**62), 2**62)

    def linear_op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None):
        if isinstance(self.module, nn.Linear):
            return F.linear(x, w, b)
        return self.module._conv_forward(x, w, b)

    #: exact mode (:func:`quant.exact_mode`): the exported layer as a :class:`IntOp`
    exact: IntOp | None = None

    def forward(self, x):
        if self.exact is not None:
            return self.output_quantizer(self.exact(x))
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        w_on = self.weight_quantizer.enabled and self.weight_quantizer.scale is not None
        y = self.linear_op(x, self.quantized_weight(), self.quantized_bias(w_on))
        y = apply_act(y, self.act)
        if self.output_quantizer is not None:
            y = self.output_quantizer(y)
        return y

    def extra_repr(self) -> str:
        return f"act={self.act}, quantize_bias={self.quantize_bias}"


class QuantAdd(nn.Module):
    """``output_quantizer(act(a + b))``: a residual add with explicit requantization."""

    def __init__(self, a_bits: int, *, signed: bool = False, act: str = "none"):
        super().__init__()
        self.act = act
        self.output_quantizer = act_quantizer(a_bits, signed)

    exact: IntOp | None = None

    def forward(self, a, b):
        if self.exact is not None:
            return self.output_quantizer(self.exact(a, b))
        return self.output_quantizer(apply_act(a + b, self.act))


class QuantAvgPool(nn.Module):
    """Average pooling followed by an output quantizer. ``kind`` is ``"avgpool2d"``
    (``kernel``, ``stride``, ``padding = 0``) or ``"global"`` (mean over H, W)."""

    def __init__(self, a_bits: int, *, kind: str, kernel=None, stride=None,
                 keepdim: bool = True, signed: bool = False):
        super().__init__()
        if kind not in ("avgpool2d", "global"):
            raise ValueError(f"kind must be 'avgpool2d' or 'global', not {kind!r}")
        self.kind = kind
        self.kernel = kernel
        self.stride = stride if stride is not None else kernel
        self.keepdim = keepdim
        self.window: int | None = None
        self.output_quantizer = act_quantizer(a_bits, signed)

    exact: IntOp | None = None

    def forward(self, x):
        if self.exact is not None:
            return self.output_quantizer(self.exact(x))
        if self.kind == "global":
            self.window = int(x.shape[-2] * x.shape[-1])     # for snap_scales
            y = x.mean(dim=(-2, -1), keepdim=self.keepdim)
        else:
            y = F.avg_pool2d(x, self.kernel, self.stride)
        return self.output_quantizer(y)


#: elementwise activations exported as vector-unit tables (``sim.vector.LUT_FUNCS``)
TABLE_ACTS = {"silu": lambda x, p: F.silu(x),
              "hardswish": lambda x, p: F.hardswish(x),
              "leaky_relu": lambda x, p: F.leaky_relu(x, p.get("negative_slope", 0.01)),
              "relu6": lambda x, p: F.relu6(x),
              "gelu": lambda x, p: F.gelu(x),
              "tanh": lambda x, p: torch.tanh(x)}


class QuantAct(nn.Module):
    """``output_quantizer(f(x))`` for an elementwise activation ``f`` (a key of
    :data:`TABLE_ACTS`, with ``params`` such as LeakyReLU's ``negative_slope``); exported
    as a ``lut`` layer (a table over the input codes, ``sim.vector.lut_table``)."""

    exact: IntOp | None = None

    def __init__(self, func: str, a_bits: int, *, signed: bool = False, **params):
        super().__init__()
        if func not in TABLE_ACTS:
            raise ValueError(f"func must be one of {sorted(TABLE_ACTS)}, not {func!r}")
        self.func = func
        self.params = dict(params)
        self.input_quantizer: Quantizer | None = None
        self.output_quantizer = act_quantizer(a_bits, signed)

    def forward(self, x):
        if self.exact is not None:
            return self.output_quantizer(self.exact(x))
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        return self.output_quantizer(TABLE_ACTS[self.func](x, self.params))

    def extra_repr(self) -> str:
        return f"func={self.func}" + "".join(f", {k}={v}" for k, v in self.params.items())


class QuantLayerNorm(nn.Module):
    """LayerNorm over the last axis on the vector unit: ``gamma`` quantized symmetric
    per tensor (``w_bits``), ``beta`` on the grid ``s_gamma 2^-LN_FRAC_BITS``, output
    quantizer. Exported as a ``layernorm`` layer (``sim.vector.i_layernorm``)."""

    exact: IntOp | None = None

    def __init__(self, module: nn.LayerNorm, w_bits: int, a_bits: int, *, signed=False):
        super().__init__()
        if len(module.normalized_shape) != 1:
            raise ValueError("QuantLayerNorm normalises the last axis only, not "
                             f"{tuple(module.normalized_shape)}")
        self.module = module
        self.weight_quantizer = Quantizer(w_bits, mode="symmetric", signed=True,
                                          role="weight")
        g = self.gamma().detach()
        self.weight_quantizer.set_range(g.min(), g.max())
        self.output_quantizer = act_quantizer(a_bits, signed)

    def gamma(self) -> torch.Tensor:
        w = self.module.weight
        return w if w is not None else torch.ones(self.module.normalized_shape)

    def beta(self) -> torch.Tensor:
        b = self.module.bias
        return b if b is not None else torch.zeros(self.module.normalized_shape)

    def forward(self, x):
        if self.exact is not None:
            return self.output_quantizer(self.exact(x))
        y = F.layer_norm(x, self.module.normalized_shape, self.weight_quantizer(self.gamma()),
                         self.beta(), self.module.eps)
        return self.output_quantizer(y)


def masked_softmax(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis leaving out positions where ``mask`` (broadcast) is 0 /
    False (what ``scaled_dot_product_attention`` does with a boolean ``attn_mask``)."""
    return F.softmax(x.masked_fill(mask == 0, float("-inf")), dim=-1)


class QuantSoftmax(nn.Module):
    """Softmax over the last axis on the vector unit (``sim.vector.i_softmax``); the output
    grid is fixed: unsigned ``a_bits``, scale ``2^-a_bits``, zero-point 0."""

    exact: IntOp | None = None

    def __init__(self, a_bits: int):
        super().__init__()
        self.output_quantizer = Quantizer(a_bits, mode="asymmetric", signed=False,
                                          role="fixed")
        self.output_quantizer.set_qparams(torch.tensor(2.0 ** -a_bits), torch.tensor(0.0))

    def forward(self, x, mask=None):
        if self.exact is not None:
            return self.output_quantizer(self.exact(x) if mask is None
                                         else self.exact(x, mask))
        y = F.softmax(x, dim=-1) if mask is None else masked_softmax(x, mask)
        return self.output_quantizer(y)


class QuantMatmul(nn.Module):
    """``output_quantizer(alpha * (a @ b))`` for two activations (QK^T, AV): exported as a
    ``matmul`` layer with ``alpha`` folded into its ``(M, S)``."""

    exact: IntOp | None = None

    def __init__(self, a_bits: int, *, signed: bool = False, alpha: float = 1.0):
        super().__init__()
        self.alpha = float(alpha)
        self.output_quantizer = act_quantizer(a_bits, signed)

    def forward(self, a, b):
        if self.exact is not None:
            return self.output_quantizer(self.exact(a, b))
        y = torch.matmul(a, b)
        return self.output_quantizer(y * self.alpha if self.alpha != 1.0 else y)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:.6g}"


def act_quantizer(a_bits: int, signed: bool) -> Quantizer:
    """An activation quantizer: signed symmetric, or unsigned asymmetric."""
    if signed:
        return Quantizer(a_bits, mode="symmetric", signed=True, role="act")
    return Quantizer(a_bits, mode="asymmetric", signed=False, role="act")


def wrap_leaves(model: nn.Module, cfg) -> list[str]:
    """Leaf mode (untraceable models): replace every quantizable child module of ``model``
    (in place) by a :class:`QuantLayer` with a weight and an input quantizer; returns
    their module paths."""
    names = []
    for name, m in list(model.named_modules()):
        for child_name, child in list(m.named_children()):
            if is_quantizable(child):
                ql = QuantLayer(child, cfg.w_bits, per_channel=cfg.per_channel,
                                power_of_two=cfg.power_of_two)
                ql.input_quantizer = act_quantizer(cfg.a_bits, cfg.a_signed)
                setattr(m, child_name, ql)
                names.append(f"{name}.{child_name}" if name else child_name)
    return names


def quant_layers(model: nn.Module) -> list[tuple[str, QuantLayer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLayer)]


def act_quantizers(model: nn.Module) -> list[tuple[str, Quantizer]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, Quantizer) and m.role == "act"]


class quant_state:  # noqa: N801 - used as a context manager
    """Temporarily enable/disable weight and/or activation quantizers of ``model``."""

    def __init__(self, model: nn.Module, *, weights: bool | None = None,
                 acts: bool | None = None):
        self.model = model
        self.weights = weights
        self.acts = acts
        self.saved: list[tuple[Quantizer, bool]] = []

    def __enter__(self):
        for m in self.model.modules():
            if isinstance(m, Quantizer):
                want = self.weights if m.role == "weight" else self.acts
                if want is not None:
                    self.saved.append((m, m.enabled))
                    m.enabled = want
        return self.model

    def __exit__(self, *exc):
        for m, e in self.saved:
            m.enabled = e
        return False
