"""Reference models on real data: scikit-learn's bundled handwritten digits (8x8, 10 classes).

No downloads are possible, so the quantization experiments run on ``sklearn.datasets.
load_digits`` (1797 real 8x8 greyscale digits). This module provides

- :func:`load_split` -- a deterministic, stratified train / held-out test split
  (images scaled to [0, 1], shape ``(N, 1, 8, 8)``);
- :func:`digits_cnn` -- a small CNN with Conv-BN-ReLU blocks, max-pooling and a linear head;
- :func:`digits_mobilenet` -- a MobileNet-style depthwise-separable CNN with Conv-BN-ReLU6;
- :func:`digits_vit` -- a small ViT-style encoder (:class:`RowViT`): the 8 image rows are
  the tokens, pre-LN blocks with multi-head attention and a GELU FFN;
- :func:`get_model` -- ``(model, calib_loader, test_set)`` with the **shipped** trained FP32
  model in eval mode, a calibration loader over a few hundred *training* images (yields
  image tensors, so ``quant.quantize(model, calib_loader, cfg)`` feeds them as
  ``model(x)``) and the held-out test set ``(images, labels)``;
- :func:`load_model` -- a trained model from a models directory (default: the shipped one);
- :func:`train` / :func:`save_models` -- the recipe that produced the shipped weights
  (``qaccel train`` runs it and writes to the workspace);
- :func:`evaluate` -- top-1 accuracy in percent.

Shipped weights
---------------
Trained weights differ between CPUs (floating-point summation order in the kernels), so
orderings measured on one machine's freshly trained models need not hold on another's.
The FP32 reference models are therefore shipped in the package, ``quant/models/<name>.
safetensors`` (a format that cannot run code on load), with ``quant/models/manifest.json``
recording for each file its recipe, data split (seed, test fraction), training seed, the
torch version and machine it was trained with, its test accuracy and its sha256.
:func:`load_model` verifies the sha256 before loading. Nothing here trains implicitly:
tests, ``make paper-tables``, the CLI and the notebook all use the shipped weights.

The CNNs are plain ``nn.Sequential`` of standard modules, so torch.fx traces them
(BN folding and CLE apply) and the exporter sees ordinary Conv2d / BatchNorm2d / ReLU /
ReLU6 / MaxPool2d / AdaptiveAvgPool2d / Flatten / Linear layers. The ViT traces too; its
LayerNorm, softmax, GELU, attention matmuls and residual adds become vector-unit and
activation x activation layers of the integer network.

``python -m qaccel.quant.digits`` verifies and evaluates the shipped models.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import platform
import sys
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: the shipped weights and their manifest (package data; read-only)
MODELS_DIR = pathlib.Path(__file__).resolve().parent / "models"
MANIFEST = "manifest.json"

SPLIT_SEED = 0
TEST_FRACTION = 0.3


@dataclass(frozen=True)
class Recipe:
    """Training recipe (AdamW + one-cycle LR, random 1-pixel shifts, one CPU thread).

    Parameters
    ----------
    epochs, batch_size : int
        Passes over the 1258 training images, and the minibatch size.
    lr, weight_decay : float
        AdamW peak learning rate (one-cycle schedule) and decoupled weight decay.
    seed : int
        Seeds the initialization, the shuffling and the augmentation.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self):
        for f in ("epochs", "batch_size"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Recipe.{f} must be an integer >= 1, not {v!r}")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise ValueError(f"Recipe.lr must be a finite number > 0, not {self.lr!r}")
        if not (self.weight_decay >= 0 and np.isfinite(self.weight_decay)):
            raise ValueError(f"Recipe.weight_decay must be finite and >= 0, not "
                             f"{self.weight_decay!r}")


RECIPES = {"digits_cnn": Recipe(), "digits_mobilenet": Recipe(epochs=40),
           "digits_vit": Recipe(epochs=40)}


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


class RowViT(nn.Module):
    """ViT-style encoder on 8x8 digits: the 8 image rows are the tokens -> Linear embedding
    -> ``layers`` pre-LN encoder blocks (``heads``-head self-attention, GELU FFN of width
    ``ff``, residual adds) -> LayerNorm -> flatten -> Linear classifier."""

    def __init__(self, d: int = 32, heads: int = 4, ff: int = 64, layers: int = 2):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.embed = nn.Linear(8, d)
        self.blocks = nn.ModuleList(nn.ModuleDict(dict(
            ln1=nn.LayerNorm(d), q=nn.Linear(d, d), k=nn.Linear(d, d), v=nn.Linear(d, d),
            o=nn.Linear(d, d), ln2=nn.LayerNorm(d), f1=nn.Linear(d, ff),
            f2=nn.Linear(ff, d))) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(8 * d, 10)

    def forward(self, x):
        b = x.shape[0]
        x = self.embed(x.reshape(b, 8, 8))
        for blk in self.blocks:
            h = blk["ln1"](x)
            q, k, v = (blk[n](h).reshape(b, 8, self.h, self.dh).permute(0, 2, 1, 3)
                       for n in "qkv")
            att = F.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.dh), dim=-1)
            x = x + blk["o"]((att @ v).transpose(1, 2).reshape(b, 8, -1))
            x = x + blk["f2"](F.gelu(blk["f1"](blk["ln2"](x))))
        return self.head(torch.flatten(self.ln(x), 1))


def digits_vit() -> RowViT:
    """:class:`RowViT` with width 32, 4 heads, FFN width 64, 2 blocks (about 26 k
    parameters)."""
    return RowViT()


ARCHS = {"digits_cnn": digits_cnn, "digits_mobilenet": digits_mobilenet,
         "digits_vit": digits_vit}


def _check_name(name: str) -> None:
    if name not in ARCHS:
        raise ValueError(f"name: unknown digits model {name!r}; choose from {sorted(ARCHS)}")


def train(name: str, recipe: Recipe | None = None, *, progress: bool | None = None
          ) -> nn.Module:
    """Train ``ARCHS[name]`` with ``recipe`` (default ``RECIPES[name]``) on CPU.

    Deterministic on a given machine: one torch thread, ``torch.manual_seed(recipe.seed)``
    and a seeded generator for shuffling and augmentation. A few seconds per model.

    Parameters
    ----------
    progress : bool or None
        Show a tqdm bar over the epochs; ``None`` (default): only when stderr is a TTY.

    Returns
    -------
    torch.nn.Module
        The trained model in eval mode.
    """
    from tqdm.auto import tqdm

    _check_name(name)
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
        bar = tqdm(range(recipe.epochs), desc=f"train {name}", unit="epoch",
                   disable=None if progress is None else not progress, file=sys.stderr)
        for _epoch in bar:
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
            bar.set_postfix(loss=f"{total / len(x_tr):.4f}")
        bar.close()
    finally:
        torch.set_num_threads(prev_threads)
    return model.eval()


def sha256_file(path: pathlib.Path) -> str:
    """Hex sha256 of the file at ``path``."""
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def read_manifest(models_dir: os.PathLike | str = MODELS_DIR) -> dict:
    """The ``manifest.json`` of ``models_dir``: ``{"models": {name: entry}}``.

    Raises
    ------
    ValueError
        If the manifest is missing or not valid JSON of that shape (naming the file).
    """
    path = pathlib.Path(models_dir) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no model manifest (run `qaccel train --out "
                         f"{path.parent}`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable model manifest ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ValueError(f"{path}: model manifest has no 'models' object")
    return data


def save_models(models: dict[str, nn.Module], out_dir: os.PathLike | str,
                recipes: dict[str, Recipe] | None = None) -> dict:
    """Write ``<name>.safetensors`` for each model and merge their entries (recipe, split,
    seed, torch version, test accuracy, sha256) into ``out_dir/manifest.json``.

    Returns the manifest written.
    """
    from safetensors.torch import save_file

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        manifest = read_manifest(out)
    except ValueError:
        manifest = {"models": {}}
    manifest["format"] = ("safetensors state_dict of quant.digits.ARCHS[name](); "
                          "load with quant.digits.load_model")
    x_tr, _, x_te, y_te = load_split()
    for name, model in models.items():
        _check_name(name)
        recipe = (recipes or {}).get(name) or RECIPES[name]
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        path = out / f"{name}.safetensors"
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        save_file(state, str(tmp))
        tmp.replace(path)  # atomic
        path.chmod(0o644)
        manifest["models"][name] = {
            "file": path.name,
            "sha256": sha256_file(path),
            "arch": f"quant.digits.{ARCHS[name].__name__}",
            "recipe": asdict(recipe),
            "training_seed": recipe.seed,
            "split": {"dataset": "sklearn.datasets.load_digits", "seed": SPLIT_SEED,
                      "test_fraction": TEST_FRACTION, "n_train": len(x_tr),
                      "n_test": len(x_te)},
            "test_accuracy": round(evaluate(model, (x_te, y_te)), 4),
            "torch_version": torch.__version__,
            "machine": _machine(),
        }
    tmp = out / f".{MANIFEST}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    tmp.replace(out / MANIFEST)
    return manifest


def _machine() -> str:
    """Architecture and CPU model (trained weights depend on the CPU's kernels)."""
    cpu = platform.processor()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {cpu or 'unknown CPU'}"


_LOADED: dict[tuple[str, str], dict[str, torch.Tensor]] = {}


def load_model(name: str, models_dir: os.PathLike | str = MODELS_DIR) -> nn.Module:
    """The trained FP32 model ``name`` from ``models_dir`` (default: the shipped weights),
    in eval mode. The file's sha256 is checked against the manifest before it is read, and
    it is read with ``safetensors`` (no pickle, no code runs on load).

    Raises
    ------
    ValueError
        Unknown ``name``, a missing manifest entry or file, a sha256 mismatch, or weights
        that do not fit the architecture (each naming the file).
    """
    from safetensors.torch import load_file

    _check_name(name)
    models_dir = pathlib.Path(models_dir)
    entry = read_manifest(models_dir)["models"].get(name)
    if not isinstance(entry, dict) or "file" not in entry or "sha256" not in entry:
        raise ValueError(f"{models_dir / MANIFEST}: no entry for model {name!r}")
    path = models_dir / entry["file"]
    key = (str(path.resolve()), entry["sha256"])
    if key not in _LOADED:
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise ValueError(f"{path}: cannot read model weights ({exc.strerror})") from None
        if digest != entry["sha256"]:
            raise ValueError(f"{path}: sha256 {digest} does not match the manifest "
                             f"({entry['sha256']}); the file is corrupt or was replaced")
        _LOADED[key] = load_file(str(path))
    model = ARCHS[name]()
    try:
        model.load_state_dict(_LOADED[key], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit quant.digits.{name}: {exc}") from None
    return model.eval()


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


def get_model(name: str = "digits_cnn", *, n_calib: int = 256, calib_seed: int = 0,
              verbose: bool = False):
    """``(model, calib_loader, test_set)`` for ``name`` in ``ARCHS``.

    ``model`` is the shipped trained FP32 network (eval mode, see :func:`load_model`; never
    trained here), ``calib_loader`` yields batches of ``n_calib`` training images (subset
    ``calib_seed``), ``test_set`` is the held-out ``(images, labels)``.
    """
    _check_name(name)
    model = load_model(name)
    _, _, x_te, y_te = load_split()
    test_set = (x_te, y_te)
    if verbose:
        print(f"[digits] {name}: FP32 test accuracy {evaluate(model, test_set):.2f}% "
              f"on {len(x_te)} held-out images")
    return model, calib_loader(n_calib, seed=calib_seed), test_set


def main() -> int:
    torch.set_num_threads(1)
    for name in ARCHS:
        get_model(name, verbose=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
