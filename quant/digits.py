"""Reference models on real data: scikit-learn's bundled handwritten digits (8x8, 10 classes).

No downloads are possible, so the quantization experiments run on ``sklearn.datasets.
load_digits`` (1797 real 8x8 greyscale digits). This module provides

- :func:`load_split` -- a deterministic, stratified train / held-out test split
  (images scaled to [0, 1], shape ``(N, 1, 8, 8)``);
- :func:`digits_cnn` -- a small CNN with Conv-BN-ReLU blocks, max-pooling and a linear head;
- :func:`digits_mobilenet` -- a MobileNet-style depthwise-separable CNN with Conv-BN-ReLU6;
- :func:`train` -- deterministic CPU training (``torch.manual_seed``, one thread, fixed
  shuffling generator), a few seconds per model;
- :func:`get_model` -- ``(model, calib_loader, test_set)`` with the trained FP32 model in
  eval mode, a calibration loader over a few hundred *training* images (yields image
  tensors, so ``quant.quantize(model, calib_loader, cfg)`` feeds them as ``model(x)``) and
  the held-out test set ``(images, labels)``. Weights are cached under
  ``build/models/<name>-<hash>.pt``, keyed by a hash of architecture + recipe + split;
- :func:`evaluate` -- top-1 accuracy in percent.

Both models are plain ``nn.Sequential`` of standard modules, so torch.fx traces them
(BN folding and CLE apply) and the exporter sees ordinary Conv2d / BatchNorm2d / ReLU /
ReLU6 / MaxPool2d / AdaptiveAvgPool2d / Flatten / Linear layers.

``python -m qaccel.quant.digits`` trains (or loads) both models and prints their FP32 accuracy.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / "build" / "models"

SPLIT_SEED = 0
TEST_FRACTION = 0.3


@dataclass(frozen=True)
class Recipe:
    """Training recipe; part of the cache key."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0


RECIPES = {"digits_cnn": Recipe(), "digits_mobilenet": Recipe(epochs=40)}


def load_split(seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION):
    """Deterministic stratified split of sklearn's digits.

    Returns ``(x_train, y_train, x_test, y_test)``: float32 images in [0, 1] of shape
    ``(N, 1, 8, 8)`` and int64 labels. The split depends only on ``seed``.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    rng = np.random.RandomState(seed)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_idx.append(idx[: int(round(len(idx) * test_fraction))])
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[np.concatenate(test_idx)] = True
    tr, te = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    return (torch.from_numpy(x[tr]), torch.from_numpy(y[tr]),
            torch.from_numpy(x[te]), torch.from_numpy(y[te]))


def digits_cnn() -> nn.Sequential:
    """Small CNN: 3 x (Conv3x3-BN-ReLU), one 2x2 max-pool, global average pool, Linear."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 10),
    )


def _dw_sep(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in), nn.ReLU6(),
        nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU6(),
    ]


def digits_mobilenet() -> nn.Sequential:
    """MobileNet-V1-style: Conv3x3-BN-ReLU6 stem, 3 depthwise-separable blocks
    (depthwise 3x3 -BN-ReLU6, pointwise 1x1 -BN-ReLU6), global average pool, Linear."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        *_dw_sep(16, 32, 1),
        *_dw_sep(32, 64, 2),
        *_dw_sep(64, 64, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 10),
    )


ARCHS = {"digits_cnn": digits_cnn, "digits_mobilenet": digits_mobilenet}


def _cache_key(name: str, recipe: Recipe) -> str:
    blob = json.dumps({
        "arch": repr(ARCHS[name]()),
        "recipe": asdict(recipe),
        "split": [SPLIT_SEED, TEST_FRACTION],
        "v": 1,
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_path(name: str, recipe: Recipe | None = None) -> pathlib.Path:
    recipe = recipe or RECIPES[name]
    return CACHE_DIR / f"{name}-{_cache_key(name, recipe)}.pt"


def train(name: str, recipe: Recipe | None = None, *, verbose: bool = False) -> nn.Module:
    """Train ``ARCHS[name]`` deterministically on CPU (one thread); returns it in eval mode."""
    recipe = recipe or RECIPES[name]
    x_tr, y_tr, _, _ = load_split()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(recipe.seed)
        model = ARCHS[name]()
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr,
                                weight_decay=recipe.weight_decay)
        steps = recipe.epochs * ((len(x_tr) + recipe.batch_size - 1) // recipe.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
        gen = torch.Generator().manual_seed(recipe.seed)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for epoch in range(recipe.epochs):
            perm = torch.randperm(len(x_tr), generator=gen)
            total = 0.0
            for i in range(0, len(x_tr), recipe.batch_size):
                idx = perm[i:i + recipe.batch_size]
                xb = x_tr[idx]
                # light deterministic augmentation: random 1-pixel shifts
                sh = torch.randint(-1, 2, (2,), generator=gen).tolist()
                xb = torch.roll(xb, shifts=(sh[0], sh[1]), dims=(2, 3))
                loss = loss_fn(model(xb), y_tr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            if verbose:
                print(f"  [{name}] epoch {epoch + 1}/{recipe.epochs} loss {total / len(x_tr):.4f}")
    finally:
        torch.set_num_threads(prev_threads)
    return model.eval()


def load_or_train(name: str, *, retrain: bool = False, verbose: bool = False) -> nn.Module:
    """The trained FP32 model, from ``build/models`` if cached (else trained and cached)."""
    path = cache_path(name)
    model = ARCHS[name]()
    if path.exists() and not retrain:
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    model = train(name, verbose=verbose)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{id(model)}")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # atomic: parallel test workers never read half a file
    return model


@torch.no_grad()
def evaluate(model: nn.Module, test_set, batch_size: int = 512) -> float:
    """Top-1 accuracy (%) of ``model`` on ``test_set = (images, labels)``."""
    x, y = test_set
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    return 100.0 * correct / len(x)


def calib_images(n: int = 256, seed: int = 0) -> torch.Tensor:
    """``n`` training images (a fixed random subset) for calibration."""
    x_tr, _, _, _ = load_split()
    idx = torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(seed))[:n]
    return x_tr[idx]


def calib_loader(n: int = 256, batch_size: int = 64, seed: int = 0):
    """DataLoader over :func:`calib_images`, yielding image tensors (no labels)."""
    from torch.utils.data import DataLoader

    return DataLoader(calib_images(n, seed), batch_size=batch_size, shuffle=False)


def get_model(name: str = "digits_cnn", *, n_calib: int = 256, verbose: bool = False):
    """``(model, calib_loader, test_set)`` for ``name`` in ``ARCHS``.

    ``model`` is the trained FP32 network (eval mode), ``calib_loader`` yields batches of
    ``n_calib`` training images, ``test_set`` is the held-out ``(images, labels)``.
    """
    if name not in ARCHS:
        raise ValueError(f"name: unknown digits model {name!r}; choose from {sorted(ARCHS)}")
    model = load_or_train(name, verbose=verbose)
    _, _, x_te, y_te = load_split()
    test_set = (x_te, y_te)
    if verbose:
        print(f"[digits] {name}: FP32 test accuracy {evaluate(model, test_set):.2f}% "
              f"on {len(x_te)} held-out images")
    return model, calib_loader(n_calib), test_set


def main() -> int:
    torch.set_num_threads(1)
    for name in ARCHS:
        get_model(name, verbose=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
