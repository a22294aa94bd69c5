"""``quant.capture``: a model that ``torch.fx`` cannot trace (e.g. a Hugging Face encoder)
-> an fx graph of the modules and functions :func:`quant.quantize` knows.

``torch.export`` captures the model (batch and sequence axes dynamic, so the graph holds
no batch size); its ATen graph is translated back to module calls (``aten.linear`` with an
``nn.Linear``'s parameters -> that module, likewise ``layer_norm`` and ``conv2d``) and
plain torch functions (``matmul``, ``softmax``, ``reshape``, ``transpose``, ...);
``scaled_dot_product_attention`` is decomposed into ``Q K^T * scale -> softmax -> @ V``
(a boolean ``attn_mask`` becomes :func:`quant.modules.masked_softmax`).

Token models: ``aten.embedding`` becomes a call of its ``nn.Embedding``; what is computed
from integer inputs (token ids, attention masks), buffers and sizes only (position ids from
``arange`` or a buffer slice, default token-type ids, mask expansions) is kept as ATen calls
(it is data for the integer ops, not an activation). An additive float mask added to the
attention scores before a softmax (BERT's extended mask ``(1 - mask) * min``, or a float
``attn_mask``) becomes a masked softmax of the positions it keeps
(:func:`quant.tokens.additive_mask_keep`); ``sum(x * mask, 1) / clamp(sum(mask, 1), eps)``
(sentence-transformers' mean pooling) becomes :func:`quant.tokens.masked_mean`.
If ``torch.export`` fails, ``torch.fx.symbolic_trace`` is tried. An op with no translation
that the output needs is a ``ValueError`` naming the op, the module path it came from and
the supported ops.
"""

from __future__ import annotations

import inspect
import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from .modules import masked_softmax
from .tokens import additive_mask_keep, masked_mean

__all__ = ["capture", "SUPPORTED_ATEN"]

_aten = torch.ops.aten
_IDENTITY = {_aten.dropout.default, _aten.clone.default, _aten.contiguous.default,
             _aten.alias.default, _aten.detach.default}
_FUNCTIONS = {_aten.add.Tensor: operator.add, _aten.mul.Tensor: operator.mul,
              _aten.div.Tensor: operator.truediv, _aten.sub.Tensor: operator.sub,
              _aten.matmul.default: torch.matmul, _aten.bmm.default: torch.matmul,
              _aten.relu.default: F.relu, _aten.silu.default: F.silu,
              _aten.hardswish.default: F.hardswish, _aten.relu6.default: F.relu6,
              _aten.leaky_relu.default: F.leaky_relu, _aten.flatten.using_ints: torch.flatten,
              _aten.max_pool2d.default: F.max_pool2d, _aten.avg_pool2d.default: F.avg_pool2d,
              _aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d,
              _aten.tanh.default: torch.tanh, _aten.sigmoid.default: torch.sigmoid}
_METHODS = {_aten.view.default: "reshape", _aten.reshape.default: "reshape",
            _aten.transpose.int: "transpose", _aten.permute.default: "permute",
            _aten.sym_size.int: "size", _aten.mean.dim: "mean"}
_MODULE_OPS = {_aten.linear.default: nn.Linear, _aten.layer_norm.default: nn.LayerNorm,
               _aten.conv2d.default: nn.Conv2d, _aten.embedding.default: nn.Embedding}
_TO_OPS = {_aten.to.dtype, _aten._to_copy.default, _aten.to.dtype_layout, _aten.to.device}
_BIG = 2 ** 62
#: the ATen ops :func:`capture` translates (plus any op on integer inputs, buffers and sizes)
SUPPORTED_ATEN = sorted({str(op) for op in (*_IDENTITY, *_FUNCTIONS, *_METHODS,
                                            *_MODULE_OPS)}
                        | {"aten.gelu.default", "aten.softmax.int", "aten._softmax.default",
                           "aten.scaled_dot_product_attention.default", "aten.select.int",
                           "aten.unsqueeze.default",
                           "aten.slice.Tensor (whole axis)", "aten.to (same float dtype)",
                           "aten.sum.dim_IntList + aten.div.Tensor (masked mean)"})
_SKIP = {"aten._assert_tensor_metadata.default"}


def _module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "<top level>"
    path, _ = list(stack.values())[-1]
    return path or "<top level>"


def _export(model: nn.Module, args: tuple, kwargs: dict):
    """``torch.export`` with a dynamic batch axis (0) and a dynamic sequence axis (axis 1 of
    the first 3-D input, and every axis of that length in the other inputs, e.g. a mask's
    last); static shapes if that fails."""
    flat = list(args) + list(kwargs.values())
    seq_len = next((t.shape[1] for t in flat if isinstance(t, torch.Tensor) and t.dim() >= 2
                    and (t.dim() == 3 or not t.is_floating_point()) and t.shape[1] > 1), None)
    names = list(inspect.signature(model.forward).parameters)

    def dims_for(batch, seq):
        def spec(t):
            if not isinstance(t, torch.Tensor) or t.dim() == 0:
                return None
            d = {0: batch}
            d.update({i: seq for i in range(1, t.dim())
                      if seq_len and t.shape[i] == seq_len})
            return d
        dims = dict(zip(names, [spec(t) for t in args]))
        dims.update({k: spec(v) for k, v in kwargs.items()})
        return dims

    # automatic dynamic dims (torch.export infers bounds, e.g. a sequence no longer than
    # the position table, and which sizes are equal), else named dims, else static shapes
    for batch, seq in ((torch.export.Dim.AUTO, torch.export.Dim.AUTO),
                       (torch.export.Dim("batch"), torch.export.Dim("seq"))):
        try:
            return torch.export.export(model, args, kwargs, dynamic_shapes=dims_for(batch,
                                                                                     seq))
        except Exception:  # noqa: BLE001, S112 - any failure: try the next form
            continue
    return torch.export.export(model, args, kwargs)


def capture(model: nn.Module, example_args, example_kwargs: dict | None = None, *,
            output: int = 0) -> fx.GraphModule:
    """An fx ``GraphModule`` of ``model`` (in eval mode) that :func:`quant.quantize` and
    :func:`quant.export` accept; it computes what ``model`` does on the example inputs
    (output number ``output`` if ``model`` returns several, e.g. 1 for a ``BertModel``'s
    ``pooler_output``)."""
    if not isinstance(example_args, tuple):
        example_args = (example_args,)
    kwargs = dict(example_kwargs or {})
    model = model.eval()
    try:
        ep = _export(model, example_args, kwargs)
    except Exception as exc:  # noqa: BLE001 - fall back to torch.fx
        try:
            return fx.symbolic_trace(model)
        except Exception as exc2:  # noqa: BLE001
            raise ValueError(f"capture: torch.export failed ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}) and torch.fx "
                             f"failed ({type(exc2).__name__}: {exc2})") from None
    src = ep.module()
    modules = dict(model.named_modules())
    params = {n: p for n, p in model.named_parameters()}
    g = fx.Graph()
    env: dict[fx.Node, object] = {}
    attrs: dict[fx.Node, str] = {}
    derived: set[fx.Node] = set()        # computed from integer inputs / buffers / sizes
    pending: dict[fx.Node, str] = {}     # untranslated ops: an error if the output needs them

    def lookup(n: fx.Node):
        if n not in env and n in attrs:          # a buffer read by an integer computation
            env[n] = g.get_attr(attrs[n])
        return env[n]

    def arg(a):
        return fx.node.map_arg(a, lookup)

    def nodes_in(node: fx.Node) -> list[fx.Node]:
        out: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: out.append(n))
        return out

    def is_float(n) -> bool:
        v = n.meta.get("val") if isinstance(n, fx.Node) else None
        return isinstance(v, torch.Tensor) and v.is_floating_point()

    def owner_of(node: fx.Node, op, cls) -> str:
        k = {_aten.layer_norm.default: 2, _aten.embedding.default: 0}.get(op, 1)
        w = node.args[k]
        path = attrs.get(w, "")
        owner = path.rpartition(".")[0]
        if not isinstance(modules.get(owner), cls) or \
                params.get(path) is not getattr(modules[owner], "weight", None):
            raise ValueError(f"capture: {op} at {_module_path(node)} does not use an "
                             f"{cls.__name__}'s own parameters")
        return owner

    def mask_part(a) -> tuple[fx.Node, fx.Node] | None:
        """``(x, mask)`` of an ``add`` of an activation and a float mask."""
        if not isinstance(a, fx.Node) or a.target is not _aten.add.Tensor \
                or len(a.args) != 2 or not all(isinstance(v, fx.Node) for v in a.args):
            return None
        x, m = a.args
        if x in derived:
            x, m = m, x
        return (x, m) if m in derived and x not in derived and is_float(m) else None

    def masked_mean_parts(node) -> tuple[fx.Node, fx.Node, int] | None:
        """``(x, mask, dim)`` of ``sum(x * mask, dim) / clamp(sum(mask, dim), eps)``."""
        num, den = node.args[:2]
        if not isinstance(num, fx.Node) or num.target is not _aten.sum.dim_IntList or \
                not isinstance(den, fx.Node) or den not in derived:
            return None
        dims, keep = num.args[1], num.args[2] if len(num.args) > 2 else False
        prod = num.args[0]
        if keep or len(dims) != 1 or prod.target is not _aten.mul.Tensor:
            return None
        x, m = prod.args
        if x in derived:
            x, m = m, x
        if m not in derived or x in derived:
            return None
        return x, m, int(dims[0])

    for node in src.graph.nodes:
        if node.op == "get_attr":
            attrs[node] = str(node.target)
            derived.add(node)
            continue
        if node.op == "placeholder":
            env[node] = ph = g.placeholder(node.name)
            v = node.meta.get("val")
            if isinstance(v, torch.Tensor):
                ph.meta["qaccel_dtype"] = v.dtype
                ph.meta["qaccel_shape"] = tuple(int(d) if isinstance(d, int) else -1
                                                for d in v.shape[1:])   # -1: dynamic
                if not v.is_floating_point():
                    derived.add(node)
            continue
        if node.op == "call_module":                         # _guards_fn
            continue
        if node.op == "output":
            outs = [o for o in fx.node.map_arg(node.args[0], lambda n: n)
                    ] if isinstance(node.args[0], tuple | list) else [node.args[0]]
            if not 0 <= output < len(outs):
                raise ValueError(f"capture: output={output}, but the model returns "
                                 f"{len(outs)} output(s)")
            g.output(env[outs[output]])
            break
        op = node.target
        ins = nodes_in(node)
        if str(op) in _SKIP:
            continue
        if op in _IDENTITY or op in _TO_OPS and is_float(node) and ins and \
                ins[0] not in derived and node.meta["val"].dtype == ins[0].meta["val"].dtype:
            env[node] = env[node.args[0]]
            if node.args[0] in derived:
                derived.add(node)
        elif op in _MODULE_OPS:
            x = node.args[1] if op is _aten.embedding.default else node.args[0]
            env[node] = g.call_module(owner_of(node, op, _MODULE_OPS[op]), (lookup(x),))
        elif op is _aten.sym_size.int:
            env[node] = g.call_method("size", arg(node.args))
            derived.add(node)
        elif all(n in derived for n in ins):              # data for the integer ops
            env[node] = g.call_function(op, arg(node.args), arg(node.kwargs))
            derived.add(node)
        elif op is _aten.div.Tensor and masked_mean_parts(node) is not None:
            x, m, dim = masked_mean_parts(node)
            env[node] = g.call_function(masked_mean, (env[x], lookup(m), dim))
        elif op in _FUNCTIONS:
            env[node] = g.call_function(_FUNCTIONS[op], arg(node.args), arg(node.kwargs))
        elif op in _METHODS:
            a = arg(node.args)
            if _METHODS[op] in ("reshape", "permute"):
                a = (a[0], *a[1])
            env[node] = g.call_method(_METHODS[op], a, arg(node.kwargs))
        elif op is _aten.unsqueeze.default:
            env[node] = g.call_method("unsqueeze", arg(node.args))
        elif op is _aten.select.int:
            env[node] = g.call_function(torch.select, arg(node.args))
        elif op is _aten.slice.Tensor and tuple(node.args[2:]) in ((), (0,)) or \
                op is _aten.slice.Tensor and len(node.args) >= 4 and node.args[2] in (0, None) \
                and isinstance(node.args[3], int) and node.args[3] >= _BIG:
            env[node] = env[node.args[0]]                 # x[:, :] (the whole axis)
        elif op is _aten.gelu.default:
            env[node] = g.call_function(F.gelu, (env[node.args[0]],),
                                        {"approximate": node.kwargs.get("approximate",
                                                                        "none")})
        elif op in (_aten.softmax.int, _aten._softmax.default):
            parts = mask_part(node.args[0])
            if parts is not None and node.args[1] in (-1, node.args[0].meta["val"].dim() - 1):
                keep = g.call_function(additive_mask_keep, (lookup(parts[1]),))
                env[node] = g.call_function(masked_softmax, (env[parts[0]], keep))
            else:
                env[node] = g.call_function(F.softmax, (env[node.args[0]],),
                                            {"dim": node.args[1]})
        elif op is _aten.scaled_dot_product_attention.default:
            q, k, v = (env[a] for a in node.args[:3])
            extra = dict(zip(("attn_mask", "dropout_p", "is_causal"), node.args[3:]))
            extra.update(node.kwargs)
            mask = extra.get("attn_mask")
            if extra.get("is_causal"):
                raise ValueError(f"capture: scaled_dot_product_attention at "
                                 f"{_module_path(node)} with causal masking is not "
                                 "supported; pass the mask as attn_mask")
            d = node.args[0].meta["val"].shape[-1]
            scale = extra.get("scale") or 1.0 / math.sqrt(int(d))
            kt = g.call_method("transpose", (k, -2, -1))
            s = g.call_function(operator.mul, (g.call_function(torch.matmul, (q, kt)),
                                               float(scale)))
            if mask is None:
                p = g.call_function(F.softmax, (s,), {"dim": -1})
            else:
                keep = lookup(mask)
                if mask.meta["val"].dtype != torch.bool:          # additive float mask
                    keep = g.call_function(additive_mask_keep, (keep,))
                p = g.call_function(masked_softmax, (s, keep))
            env[node] = g.call_function(torch.matmul, (p, v))
        else:
            env[node] = g.call_function(op, arg(node.args), arg(node.kwargs))
            pending[env[node]] = (f"capture: unsupported op {op} at {_module_path(node)}; "
                                  f"supported: {', '.join(SUPPORTED_ATEN)}")
    gm = fx.GraphModule(model, g, class_name=f"Captured{type(model).__name__}")
    gm.graph.eliminate_dead_code()
    live = [n for n in gm.graph.nodes if n in pending]
    if live:
        raise ValueError(pending[live[0]])
    gm.recompile()
    return gm
