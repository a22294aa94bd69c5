"""Uniform quantizers (whitepaper sec. 2.2, eq. 4-8) and the fake-quant module.

- asymmetric (uniform affine, eq. 4-7): ``x_int = clamp(round(x / s) + z; 0, 2^b - 1)``,
  ``x^ = s (x_int - z)``;
- symmetric unsigned (eq. 8b): ``z = 0``, grid ``[0, 2^b - 1]``;
- symmetric signed (eq. 8c): ``z = 0``, grid ``[-2^(b-1), 2^(b-1) - 1]``;
- power-of-two (sec. 2.2.2): a symmetric quantizer whose scale is rounded up to ``2^k``.

Per-tensor or per-channel (``ch_axis``). Rounding is ``torch.round`` (ties to even), as
``np.rint`` in ``sim``. The backward pass is the straight-through estimator of eq. 36-37:
gradient 1 inside ``[q_min, q_max]`` and 0 outside.
"""

from __future__ import annotations

import operator

import torch
from torch import nn

__all__ = ["MODES", "int_grid", "qparams_from_range", "quantize_int", "fake_quantize",
           "Quantizer", "Observer"]

MODES = ("asymmetric", "symmetric")


def int_grid(bits: int, signed: bool) -> tuple[int, int]:
    """Inclusive integer grid ``(n, p)``."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _broadcast(t: torch.Tensor, x: torch.Tensor, ch_axis: int) -> torch.Tensor:
    if t.dim() == 0:
        return t
    shape = [1] * x.dim()
    shape[ch_axis] = -1
    return t.reshape(shape)


def qparams_from_range(lo, hi, bits: int, *, mode: str = "asymmetric", signed: bool = False,
                       power_of_two: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero-point (float tensors holding integers) for the real range ``[lo, hi]``.

    ``asymmetric``: the range is first widened to contain 0 (so 0 is exact),
    ``s = (hi - lo) / (2^b - 1)``, ``z = clamp(round(-lo / s), 0, 2^b - 1)``.
    ``symmetric`` signed: ``s = max(|lo|, |hi|) / (2^(b-1) - 1)``; unsigned:
    ``s = max(hi, 0) / (2^b - 1)``; ``z = 0``. ``power_of_two`` rounds ``s`` up to ``2^k``.
    A zero range gives the scale of the largest channel (or 1.0 if all are zero).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    lo = torch.as_tensor(lo, dtype=torch.float32)
    hi = torch.as_tensor(hi, dtype=torch.float32)
    if not (bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all())):
        raise ValueError(f"range must be finite; got lo={lo.tolist()}, hi={hi.tolist()}")
    lo = torch.minimum(lo, torch.zeros_like(lo))
    hi = torch.maximum(hi, torch.zeros_like(hi))
    if mode == "asymmetric":
        if signed:
            raise ValueError("asymmetric quantizers use the unsigned grid (signed=False)")
        scale = (hi - lo) / float((1 << bits) - 1)
    elif signed:
        scale = torch.maximum(-lo, hi) / float((1 << (bits - 1)) - 1)
    else:
        scale = hi / float((1 << bits) - 1)
    scale = _fix_zero_scale(scale)
    if power_of_two:
        scale = torch.exp2(torch.ceil(torch.log2(scale)))
    if mode == "asymmetric":
        zp = torch.clamp(torch.round(-lo / scale), 0, (1 << bits) - 1)
    else:
        zp = torch.zeros_like(scale)
    return scale, zp


def _fix_zero_scale(scale: torch.Tensor) -> torch.Tensor:
    bad = ~(scale > 0)
    if bool(bad.any()):
        fill = float(scale[~bad].max()) if bool((~bad).any()) else 1.0
        scale = torch.where(bad, torch.full_like(scale, fill), scale)
    return scale


def quantize_int(x: torch.Tensor, scale, zero_point, n: int, p: int,
                 ch_axis: int = 0) -> torch.Tensor:
    """``clamp(round(x / s) + z; n, p)`` as a float tensor of integers (no gradient).
    ``ValueError`` if ``x`` holds NaN (which has no integer code)."""
    if bool(torch.isnan(x).any()):
        raise ValueError(f"cannot quantize NaN to an integer ({int(torch.isnan(x).sum())} "
                         f"NaN value(s) in a tensor of shape {tuple(x.shape)})")
    s = _broadcast(torch.as_tensor(scale, dtype=x.dtype), x, ch_axis)
    z = _broadcast(torch.as_tensor(zero_point, dtype=x.dtype), x, ch_axis)
    return torch.clamp(torch.round(x / s) + z, n, p)


def fake_quantize(x: torch.Tensor, scale, zero_point, n: int, p: int,
                  ch_axis: int = 0) -> torch.Tensor:
    """``s (clamp(round(x / s) + z; n, p) - z)`` (eq. 7) with the STE gradient of eq. 37."""
    s = _broadcast(torch.as_tensor(scale, dtype=x.dtype, device=x.device), x, ch_axis)
    z = _broadcast(torch.as_tensor(zero_point, dtype=x.dtype, device=x.device), x, ch_axis)
    xq = s * (torch.clamp(torch.round(x / s) + z, n, p) - z)
    if not x.requires_grad:
        return xq
    q_min, q_max = s * (n - z), s * (p - z)
    inside = (x >= q_min) & (x <= q_max)
    # forward: xq; backward: 1 inside the grid limits, 0 outside (eq. 37)
    return xq.detach() + (x - x.detach()) * inside


class Observer:
    """Collects what range setting needs from calibration batches: running min/max (per
    channel along ``ch_axis`` if given), a seeded random subsample of values (MSE), and
    optionally whole rows (cross-entropy on logits)."""

    def __init__(self, cap: int = 65536, keep_rows: bool = False, seed: int = 0,
                 ch_axis: int | None = None):
        self.cap = int(cap)
        self.keep_rows = keep_rows
        self.ch_axis = ch_axis
        self.gen = torch.Generator().manual_seed(seed)
        self.min = None
        self.max = None
        self.samples: list[torch.Tensor] = []
        self.rows: list[torch.Tensor] = []
        self.n_seen = 0

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        if self.ch_axis is None:
            lo, hi = x.min(), x.max()
        else:
            xt = x.transpose(0, self.ch_axis).reshape(x.shape[self.ch_axis], -1)
            lo, hi = xt.min(1).values, xt.max(1).values
        self.min = lo if self.min is None else torch.minimum(self.min, lo)
        self.max = hi if self.max is None else torch.maximum(self.max, hi)
        flat = x.reshape(-1)
        if flat.numel() > self.cap:
            idx = torch.randperm(flat.numel(), generator=self.gen)[:self.cap]
            flat = flat[idx]
        self.samples.append(flat.clone())
        if self.keep_rows:
            self.rows.append(x.reshape(-1, x.shape[-1]).clone())
        self.n_seen += 1

    def values(self) -> torch.Tensor:
        v = torch.cat(self.samples)
        if v.numel() > self.cap:
            v = v[torch.randperm(v.numel(), generator=self.gen)[:self.cap]]
        return v


def _check_bits(bits) -> int:
    try:
        b = operator.index(bits)
    except TypeError:
        b = None
    if isinstance(bits, bool) or b is None or not 2 <= b <= 32:
        raise ValueError(f"bits must be an integer in [2, 32], not {bits!r}")
    return b


class Quantizer(nn.Module):
    """Fake-quantizer module (eq. 7 forward, STE backward).

    Parameters: ``bits``; ``mode`` (``asymmetric`` | ``symmetric``); ``signed`` grid;
    ``per_channel`` with ``ch_axis``; ``power_of_two`` scales. The range is set with
    :meth:`set_range`; until then (or with ``enabled = False``) it is the identity.
    ``observer`` (an :class:`Observer`) sees every input while set.
    """

    def __init__(self, bits: int, *, mode: str = "asymmetric", signed: bool = False,
                 per_channel: bool = False, ch_axis: int = 0, power_of_two: bool = False,
                 role: str = "act"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if mode == "asymmetric" and signed:
            raise ValueError("asymmetric quantizers use the unsigned grid (signed=False)")
        self.bits = _check_bits(bits)
        self.mode = mode
        self.signed = bool(signed)
        self.per_channel = bool(per_channel)
        self.ch_axis = int(ch_axis)
        self.power_of_two = bool(power_of_two)
        self.role = role
        self.enabled = True
        self.observer: Observer | None = None
        self.register_buffer("scale", None)
        self.register_buffer("zero_point", None)

    @property
    def grid(self) -> tuple[int, int]:
        return int_grid(self.bits, self.signed)

    def set_bits(self, bits: int) -> None:
        """Change the bit-width; the range (scale, zero-point) is cleared."""
        self.bits = _check_bits(bits)
        self.scale = None
        self.zero_point = None

    @property
    def initialized(self) -> bool:
        return self.scale is not None

    def set_range(self, lo, hi) -> None:
        """Set scale/zero-point from the real range (tensors per channel or scalars)."""
        scale, zp = qparams_from_range(lo, hi, self.bits, mode=self.mode, signed=self.signed,
                                       power_of_two=self.power_of_two)
        self.set_qparams(scale, zp)

    def set_qparams(self, scale, zero_point) -> None:
        self.scale = torch.as_tensor(scale, dtype=torch.float32).detach().clone()
        self.zero_point = torch.as_tensor(zero_point, dtype=torch.float32).detach().clone()

    def range_limits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Real grid limits ``(q_min, q_max) = (s (n - z), s (p - z))``."""
        n, p = self.grid
        return self.scale * (n - self.zero_point), self.scale * (p - self.zero_point)

    def forward(self, x):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return x
        if self.observer is not None:
            self.observer(x)
        if not self.enabled or self.scale is None:
            return x
        n, p = self.grid
        return fake_quantize(x, self.scale, self.zero_point, n, p, self.ch_axis)

    def to_int(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes (int64) of ``x``; ``ValueError`` for NaN inputs."""
        n, p = self.grid
        return quantize_int(x.detach().float(), self.scale, self.zero_point, n, p,
                            self.ch_axis).to(torch.int64)

    def extra_repr(self) -> str:
        kind = "power-of-two " if self.power_of_two else ""
        gran = f"per-channel(axis={self.ch_axis})" if self.per_channel else "per-tensor"
        s = f"{self.role}, {self.bits}-bit {kind}{self.mode} {'signed' if self.signed else 'unsigned'}, {gran}"  # noqa: E501
        if self.scale is not None and self.scale.dim() == 0:
            s += f", scale={float(self.scale):.4g}, zero_point={int(self.zero_point)}"
        return s


def scale_is_power_of_two(scale: torch.Tensor) -> bool:
    """True if every scale is exactly ``2^k``."""
    m = torch.log2(torch.as_tensor(scale, dtype=torch.float64))
    return bool(torch.all(m == torch.round(m)))

