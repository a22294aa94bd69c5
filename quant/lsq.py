"""LSQ (Esser et al. 2020) quantizers: learnable step size with LSQ's gradient scale and a
learnable zero-point (whitepaper sec. 4.1, eq. 37-40), for QAT (``quant.qat``) and the
activation step sizes of BRECQ / QDrop / NWQ (``quant.reconstruction``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .quantizers import Quantizer, _broadcast, fake_quantize

__all__ = ["LsqQuantizer", "lsq_grad_scale"]


def lsq_grad_scale(numel: int, q_p: int) -> float:
    """LSQ's gradient scale ``g = 1 / sqrt(N Q_p)`` (Esser et al. 2020, sec. 2.2).

    It balances the step size's update against the weights' under SGD. Adam (what
    ``quant.train_qat`` and the reconstruction loops use) divides every parameter's
    gradient by its own running RMS, so a constant ``g`` leaves Adam's updates unchanged
    (up to Adam's ``eps``); the step sizes then move by about the learning rate per step,
    as the whitepaper's sec. 4.4 notes for adaptive optimizers."""
    return 1.0 / math.sqrt(max(int(numel), 1) * max(int(q_p), 1))


def _grad_scale(t: torch.Tensor, g: float) -> torch.Tensor:
    """Value ``t``, gradient scaled by ``g``."""
    return (t - t * g).detach() + t * g


def _round_ste(t: torch.Tensor) -> torch.Tensor:
    """Value ``round(t)``, gradient 1 (straight-through estimator)."""
    return t + (torch.round(t) - t).detach()


class LsqQuantizer(Quantizer):
    """A :class:`Quantizer` whose scale (``step``) and zero-point (``offset``) are
    ``nn.Parameter`` s; ``scale`` / ``zero_point`` read them as the plain quantizer's.

    Forward: exactly ``Quantizer``'s fake quantization with ``(scale, round(offset))``.
    Backward: STE for the input (eq. 37), eq. 38 for the scale, eq. 40 for the offset,
    both multiplied by LSQ's gradient scale (:func:`lsq_grad_scale`). ``zero_point`` is
    the rounded, clamped offset, so export reads integers. A ``role="fixed"`` quantizer
    (softmax output: scale ``2^-bits``, which the integer softmax requires) keeps its scale.
    """

    def __init__(self, q: Quantizer, *, learn_scale: bool = True, learn_offset: bool = True):
        super().__init__(q.bits, mode=q.mode, signed=q.signed, per_channel=q.per_channel,
                         ch_axis=q.ch_axis, power_of_two=q.power_of_two, role=q.role)
        if q.scale is None:
            raise ValueError("LsqQuantizer needs a calibrated quantizer (scale is None)")
        self.enabled = q.enabled
        del self._buffers["scale"]
        del self._buffers["zero_point"]
        self.step = nn.Parameter(q.scale.detach().clone(),
                                 requires_grad=learn_scale and not q.power_of_two
                                 and q.role != "fixed")
        self.offset = nn.Parameter(q.zero_point.detach().clone(),
                                   requires_grad=learn_offset and q.mode == "asymmetric")

    @property
    def scale(self) -> torch.Tensor:
        """The learned step size ``step`` (no gradient; export and range code read it)."""
        return self.step.detach()

    @scale.setter
    def scale(self, value) -> None:
        with torch.no_grad():
            self.step.copy_(torch.as_tensor(value, dtype=torch.float32))

    @property
    def zero_point(self) -> torch.Tensor:
        """``round(clamp(offset, n, p))`` (no gradient; see :meth:`_zero_point_ste`)."""
        return self._zero_point_ste().detach()

    def _zero_point_ste(self) -> torch.Tensor:
        n, p = self.grid
        return _round_ste(torch.clamp(self.offset, n, p))

    @zero_point.setter
    def zero_point(self, value) -> None:
        with torch.no_grad():
            self.offset.copy_(torch.as_tensor(value, dtype=torch.float32))

    def set_qparams(self, scale, zero_point) -> None:
        with torch.no_grad():
            self.step.copy_(torch.as_tensor(scale, dtype=torch.float32))
            self.offset.copy_(torch.as_tensor(zero_point, dtype=torch.float32))

    def set_bits(self, bits: int) -> None:
        raise ValueError("LsqQuantizer: set the bit-widths in QatConfig.quant before "
                         "prepare_qat")

    def _learned_scale(self, g: float) -> torch.Tensor:
        """The scale on the gradient path: ``step`` with LSQ's gradient scale ``g``
        (a subclass may multiply it by a factor that is learned too, e.g. a BN scale)."""
        return _grad_scale(self.step, g)

    def forward(self, x):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return x
        if self.observer is not None:
            self.observer(x)
        if not self.enabled:
            return x
        n, p = self.grid
        z = self._zero_point_ste()
        xq = fake_quantize(x.detach(), self.scale, z.detach(), n, p, self.ch_axis)
        if not torch.is_grad_enabled() or not (x.requires_grad or self.step.requires_grad
                                               or self.offset.requires_grad):
            return xq
        if self.role == "weight":
            numel = x.numel() // (x.shape[self.ch_axis] if self.per_channel else 1)
        else:
            numel = x[0].numel() if x.dim() > 1 else x.numel()
        g = lsq_grad_scale(numel, p)
        s = _broadcast(self._learned_scale(g), x, self.ch_axis)
        zb = _broadcast(_grad_scale(z, g), x, self.ch_axis)
        y = s * (torch.clamp(_round_ste(x / s) + zb, n, p) - zb)
        return xq + (y - y.detach())
