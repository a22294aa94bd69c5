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
from qaccel.sim.network import IDS_Q, MASK_Q, IntLayer, IntNetwork, NetInput, QParams
from qaccel.sim.vector import LN_FRAC_BITS, LUT_MAX_BITS, broadcast_mask, i_gelu, lut_table
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
from .tokens import QuantEmbedding, QuantTokenMean

__all__ = ["export", "qparams_of", "integer_outputs", "exact_mode", "exact_outputs"]


_EXACT_MODULES = (QuantLayer, QuantAdd, QuantAvgPool, QuantAct, QuantLayerNorm, QuantSoftmax,
                  QuantMatmul, QuantTokenMean)


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


def _as_args(gm: fx.GraphModule, example, example_mask=None) -> list:
    """The model's positional inputs from a tensor (+ ``example_mask``), a tuple/list or a
    dict keyed by input name (the graph's placeholders)."""
    names = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
    if isinstance(example, dict):
        unknown = set(example) - set(names)
        if unknown:
            raise ValueError(f"example input names {sorted(unknown)} are not inputs of the "
                             f"model ({names})")
        args = [example.get(n) for n in names]
        while args and args[-1] is None:
            args.pop()
        return args
    if isinstance(example, tuple | list):
        return list(example)
    if not isinstance(example, torch.Tensor):
        raise ValueError("example_input must be a tensor batch, a tuple of them or a dict by "
                         "input name")
    return [example] + ([] if example_mask is None else [example_mask])


def export(qmodel: nn.Module, example_input, *, mult_bits: int | None = None,
           acc_bits: int | None = None, example_mask: torch.Tensor | None = None
           ) -> IntNetwork:
    """Export ``qmodel`` (returned by :func:`quant.quantize` on a traceable model) to an
    :class:`sim.network.IntNetwork`. ``example_input`` (a batch tensor, a tuple of the
    model's inputs, or a dict by input name, e.g. ``input_ids`` and ``attention_mask``)
    fixes the shapes; the sequence axis stays variable when the model was captured with a
    dynamic one (:func:`quant.capture`). Float inputs become ``act`` inputs, integer inputs
    read by an embedding ``ids`` inputs, other integer inputs ``mask`` inputs.
    ``mult_bits``/``acc_bits`` default to the quantization config's. ``example_mask``: an
    attention mask, the model's second input."""
    info = getattr(qmodel, "qaccel_quant", None)
    if info is None:
        raise ValueError("export needs a model returned by quant.quantize")
    if info.mode != "graph" or not isinstance(qmodel, fx.GraphModule):
        raise ValueError("export needs a torch.fx-traceable model (this one was quantized by "
                         "wrapping leaf modules: " + "; ".join(info.notes[:1]) + ")")
    cfg = info.config
    mult_bits = cfg.mult_bits if mult_bits is None else mult_bits
    acc_bits = cfg.acc_bits if acc_bits is None else acc_bits
    gm = qmodel
    args = _as_args(gm, example_input, example_mask)
    rec = ValueRecorder(gm)
    with torch.no_grad():
        rec.run(*args)
    vals = rec.values
    where: dict[fx.Node, tuple[int, QParams]] = {}
    layers: list[IntLayer] = []
    output = None
    data: set[fx.Node] = set()          # integer data: token ids, masks, sizes, buffers

    def src_of(node, arg_i=0) -> tuple[int, QParams]:
        a = node.args[arg_i]
        if a not in where:
            raise ValueError(f"export: input of {node.format_node()} is not an integer tensor "
                             f"(produced by an unsupported or unquantized op: "
                             f"{a.format_node() if isinstance(a, fx.Node) else a!r})")
        return where[a]

    def add(layer: IntLayer, node) -> None:
        layers.append(layer)
        where[node] = (len(layers) - 1, layer.out_q)

    # tensor inputs; specialised optional arguments (default None) are not inputs
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder" and not n.args
                    and isinstance(vals.get(n), torch.Tensor)]
    inputs: list[NetInput] = []
    for k, ph in enumerate(placeholders):
        v = vals[ph]
        shape = ph.meta.get("qaccel_shape", tuple(v.shape[1:]))
        if v.is_floating_point():
            q_users = [u for u in ph.users if isinstance(module_of(gm, u), Quantizer)]
            if len(q_users) != 1 or len(ph.users) != 1:
                raise ValueError(f"export: float input {ph.target!r} is not quantized "
                                 "(quantize_input=False?)")
            q = qparams_of(module_of(gm, q_users[0]))
            where[q_users[0]] = (-1 - k, q)
            inputs.append(NetInput(ph.target, "act", shape, q))
        else:
            ids = any(isinstance(module_of(gm, u), QuantEmbedding) for u in ph.users)
            inputs.append(NetInput(ph.target, "ids" if ids else "mask", shape,
                                   IDS_Q if ids else MASK_Q))
            where[ph] = (-1 - k, inputs[-1].q)
            data.add(ph)
    dynamic = any(-1 in v.shape for v in inputs)
    seq_example = next((int(vals[p].shape[1 + v.shape.index(-1)])
                        for p, v in zip(placeholders, inputs) if -1 in v.shape), None)

    def mask_input(node, arg_i: int, axis: int) -> tuple[int, QParams]:
        """The mask input that argument ``arg_i`` of ``node`` is, broadcast along ``axis``
        (checked on the example's values)."""
        a = node.args[arg_i]
        srcs = [p for p in placeholders if p in _ancestors(a) and inputs[
            placeholders.index(p)].kind == "mask"]
        if len(srcs) != 1:
            raise ValueError(f"export: the mask of {node.format_node()} is not computed from "
                             f"one mask input (found {[p.target for p in srcs]})")
        k = placeholders.index(srcs[0])
        got = vals[a].detach().numpy() != 0
        want = broadcast_mask(vals[srcs[0]].numpy() != 0, got.shape, axis)
        if not np.array_equal(got, want):
            raise ValueError(f"export: the mask of {node.format_node()} is not the mask input "
                             f"{srcs[0].target!r} broadcast along axis {axis} (a mask "
                             "computed from it in another way is not supported)")
        return -1 - k, MASK_Q

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
            if node.args[0] in data:                   # (a no-op on an integer input)
                where[node] = where[node.args[0]]
                data.add(node)
            continue
        if not isinstance(m, _EXACT_MODULES + (QuantEmbedding,)) and node.op != "output" \
                and all(a in data for a in _node_args(node)):
            data.add(node)                             # ids / mask / size computations
            continue
        if isinstance(m, QuantEmbedding):
            add(_embedding_layer(gm, node, m, placeholders, inputs, vals), node)
            continue
        if isinstance(m, QuantTokenMean):
            i, q = src_of(node)
            nd = vals[node.args[0]].dim()
            axis = m.dim % nd
            if axis == 0:
                raise ValueError(f"export: {node.target}: a mean over the batch axis")
            srcs = [(i, q)] + ([mask_input(node, 1, axis)] if len(node.args) > 1 else [])
            out_q = qparams_of(m.output_quantizer)
            mm, ss = _multiplier(q.scale / out_q.scale, mult_bits)
            add(IntLayer(name=str(node.target), kind="mean",
                         inputs=tuple(j for j, _ in srcs), in_q=tuple(p for _, p in srcs),
                         out_q=out_q, m=mm, s=ss, axis=axis), node)
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
            srcs = [src_of(node)] + ([mask_input(node, 1, -1)] if len(node.args) > 1 else [])
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
        if node.op == "call_function" and node.target is torch.select:
            i, q = src_of(node)
            nd = vals[node.args[0]].dim()
            axis, index = node.args[1] % nd, node.args[2]
            if axis == 0 or index < 0:
                raise ValueError(f"export: {node.format_node()}: select of the batch axis or "
                                 "from the end")
            add(IntLayer(name=str(node.name), kind="select", inputs=(i,), in_q=(q,), out_q=q,
                         axis=axis, index=index), node)
            continue
        if node.op == "call_method" and node.target == "unsqueeze":
            i, q = src_of(node)
            d = node.args[1] % val.dim()
            if d == 0 and i >= 0 and layers[i].kind == "position_embedding":
                where[node] = (i, q)                   # the executor's table is batched
                continue
            shape = list(val.shape[1:])
            if d == 0 or dynamic and shape.count(seq_example) != 1:
                raise ValueError(f"export: {node.format_node()}: unsqueeze of the batch axis "
                                 "or, with a variable sequence length, of a tensor without "
                                 "one sequence axis")
            if dynamic:
                shape[shape.index(seq_example)] = -1
            add(IntLayer(name=str(node.name), kind="reshape", inputs=(i,), in_q=(q,),
                         out_q=q, shape=tuple(shape)), node)
            continue
        if is_passthrough(gm, node):
            i, q = src_of(node)
            x = vals[node.args[0]]
            if tuple(val.shape) == tuple(x.shape) and not (dynamic and node.target in (
                    "view", "reshape", torch.reshape)):
                where[node] = (i, q)                   # dropout / identity / no-op view
            elif val.dim() == 2 and val.shape[0] == x.shape[0] and x.is_contiguous():
                add(IntLayer(name=str(node.name), kind="flatten", inputs=(i,), in_q=(q,),
                             out_q=q), node)
            elif val.dim() >= 1 and val.shape[0] == x.shape[0] and \
                    (node.target in ("view", "reshape") or node.target is torch.reshape):
                add(IntLayer(name=str(node.name), kind="reshape", inputs=(i,), in_q=(q,),
                             out_q=q, shape=_reshape_shape(node, val, dynamic)), node)
            else:
                raise ValueError(f"export: reshape {node.format_node()} is not a flatten")
            continue
        raise ValueError(f"export: unsupported op {node.format_node()}")
    if output is None:
        raise ValueError("export: no output found")
    meta = {"quant_config": cfg.to_dict(), "notes": list(info.notes)}
    if dynamic:               # the example's sequence length: what cost reports default to
        ph, v = next((p, v) for p, v in zip(placeholders, inputs) if -1 in v.shape)
        meta["seq_len"] = int(vals[ph].shape[1 + v.shape.index(-1)])
    return IntNetwork(layers=tuple(layers), inputs=tuple(inputs), acc_bits=acc_bits,
                      mult_bits=mult_bits, output=output, meta=meta)


def _node_args(node: fx.Node) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: out.append(n))
    return out


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(_node_args(n))
    return seen


def _reshape_shape(node: fx.Node, val: torch.Tensor, dynamic: bool) -> tuple[int, ...]:
    """The per-sample shape of a reshape; in a network with a variable sequence length,
    the axis given by a size of the input (a graph node) is ``-1``."""
    shape = list(val.shape[1:])
    if dynamic:
        dims = node.args[1:]
        if len(dims) == 1 and isinstance(dims[0], tuple | list):
            dims = tuple(dims[0])
        for j, d in enumerate(dims[1:]):
            if isinstance(d, fx.Node):
                shape[j] = -1
        if shape.count(-1) > 1:
            raise ValueError(f"export: reshape {node.format_node()} has more than one "
                             "variable axis")
    return tuple(int(d) for d in shape)


def _run_nodes(gm: fx.GraphModule, target: fx.Node, env: dict) -> torch.Tensor:
    """Evaluate ``target`` from the values in ``env`` (its placeholders) through its
    ancestors (buffers, sizes, ATen calls)."""
    order = [n for n in gm.graph.nodes if n in _ancestors(target)]
    for n in order:
        if n in env:
            continue
        a = fx.node.map_arg(n.args, lambda x: env[x])
        kw = fx.node.map_arg(n.kwargs, lambda x: env[x])
        if n.op == "get_attr":
            obj = gm
            for part in n.target.split("."):
                obj = getattr(obj, part)
            env[n] = obj
        elif n.op == "call_function":
            env[n] = n.target(*a, **kw)
        elif n.op == "call_method":
            env[n] = getattr(a[0], n.target)(*a[1:], **kw)
        elif n.op == "call_module":
            env[n] = gm.get_submodule(n.target)(*a, **kw)
        else:
            raise ValueError(f"export: cannot evaluate {n.format_node()}")
    return env[target]


def _embedding_layer(gm, node, m: QuantEmbedding, placeholders, inputs, vals) -> IntLayer:
    """``embedding`` (ids from an input) or ``position_embedding`` (ids computed from the
    sequence length only, e.g. ``arange`` position ids or default token types): the
    table on the output grid, per position ``p`` in the second case."""
    name = str(node.target)
    out_q = qparams_of(m.output_quantizer)
    with torch.no_grad():
        codes = m.output_quantizer.to_int(m.module.weight).numpy()
    ids = node.args[0]
    if ids in placeholders:
        k = placeholders.index(ids)
        return IntLayer(name=name, kind="embedding", inputs=(-1 - k,), in_q=(IDS_Q,),
                        out_q=out_q, table=codes)
    anc = _ancestors(ids)
    if any(inputs[placeholders.index(p)].kind == "act" for p in placeholders if p in anc):
        raise ValueError(f"export: the ids of {name} depend on a float input")
    got = vals[ids]
    seq = got.shape[-1]
    if got.dim() == 1:                                 # arange(S): one row for the batch
        got = got[None]
    if got.dim() != 2 or not bool((got == got[:1]).all()):
        raise ValueError(f"export: the ids of {name} are not token ids from an input nor the "
                         "same for every sequence of the batch (positions)")
    srcs = [p for p in placeholders if p in anc]
    ref = placeholders.index(srcs[0]) if srcs else 0
    # the ids at the longest length (the shortest integer buffer they are sliced from, e.g.
    # BERT's position_ids, else the table's rows): the inputs the sizes come from, stretched
    lengths = [int(t.shape[-1]) for t in (_run_nodes(gm, b, {}) for b in anc
                                          if b.op == "get_attr")
               if isinstance(t, torch.Tensor) and t.dim() >= 1 and not t.is_floating_point()]
    longest = max(min(lengths, default=m.module.num_embeddings), seq)

    def at(n: int) -> torch.Tensor:
        env = {}
        for p in srcs:
            v = vals[p]
            shape = [1] + [n if d == seq else d for d in v.shape[1:]]
            env[p] = torch.zeros(shape, dtype=v.dtype)
        return _run_nodes(gm, ids, env)

    try:
        full = at(longest).reshape(-1)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"export: cannot compute the position ids of {name} for "
                         f"{longest} tokens ({type(exc).__name__}: {exc})") from None
    if full.numel() != longest or not torch.equal(full[:seq], got[0]) or \
            seq > 1 and not torch.equal(at(seq - 1).reshape(-1), full[:seq - 1]):
        raise ValueError(f"export: the ids of {name} are not a prefix of one sequence of "
                         "positions (ids computed in another way from the length)")
    if int(full.min()) < 0 or int(full.max()) >= codes.shape[0]:
        raise ValueError(f"export: position ids of {name} out of its {codes.shape[0]} rows")
    q = inputs[ref].q
    return IntLayer(name=name, kind="position_embedding", inputs=(-1 - ref,), in_q=(q,),
                    out_q=out_q, table=codes[full.numpy()])


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
def exact_outputs(qmodel: nn.Module, x, *, net: IntNetwork | None = None,
                  mask: torch.Tensor | None = None) -> np.ndarray:
    """Integer output codes of ``qmodel`` on ``x`` (a tensor, and the attention ``mask`` if
    the model takes one; or a tuple / dict of the model's inputs, e.g. token ids and mask)
    in :func:`exact_mode` (``net`` exported from the first sample unless given): equal to
    ``executor.run(net, ...)`` on the same (quantized) inputs."""
    args = _as_args(qmodel, x, mask)
    with exact_mode(qmodel, [a[:1] for a in args], net=net) as net:
        y = qmodel(*args)
    return to_int(y, net.output_q).numpy()


@torch.no_grad()
def integer_outputs(qmodel: nn.Module, x, *, exact: bool = False
                    ) -> dict[str, np.ndarray]:
    """The fake-quant model's integer tensors at every activation quantizer, keyed by the
    exported layer name (for per-layer comparisons with ``sim.executor``); in
    :func:`exact_mode` when ``exact``. ``x``: a tensor, or a tuple / dict of the model's
    inputs."""
    args = _as_args(qmodel, x)
    if exact:
        with exact_mode(qmodel, [a[:1] for a in args]):
            return integer_outputs(qmodel, tuple(args))
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
        qmodel(*args)
    finally:
        for h in hooks:
            h.remove()
    return got
