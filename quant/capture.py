"""``quant.capture``: a model that ``torch.fx`` cannot trace (e.g. a Hugging Face encoder)
-> an fx graph of the modules and functions :func:`quant.quantize` knows.

``torch.export`` captures the model (batch and sequence axes dynamic, so the graph holds
no batch size); its ATen graph is translated back to module calls (``aten.linear`` with an
``nn.Linear``'s parameters -> that module, likewise ``layer_norm`` and ``conv2d``) and
plain torch functions (``matmul``, ``softmax``, ``reshape``, ``transpose``, ...);
``scaled_dot_product_attention`` is decomposed into ``Q K^T * scale -> softmax -> @ V``
(a boolean ``attn_mask`` becomes :func:`quant.modules.masked_softmax`).
If ``torch.export`` fails, ``torch.fx.symbolic_trace`` is tried. An op with no translation
is a ``ValueError`` naming the op, the module path it came from and the supported ops.
"""

from __future__ import annotations

import inspect
import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from .modules import masked_softmax

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
               _aten.conv2d.default: nn.Conv2d}
#: the ATen ops :func:`capture` translates
SUPPORTED_ATEN = sorted({str(op) for op in (*_IDENTITY, *_FUNCTIONS, *_METHODS,
                                            *_MODULE_OPS)}
                        | {"aten.gelu.default", "aten.softmax.int", "aten._softmax.default",
                           "aten.scaled_dot_product_attention.default"})
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
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    flat = list(args) + list(kwargs.values())
    seq_len = next((t.shape[1] for t in flat if isinstance(t, torch.Tensor) and t.dim() == 3
                    and t.shape[1] > 1), None)

    def spec(t):
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return None
        d = {0: batch}
        d.update({i: seq for i in range(1, t.dim()) if seq_len and t.shape[i] == seq_len})
        return d

    try:
        names = list(inspect.signature(model.forward).parameters)
        dims = dict(zip(names, [spec(t) for t in args]))
        dims.update({k: spec(v) for k, v in kwargs.items()})
        return torch.export.export(model, args, kwargs, dynamic_shapes=dims)
    except Exception:  # noqa: BLE001 - any failure: retry with static shapes
        return torch.export.export(model, args, kwargs)


def capture(model: nn.Module, example_args, example_kwargs: dict | None = None
            ) -> fx.GraphModule:
    """An fx ``GraphModule`` of ``model`` (in eval mode) that :func:`quant.quantize` and
    :func:`quant.export` accept; it computes what ``model`` does on the example inputs
    (the first output if ``model`` returns several)."""
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

    def arg(a):
        return fx.node.map_arg(a, lambda n: env[n])

    def owner_of(node: fx.Node, op, cls) -> str:
        w = node.args[1] if op is not _aten.layer_norm.default else node.args[2]
        path = attrs.get(w, "")
        owner = path.rpartition(".")[0]
        if not isinstance(modules.get(owner), cls) or \
                params.get(path) is not getattr(modules[owner], "weight", None):
            raise ValueError(f"capture: {op} at {_module_path(node)} does not use an "
                             f"{cls.__name__}'s own parameters")
        return owner

    for node in src.graph.nodes:
        if node.op == "get_attr":
            attrs[node] = str(node.target)
            continue
        if node.op == "placeholder":
            env[node] = g.placeholder(node.name)
            continue
        if node.op == "call_module":                         # _guards_fn
            continue
        if node.op == "output":
            outs = [o for o in fx.node.map_arg(node.args[0], lambda n: n)
                    ] if isinstance(node.args[0], tuple | list) else [node.args[0]]
            first = outs[0]
            g.output(env[first])
            break
        op = node.target
        if str(op) in _SKIP:
            continue
        if op in _IDENTITY:
            env[node] = env[node.args[0]]
        elif op in _MODULE_OPS:
            env[node] = g.call_module(owner_of(node, op, _MODULE_OPS[op]),
                                      (env[node.args[0]],))
        elif op in _FUNCTIONS:
            env[node] = g.call_function(_FUNCTIONS[op], arg(node.args), arg(node.kwargs))
        elif op in _METHODS:
            a = arg(node.args)
            if _METHODS[op] in ("reshape", "permute"):
                a = (a[0], *a[1])
            env[node] = g.call_method(_METHODS[op], a, arg(node.kwargs))
        elif op is _aten.gelu.default:
            env[node] = g.call_function(F.gelu, (env[node.args[0]],),
                                        {"approximate": node.kwargs.get("approximate",
                                                                        "none")})
        elif op in (_aten.softmax.int, _aten._softmax.default):
            env[node] = g.call_function(F.softmax, (env[node.args[0]],),
                                        {"dim": node.args[1]})
        elif op is _aten.scaled_dot_product_attention.default:
            q, k, v = (env[a] for a in node.args[:3])
            extra = dict(zip(("attn_mask", "dropout_p", "is_causal"), node.args[3:]))
            extra.update(node.kwargs)
            mask = extra.get("attn_mask")
            if extra.get("is_causal") or isinstance(mask, fx.Node) and \
                    mask.meta["val"].dtype != torch.bool:
                raise ValueError(f"capture: scaled_dot_product_attention at "
                                 f"{_module_path(node)} with causal masking or a float "
                                 "(additive) attention mask is not supported; pass a "
                                 "boolean mask")
            d = node.args[0].meta["val"].shape[-1]
            scale = extra.get("scale") or 1.0 / math.sqrt(int(d))
            kt = g.call_method("transpose", (k, -2, -1))
            s = g.call_function(operator.mul, (g.call_function(torch.matmul, (q, kt)),
                                               float(scale)))
            p = g.call_function(F.softmax, (s,), {"dim": -1}) if mask is None else \
                g.call_function(masked_softmax, (s, env[mask]))
            env[node] = g.call_function(torch.matmul, (p, v))
        else:
            raise ValueError(f"capture: unsupported op {op} at {_module_path(node)}; "
                             f"supported: {', '.join(SUPPORTED_ATEN)}")
    gm = fx.GraphModule(model, g, class_name=f"Captured{type(model).__name__}")
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm
