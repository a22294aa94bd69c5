"""Shipped networks for shapes (plain torch modules; torchvision is not installable here).

``NETWORKS[name]`` builds ``(model, example_input)``; :func:`network_workloads` maps it to
GEMM workloads with :mod:`qaccel.mapping`, :func:`network_vector_workloads` to the
vector-unit layers around them (pooling, residual adds; softmax, LayerNorm, GELU).
The digits models come from ``quant.digits`` (8x8 greyscale input).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["NetworkSpec", "NETWORKS", "MAX_ROWS", "build_network", "network_workloads",
           "network_vector_workloads", "network_names"]

#: Most GEMM rows a network is built for (batch x sequence positions or image pixels): the
#: largest job dimension of any array is ``2**24 - 1`` (``ArrayConfig.dim_bits <= 24``), so
#: a larger input cannot run, and far larger ones overflow torch's shape arithmetic.
MAX_ROWS = 1 << 24


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    builder: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    description: str


def _resnet18():
    from .resnet import resnet18
    return resnet18()


def _resnet50():
    from .resnet import resnet50
    return resnet50()


def _mobilenet_v2():
    from .mobilenet import mobilenet_v2
    return mobilenet_v2()


def _bert():
    from .bert import bert_base_layer
    return bert_base_layer()


def _digits(name: str):
    def build():
        try:
            from qaccel.quant import digits
        except ImportError as exc:       # pragma: no cover - depends on quant/ being present
            raise ValueError(f"network {name!r} needs quant.digits, which is unavailable: "
                             f"{exc}") from None
        return getattr(digits, name)()
    return build


NETWORKS: dict[str, NetworkSpec] = {
    "resnet18": NetworkSpec("resnet18", _resnet18, (1, 3, 224, 224), "ResNet-18, 224x224"),
    "resnet50": NetworkSpec("resnet50", _resnet50, (1, 3, 224, 224), "ResNet-50, 224x224"),
    "mobilenet_v2": NetworkSpec("mobilenet_v2", _mobilenet_v2, (1, 3, 224, 224),
                                "MobileNetV2 1.0, 224x224"),
    "bert_base": NetworkSpec("bert_base", _bert, (1, 128, 768),
                             "one BERT-base encoder layer, sequence length 128"),
    "digits_cnn": NetworkSpec("digits_cnn", _digits("digits_cnn"), (1, 1, 8, 8),
                              "quant.digits small CNN, 8x8 digits"),
    "digits_mobilenet": NetworkSpec("digits_mobilenet", _digits("digits_mobilenet"),
                                    (1, 1, 8, 8), "quant.digits MobileNet-style CNN, 8x8"),
}


def network_names() -> list[str]:
    return list(NETWORKS)


def build_network(name: str, *, seq_len: int | None = None, image_size: int | None = None,
                  batch: int = 1) -> tuple[nn.Module, torch.Tensor]:
    """``(model in eval mode, example input)`` of a shipped network, both on the ``meta``
    device: mapping needs only shapes."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    for field, v in (("batch", batch), ("seq_len", seq_len), ("image_size", image_size)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"network {name!r}: {field} must be a positive integer, "
                             f"not {v!r}")
    spec = NETWORKS[name]
    shape = list(spec.input_shape)
    shape[0] = batch
    if seq_len is not None and name == "bert_base":
        shape[1] = seq_len
    if image_size is not None and len(shape) == 4:
        shape[2] = shape[3] = image_size
    rows = batch * (shape[1] if name == "bert_base" else shape[2] * shape[3])
    if rows > MAX_ROWS:
        what = "seq_len" if name == "bert_base" else "image_size x image_size"
        raise ValueError(f"network {name!r}: batch x {what} = {rows:,} rows (batch {batch}, "
                         f"input {'x'.join(map(str, shape[1:]))}) exceed {MAX_ROWS:,}, more "
                         f"than any array can take (T < 2**dim_bits, dim_bits <= 24)")
    with torch.device("meta"):          # shapes only: no weights allocated, no arithmetic
        model = spec.builder().eval()
    return model, torch.zeros(shape, device="meta")


def network_workloads(name: str, method: str = "auto", **kw):
    """GEMM workloads of a shipped network."""
    from qaccel.mapping import workloads_from_model

    model, x = build_network(name, **kw)
    return workloads_from_model(model, x, method=method)


def network_vector_workloads(name: str, a_bits: int | None = 8, **kw) -> list:
    """Vector-unit layers of a shipped network (:class:`qaccel.sim.workload.VectorWorkload`,
    widths left to the array's ``a_bits``), with the same options as
    :func:`build_network`: ``bert_base``'s hand-written, named description
    (:func:`qaccel.networks.bert.bert_vector_workloads`; the generic trace finds the same
    ops, named ``softmax0`` / ``add0`` ...), every other network's from
    :func:`qaccel.mapping.vector_workloads_from_model` (max / global average pooling and
    residual adds; the ReLUs are fused into the convolutions' and adds' requantizers).
    ``a_bits``: a GELU is a table up to :data:`qaccel.sim.vector.LUT_MAX_BITS` bits, the
    integer GELU above; ``None`` keeps it ``gelu``
    (:func:`qaccel.mapping.vectors_at_bits` resolves it later)."""
    from qaccel.mapping import vector_workloads_from_model

    model, x = build_network(name, **kw)       # validates name and options
    if name == "bert_base":
        from qaccel.sim.vector import LUT_MAX_BITS

        from .bert import bert_vector_workloads

        return bert_vector_workloads(int(x.shape[0]), int(x.shape[1]),
                                     a_bits=LUT_MAX_BITS + 1 if a_bits is None else a_bits)
    return vector_workloads_from_model(model, x, a_bits=a_bits)
