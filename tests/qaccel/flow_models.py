"""A tiny user model and data loader for the ``module:factory`` / ``module:loader`` paths of
``qaccel run`` and ``qaccel.flow`` (tests/qaccel is on ``sys.path`` under pytest)."""

import torch
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
