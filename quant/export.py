"""``quant.export``: a fake-quantized model from :func:`quant.quantize` -> the integer
network of ``sim.network`` (SPEC: ``W_int``, ``bias_int`` with the zero-point term folded
in, ``(M, S)`` from ``sim.arith.quantize_multiplier``, zero-points, fused ReLU).

The bias integers are computed with the same float32 operations as the fake-quant
forward pass (``round(b / (s_w * s_x))``). The float32 straight-through forward still
differs from the integer network (float32 sums, ``M / 2^S`` for the real scale, ties
rounded half to even instead of the requantizer's add-``R``-and-shift); the exact mode
(:func:`exact_mode`, :func:`exact_outputs`) runs each exported layer's integer arithmetic
in the quantized modules (``quant.intops``) and equals the executor bit for bit.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from qaccel.sim.arith import quantize_multiplier
from qaccel.sim.network import MASK_Q, IntLayer, IntNetwork, QParams
from qaccel.sim.vector import LN_FRAC_BITS, LUT_MAX_BITS, i_gelu, lut_table
from torch import fx, nn

from .graph import (
    ValueRecorder,
    act_kind,
    is_last_transpose,
    is_passthrough,
    module_of,
    permutation,
)
from .intops import IntOp, to_int
from .modules import (
    QuantAct,
    QuantAdd,
    QuantAvgPool,
    QuantLayer,
    QuantLayerNorm,
    QuantMatmul,
    QuantSoftmax,
)
from .quantizers import Quantizer

__all__ = ["export", "qparams_of", "integer_outputs", "exact_mode", "exact_outputs"]


_EXACT_MODULES = (QuantLayer, QuantAdd, QuantAvgPool, QuantAct, QuantLayerNorm, QuantSoftmax,
                  QuantMatmul)


def qparams_of(q: Quantizer) -> QParams:
    if q is None or q.scale is None:
        raise ValueError("quantizer has no range (was the model calibrated?)")
    if q.scale.dim() != 0:
        raise ValueError("activation quantizers must be per tensor for export")
    return QParams(float(q.scale), int(q.zero_point), q.bits, q.signed)


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    if isinstance(v, str):
        raise ValueError(f"string padding {v!r} is not supported for export")
    return int(v[0]), int(v[1])


def _multiplier(real: float, mult_bits: int) -> tuple[np.ndarray, np.ndarray]:
    m, s = quantize_multiplier(np.atleast_1d(np.asarray(real, dtype=np.float64)), mult_bits)
    return m.reshape(-1), s.reshape(-1)


def export(qmodel: nn.Module, example_input: torch.Tensor, *, mult_bits: int | None = None,
           acc_bits: int | None = None, example_mask: torch.Tensor | None = None
           ) -> IntNetwork:
    """Export ``qmodel`` (returned by :func:`quant.quantize` on a traceable model) to an
    :class:`sim.network.IntNetwork`. ``example_input`` (a batch tensor) fixes the shapes.
    ``mult_bits``/``acc_bits`` default to the quantization config's. ``example_mask``: a
    boolean attention mask, the model's second input (the network's mask input)."""
    info = getattr(qmodel, "qaccel_quant", None)
    if info is None:
        raise ValueError("export needs a model returned by quant.quantize")
    if info.mode != "graph" or not isinstance(qmodel, fx.GraphModule):
        raise ValueError("export needs a torch.fx-traceable model (this one was quantized by "
                         "wrapping leaf modules: " + "; ".join(info.notes[:1]) + ")")
    cfg = info.config
    mult_bits = cfg.mult_bits if mult_bits is None else mult_bits
    acc_bits = cfg.acc_bits if acc_bits is None else acc_bits
    if not isinstance(example_input, torch.Tensor):
        raise ValueError("example_input must be a tensor batch")
    gm = qmodel
    rec = ValueRecorder(gm)
    with torch.no_grad():
        rec.run(example_input, *(() if example_mask is None else (example_mask,)))
    vals = rec.values
    where: dict[fx.Node, tuple[int, QParams]] = {}
    layers: list[IntLayer] = []
    input_q = None
    output = None

    def src_of(node, arg_i=0) -> tuple[int, QParams]:
        a = node.args[arg_i]
        if a not in where:
            raise ValueError(f"export: input of {node.format_node()} is not an integer tensor "
                             f"(produced by an unsupported or unquantized op: "
                             f"{a.format_node() if isinstance(a, fx.Node) else a!r})")
        if where[a][0] == -2 and not (isinstance(module_of(gm, node), QuantSoftmax)
                                      and arg_i == 1):
            raise ValueError(f"export: the integer (non-float) model input is used by "
                             f"{node.format_node()}; integer inputs are exported only as "
                             "the attention mask of a softmax (token ids and embeddings "
                             "are not supported yet)")
        return where[a]

    def add(layer: IntLayer, node) -> None:
        layers.append(layer)
        where[node] = (len(layers) - 1, layer.out_q)

    # tensor inputs; specialised optional arguments (default None) are not inputs
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder" and not n.args]
    masks = [n for n in placeholders if isinstance(vals.get(n), torch.Tensor)
             and not vals[n].is_floating_point()]
    if len(placeholders) - len(masks) != 1 or len(masks) > 1:
        raise ValueError(f"export supports one float input and at most one attention mask "
                         f"(boolean), got {len(placeholders) - len(masks)} float and "
                         f"{len(masks)} integer input(s) "
                         f"({', '.join(n.target for n in masks) or '-'}): token ids and "
                         "embeddings are not supported yet")
    mask_shape = tuple(vals[masks[0]].shape[1:]) if masks else None
    for node in gm.graph.nodes:
        m = module_of(gm, node)
        if node.op == "placeholder":
            continue
        if node.op == "output":
            res = node.args[0]
            if res not in where or where[res][0] < 0:
                raise ValueError("export: the model output must be a quantized layer output")
            output = where[res][0]
            continue
        if isinstance(m, Quantizer):
            if node.args[0] not in placeholders and node.args[0].op == "placeholder":
                continue                               # quantizer on a specialised None
            if node.args[0] not in placeholders:
                raise ValueError(f"export: stand-alone quantizer {node.target} not at the input")
            if node.args[0] in masks:
                where[node] = where[node.args[0]] = (-2, MASK_Q)
                continue
            input_q = qparams_of(m)
            where[node] = (-1, input_q)
            continue
        if isinstance(m, QuantLayer):
            add(_gemm_layer(node, m, src_of(node), vals, mult_bits), node)
            continue
        if isinstance(m, QuantAdd):
            (ia, qa), (ib, qb) = src_of(node, 0), src_of(node, 1)
            out_q = qparams_of(m.output_quantizer)
            mb = max(1, min(mult_bits, acc_bits - max(qa.bits, qb.bits) - 3))
            reals = [qa.scale / out_q.scale, qb.scale / out_q.scale]
            ms_ss = [_multiplier(r, mb) for r in reals]
            s = int(min(ms_ss[0][1][0], ms_ss[1][1][0]))
            mm = np.array([int(np.rint(r * 2.0 ** s)) for r in reals], dtype=np.int64)
            add(IntLayer(name=str(node.target), kind="add", inputs=(ia, ib), in_q=(qa, qb),
                         out_q=out_q, relu=m.act != "none", m=mm,
                         s=np.array([s], dtype=np.int64)), node)
            _check_relu6(m.act, out_q, node)
            continue
        if isinstance(m, QuantLayerNorm):
            i, q = src_of(node)
            add(_layernorm_layer(str(node.target), m, i, q, mult_bits), node)
            continue
        if isinstance(m, QuantSoftmax):
            srcs = [src_of(node, k) for k in range(len(node.args))]
            add(IntLayer(name=str(node.target), kind="softmax",
                         inputs=tuple(i for i, _ in srcs), in_q=tuple(q for _, q in srcs),
                         out_q=qparams_of(m.output_quantizer)), node)
            continue
        if isinstance(m, QuantMatmul):
            (ia, qa), (ib, qb) = src_of(node, 0), src_of(node, 1)
            out_q = qparams_of(m.output_quantizer)
            mm, ss = _multiplier(abs(m.alpha) * qa.scale * qb.scale / out_q.scale, mult_bits)
            if m.alpha < 0:
                raise ValueError(f"export: {node.target}: negative matmul factor {m.alpha}")
            add(IntLayer(name=str(node.target), kind="matmul", inputs=(ia, ib),
                         in_q=(qa, qb), out_q=out_q, m=mm, s=ss), node)
            continue
        if isinstance(m, QuantAct):
            if m.input_quantizer is not None:
                raise ValueError(f"export: input of {node.target} ({m.func}) is not produced "
                                 "by a quantized op")
            i, q = src_of(node)
            out_q = qparams_of(m.output_quantizer)
            if m.func == "gelu" and q.bits > LUT_MAX_BITS:         # I-BERT integer GELU
                _, s_g = i_gelu(np.zeros(1, dtype=np.int64), q.scale)
                mm, ss = _multiplier(s_g / out_q.scale, mult_bits)
                add(IntLayer(name=str(node.target), kind="gelu", inputs=(i,), in_q=(q,),
                             out_q=out_q, m=mm, s=ss), node)
                continue
            if q.bits > LUT_MAX_BITS:
                raise ValueError(f"export: {m.func} ({node.target}) of a {q.bits}-bit input: "
                                 f"tables hold <= {LUT_MAX_BITS}-bit inputs (GELU uses the "
                                 "integer i-GELU above that)")
            table = lut_table(m.func, q, out_q, **m.params)
            func = m.func + "".join(f"({v})" for v in m.params.values())
            add(IntLayer(name=str(node.target), kind="lut", inputs=(i,), in_q=(q,),
                         out_q=out_q, table=table, func=func), node)
            continue
        if isinstance(m, QuantAvgPool):
            i, q = src_of(node)
            x = vals[node.args[0]]
            out_q = qparams_of(m.output_quantizer)
            if m.kind == "global":
                n = int(x.shape[-1] * x.shape[-2])
                kw = {"kind": "global_avgpool", "keepdim": m.keepdim}
            else:
                k, st = _pair(m.kernel), _pair(m.stride)
                n = k[0] * k[1]
                kw = {"kind": "avgpool2d", "kernel": k, "stride": st}
            mm, ss = _multiplier(q.scale / (n * out_q.scale), mult_bits)
            add(IntLayer(name=str(node.target), inputs=(i,), in_q=(q,), out_q=out_q, m=mm,
                         s=ss, **kw), node)
            continue
        val = vals.get(node)
        if not isinstance(val, torch.Tensor):
            continue                                   # size() / getattr etc.
        if node.op == "call_module" and isinstance(m, nn.MaxPool2d) or \
                node.op == "call_function" and node.target is F.max_pool2d:
            i, q = src_of(node)
            add(_maxpool(node, m, q, i), node)
            continue
        if act_kind(gm, node) == "relu":
            i, q = src_of(node)
            add(IntLayer(name=str(node.name), kind="relu", inputs=(i,), in_q=(q,), out_q=q),
                node)
            continue
        if is_last_transpose(node):
            i, q = src_of(node)
            add(IntLayer(name=str(node.name), kind="transpose", inputs=(i,), in_q=(q,),
                         out_q=q), node)
            continue
        perm = permutation(node)
        if perm is not None:
            i, q = src_of(node)
            nd = vals[node.args[0]].dim()
            if perm[0] == "T":
                a, b = (d % nd for d in perm[1:])
                p = list(range(nd))
                p[a], p[b] = p[b], p[a]
                perm = tuple(p)
            perm = tuple(d % nd for d in perm)
            if perm[0] != 0:
                raise ValueError(f"export: {node.format_node()} moves the batch axis")
            add(IntLayer(name=str(node.name), kind="permute", inputs=(i,), in_q=(q,),
                         out_q=q, perm=perm), node)
            continue
        if is_passthrough(gm, node):
            i, q = src_of(node)
            x = vals[node.args[0]]
            if tuple(val.shape) == tuple(x.shape):
                where[node] = (i, q)                   # dropout / identity / no-op view
            elif val.dim() == 2 and val.shape[0] == x.shape[0] and x.is_contiguous():
                add(IntLayer(name=str(node.name), kind="flatten", inputs=(i,), in_q=(q,),
                             out_q=q), node)
            elif val.dim() >= 1 and val.shape[0] == x.shape[0] and \
                    (node.target in ("view", "reshape") or node.target is torch.reshape):
                add(IntLayer(name=str(node.name), kind="reshape", inputs=(i,), in_q=(q,),
                             out_q=q, shape=tuple(val.shape[1:])), node)
            else:
                raise ValueError(f"export: reshape {node.format_node()} is not a flatten")
            continue
        raise ValueError(f"export: unsupported op {node.format_node()}")
    if input_q is None:
        raise ValueError("export: the model input is not quantized (quantize_input=False)")
    if output is None:
        raise ValueError("export: no output found")
    return IntNetwork(layers=tuple(layers), input_q=input_q,
                      input_shape=tuple(example_input.shape[1:]), acc_bits=acc_bits,
                      mask_shape=mask_shape,
                      mult_bits=mult_bits, output=output,
                      meta={"quant_config": cfg.to_dict(), "notes": list(info.notes)})


def _layernorm_layer(name: str, m: QuantLayerNorm, i: int, q: QParams, mult_bits: int
                     ) -> IntLayer:
    """gamma as integers (``s_g``), beta on the grid ``s_g 2^-LN_FRAC_BITS`` of
    ``i_layernorm(x) * gamma_int``, one ``(M, S)`` for ``s_g 2^-LN_FRAC_BITS / s_y``."""
    out_q = qparams_of(m.output_quantizer)
    with torch.no_grad():
        g_int = m.weight_quantizer.to_int(m.gamma()).numpy()
        s_g = float(m.weight_quantizer.scale)
        acc_scale = s_g * 2.0 ** -LN_FRAC_BITS
        b_int = np.rint(m.beta().detach().double().numpy() / acc_scale).astype(np.int64)
    mm, ss = _multiplier(acc_scale / out_q.scale, mult_bits)
    return IntLayer(name=name, kind="layernorm", inputs=(i,), in_q=(q,), out_q=out_q,
                    weight=g_int, bias=b_int, m=mm, s=ss, w_bits=m.weight_quantizer.bits)


def _check_relu6(act: str, out_q: QParams, node) -> None:
    if act == "relu6" and out_q.scale * (out_q.range[1] - out_q.zero_point) > 6.0 + 1e-6:
        raise ValueError(f"export: ReLU6 of {node.target} is not covered by its output "
                         "range (q_max > 6)")


def _maxpool(node, m, q: QParams, i: int) -> IntLayer:
    if m is not None:
        k, st, p, d, ceil = m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode
    else:
        args = list(node.args) + [None] * 6
        k = args[1] if args[1] is not None else node.kwargs.get("kernel_size")
        st = args[2] if args[2] is not None else node.kwargs.get("stride") or k
        p = args[3] if args[3] is not None else node.kwargs.get("padding", 0)
        d = args[4] if args[4] is not None else node.kwargs.get("dilation", 1)
        ceil = node.kwargs.get("ceil_mode", False)
    if _pair(d) != (1, 1) or ceil:
        raise ValueError(f"export: max pool {node.name} with dilation/ceil_mode unsupported")
    return IntLayer(name=str(node.target if m is not None else node.name), kind="maxpool2d",
                    inputs=(i,), in_q=(q,), out_q=q, kernel=_pair(k),
                    stride=_pair(st if st is not None else k), padding=_pair(p))


def _gemm_layer(node, ql: QuantLayer, src: tuple[int, QParams], vals, mult_bits: int
                ) -> IntLayer:
    i, q_in = src
    mod = ql.module
    name = str(node.target)
    if ql.input_quantizer is not None:
        raise ValueError(f"export: input of {name} is not produced by a quantized op")
    if isinstance(mod, nn.Linear):
        kind, geo = "linear", {}
    elif isinstance(mod, nn.Conv2d):
        if _pair(mod.dilation) != (1, 1):
            raise ValueError(f"export: dilated conv {name} unsupported")
        kind = "conv2d"
        geo = {"stride": _pair(mod.stride), "padding": _pair(mod.padding),
               "groups": mod.groups}
    else:
        raise ValueError(f"export: {type(mod).__name__} ({name}) unsupported (linear/conv2d)")
    if ql.output_quantizer is None:
        raise ValueError(f"export: {name} has no output quantizer")
    out_q = qparams_of(ql.output_quantizer)
    if ql.in_scale is None or abs(float(ql.in_scale) - q_in.scale) > 1e-12 * q_in.scale:
        raise ValueError(f"export: {name} bias grid does not match its input scale")
    w_int = ql.weight_int()
    s_w = ql.weight_scale()
    n = w_int.shape[0]
    with torch.no_grad():
        acc_scale = s_w * ql.in_scale                         # as in the forward pass
        b = mod.bias if mod.bias is not None else torch.zeros(n)
        b_int = torch.round(b.detach() / acc_scale).to(torch.int64)
    w_np = w_int.numpy().astype(np.int64)
    bias = b_int.numpy() - q_in.zero_point * w_np.reshape(n, -1).sum(1)
    s_w64 = s_w.detach().double().numpy()
    real = s_w64 * q_in.scale / out_q.scale
    per_channel = ql.weight_quantizer.per_channel
    m, s = _multiplier(real if per_channel else float(real), mult_bits)
    _check_relu6(ql.act, out_q, node)
    return IntLayer(name=name, kind=kind, inputs=(i,), in_q=(q_in,), out_q=out_q,
                    relu=ql.act != "none", weight=w_np, bias=bias, m=m, s=s,
                    w_bits=ql.weight_quantizer.bits, per_channel=per_channel, **geo)


@contextlib.contextmanager
def exact_mode(qmodel: nn.Module, example_input: torch.Tensor | None = None, *,
               net: IntNetwork | None = None, example_mask: torch.Tensor | None = None):
    """Context manager: the quantized modules of ``qmodel`` compute their exported integer
    layers (``quant.intops``: exact sums, accumulator wrap, ``(acc M + R) >> S``, tables)
    instead of the float32 straight-through forward, so ``qmodel``'s outputs are, on their
    grids, the integer network's to the last bit. Grid-preserving ops (max pool, ReLU,
    flatten) are exact in float anyway. ``net`` is the exported network (else exported
    from ``example_input``); yields it."""
    if net is None:
        if example_input is None:
            raise ValueError("exact_mode needs example_input or net")
        net = export(qmodel, example_input, example_mask=example_mask)
    attached = []
    try:
        for layer in net.layers:
            try:
                mod = qmodel.get_submodule(layer.name)
            except AttributeError:
                continue
            if isinstance(mod, _EXACT_MODULES):
                mod.exact = IntOp(layer, net.acc_bits)
                attached.append(mod)
        yield net
    finally:
        for mod in attached:
            mod.exact = None


@torch.no_grad()
def exact_outputs(qmodel: nn.Module, x: torch.Tensor, *, net: IntNetwork | None = None,
                  mask: torch.Tensor | None = None) -> np.ndarray:
    """Integer output codes of ``qmodel`` on ``x`` (and the attention ``mask`` if the model
    takes one) in :func:`exact_mode` (``net`` exported from ``x[:1]`` unless given): equal
    to ``executor.run(net, net.input_q.quantize(x), mask=mask)``."""
    extra = () if mask is None else (mask,)
    with exact_mode(qmodel, x[:1], net=net,
                    example_mask=None if mask is None else mask[:1]) as net:
        y = qmodel(x, *extra)
    return to_int(y, net.output_q).numpy()


@torch.no_grad()
def integer_outputs(qmodel: nn.Module, x: torch.Tensor, *, exact: bool = False
                    ) -> dict[str, np.ndarray]:
    """The fake-quant model's integer tensors at every activation quantizer, keyed by the
    exported layer name (for per-layer comparisons with ``sim.executor``); in
    :func:`exact_mode` when ``exact``."""
    if exact:
        with exact_mode(qmodel, x[:1]):
            return integer_outputs(qmodel, x)
    got = {}
    hooks = []
    for name, mod in qmodel.named_modules():
        q = getattr(mod, "output_quantizer", None)
        if isinstance(q, Quantizer):
            key = name[:-len(".module")] if name.endswith(".module") else name

            def hook(_m, _i, out, key=key, q=q):
                got[key] = q.to_int(out).numpy()
            hooks.append(q.register_forward_hook(hook))
    try:
        qmodel(x)
    finally:
        for h in hooks:
            h.remove()
    return got
