"""A tiny user model and data loader for the ``module:factory`` / ``module:loader`` paths of
``qaccel run`` and ``qaccel.flow``, and a tiny transformer encoder layer for the vector-unit
tests (tests/qaccel is on ``sys.path`` under pytest)."""

import math

import torch
import torch.nn.functional as F
from torch import nn


def factory() -> nn.Module:
    """Conv(1->4, 3x3) - ReLU - global average pool - Linear(4->3), seeded."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def loader():
    """``(calib batches, (x_test, y_test))``: random 6x6 images, 16 test images."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, 1, 6, 6, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    return [x[:16], x[16:24]], (x[24:], y[24:])


def not_a_model():
    return 42


class Encoder(nn.Module):
    """One tiny transformer encoder layer (``d``-wide, FFN ``ff``): single-head attention
    with softmax, residual adds, two LayerNorms, GELU."""

    def __init__(self, d: int = 16, ff: int = 32):
        super().__init__()
        self.d = d
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2, self.act = nn.Linear(d, ff), nn.Linear(ff, d), nn.GELU()

    def forward(self, x):
        att = F.softmax(self.q(x) @ self.k(x).transpose(-2, -1) / math.sqrt(self.d), dim=-1)
        h = self.ln1(x + self.o(att @ self.v(x)))
        return self.ln2(h + self.ff2(self.act(self.ff1(h))))
