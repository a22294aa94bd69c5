"""Calibration data: the batch forms :func:`quant.quantize` accepts, their validation, and
feeding them through a model.

A batch is a tensor (``model(x)``), a tuple/list (``model(*x)``) or a dict
(``model(**x)``). Bad data is refused up front with a ``ValueError`` naming the data and
the batch (never a torch ``RuntimeError`` from deep inside the model, never a silently
wrong calibration): an empty batch, a NaN/inf value, a batch the FP32 model cannot run
(wrong shape) or on which it produces NaN/inf.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["run_batch", "as_batches", "check_batches", "check_model", "collect"]


def run_batch(model: nn.Module, batch):
    """Feed one calibration batch: tensor -> ``model(x)``, tuple/list -> ``model(*x)``,
    dict -> ``model(**x)``."""
    if isinstance(batch, torch.Tensor):
        return model(batch)
    if isinstance(batch, tuple | list):
        return model(*batch)
    if isinstance(batch, dict):
        return model(**batch)
    raise TypeError(f"calib_data batches must be a tensor, tuple/list or dict, not "
                    f"{type(batch).__name__}")


def _tensors(batch, path: str = ""):
    """``(path, tensor)`` for every tensor in a batch (nested tuples/lists/dicts)."""
    if isinstance(batch, torch.Tensor):
        yield path, batch
    elif isinstance(batch, tuple | list):
        for i, b in enumerate(batch):
            yield from _tensors(b, f"{path}[{i}]")
    elif isinstance(batch, dict):
        for k, b in batch.items():
            yield from _tensors(b, f"{path}[{k!r}]")


def _shapes(batch) -> str:
    return ", ".join(f"{p or 'tensor'} {tuple(t.shape)}" for p, t in _tensors(batch)) or "none"


def check_batches(batches: list, what: str = "calib_data") -> None:
    """``ValueError`` naming ``what`` and the batch if a tensor in it is empty (no sample)
    or a floating-point tensor holds NaN or inf."""
    for i, b in enumerate(batches):
        tensors = list(_tensors(b))
        if not tensors:
            raise ValueError(f"{what}: batch {i} holds no tensor")
        for path, t in tensors:
            where = f"{what}: batch {i}{path}"
            if t.numel() == 0:
                raise ValueError(f"{where} is empty (shape {tuple(t.shape)})")
            if t.is_floating_point():
                bad = ~torch.isfinite(t)
                if bool(bad.any()):
                    first = tuple(int(v) for v in bad.nonzero()[0])
                    raise ValueError(f"{where} holds {int(bad.sum())} NaN/inf value(s) "
                                     f"(first at index {first}, shape {tuple(t.shape)})")


def as_batches(calib_data, what: str = "calib_data") -> list:
    """The batches of ``calib_data`` as a list, checked by :func:`check_batches`."""
    if isinstance(calib_data, torch.Tensor):
        raise TypeError(f"{what} must be an iterable of batches; wrap a single tensor "
                        "as [x]")
    if not isinstance(calib_data, Iterable):
        raise TypeError(f"{what} must be an iterable of batches, not "
                        f"{type(calib_data).__name__}")
    batches = list(calib_data)
    if not batches:
        raise ValueError(f"{what} is empty")
    for b in batches:
        if not isinstance(b, torch.Tensor | tuple | list | dict):
            raise TypeError(f"{what} batches must be a tensor, tuple/list or dict, not "
                            f"{type(b).__name__}")
    check_batches(batches, what)
    return batches


def _finite(out) -> bool:
    return all(bool(torch.isfinite(t).all()) for _, t in _tensors(out) if t.is_floating_point())


@torch.no_grad()
def check_model(model: nn.Module, batches: list, what: str = "calib_data") -> None:
    """Run the FP32 ``model`` on every batch: ``ValueError`` naming ``what``, the batch and
    its shapes if the model fails on it (e.g. a wrong input shape) or outputs NaN/inf;
    ``ValueError`` naming the parameter if the model's own weights are not finite."""
    for name, p in model.named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise ValueError(f"model: parameter {name!r} holds NaN/inf values")
    for i, b in enumerate(batches):
        try:
            out = run_batch(model, b)
        except Exception as exc:  # noqa: BLE001 - any failure here is bad calibration data
            text = str(exc).splitlines()[0] if str(exc) else ""
            raise ValueError(f"{what}: the model fails on batch {i} ({_shapes(b)}): "
                             f"{type(exc).__name__}: {text}") from exc
        if not _finite(out):
            raise ValueError(f"{what}: the FP32 model's output on batch {i} ({_shapes(b)}) "
                             "holds NaN/inf values")


def collect(model: nn.Module, module: nn.Module, batches: list, *, output: bool
            ) -> torch.Tensor:
    """The concatenated inputs (``output=False``, first positional input) or outputs of
    ``module`` (a submodule of ``model``) over ``batches``; batches of token tensors of
    different lengths are concatenated as rows ``[-1, features]``, and the padding
    positions of batches with an attention mask are left out (``quant.padding``)."""
    from .padding import padding_mask, valid_values

    got = []
    mask = [None]

    def hook(_m, inp, out):
        got.append(valid_values((out if output else inp[0]).detach(), mask[0]))

    h = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for b in batches:
                mask[0] = padding_mask(b)
                run_batch(model, b)
    finally:
        h.remove()
    if len({tuple(t.shape[1:]) for t in got}) > 1 and all(t.dim() >= 2 for t in got) \
            and any(t.dim() >= 3 for t in got) and len({t.shape[-1] for t in got}) == 1:
        # token batches padded to different lengths: rows of features (a linear layer acts
        # on each row alone)
        got = [t.reshape(-1, t.shape[-1]) for t in got]
    return torch.cat(got)
