"""Small random models for the quant tests (fast on one core)."""

import torch
import torch.nn.functional as F
from torch import nn


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) - 0.5)
    return model.eval()


class ResNetish(nn.Module):
    """conv-BN-ReLU, depthwise-BN-ReLU6, pointwise, residual add + ReLU, max pool,
    avg pool, global average pool, flatten, linear."""

    def __init__(self, c=8, classes=5):
        super().__init__()
        self.c1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(c)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.b2 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1)
        self.pool = nn.MaxPool2d(2)
        self.ap = nn.AvgPool2d(2)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        h = F.relu(self.b1(self.c1(x)))
        y = F.relu6(self.b2(self.dw(h)))
        z = torch.relu(h + self.pw(y))
        z = self.ap(self.pool(z))
        z = F.adaptive_avg_pool2d(z, 1)
        return self.fc(torch.flatten(z, 1))


def resnetish(seed=0, c=8):
    torch.manual_seed(seed)
    return randomize_bn(ResNetish(c), seed)


def seq_cnn(seed=0):
    """Sequential conv-BN-ReLU -> depthwise-BN-ReLU -> pointwise-BN-ReLU -> GAP -> linear
    (CLE chains and depthwise layers)."""
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    return randomize_bn(m, seed)


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace this."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 12)
        self.b = nn.Linear(12, 3)
        self.c = nn.Conv1d(2, 4, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        if h.sum() > 0:          # data-dependent branch
            h = h * 1.0
        y = self.b(h)
        return y + self.c(x.reshape(x.shape[0], 2, 3)).mean((1, 2))[:, None]


class KwargModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x, scale=None):
        y = self.fc2(torch.relu(self.fc1(x)))
        return y if scale is None else y * scale


@torch.no_grad()
def calibrate_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set BN running statistics to the exact batch statistics of ``x`` (so the BN
    parameters describe the real pre-activation distribution, as in a trained model)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    model(x)
    return model.eval()
