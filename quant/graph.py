"""torch.fx graph helpers: op classification, BN folding (eq. 9-12), activation fusion,
and the insertion of quantized modules.

BN statistics of every folded layer are recorded (``LayerStats``: the pre-activation
output's per-channel mean ``beta`` and std ``|gamma|``, and the fused activation) for
BN-based range setting (eq. 18-19), high-bias absorption (eq. 24) and analytic bias
correction (eq. 28).
"""

from __future__ import annotations

import copy
import inspect
import operator
import os
import traceback
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from .calib_data import run_batch
from .modules import (
    LINEAR_TYPES,
    QuantAct,
    QuantAdd,
    QuantAvgPool,
    QuantLayer,
    QuantLayerNorm,
    QuantMatmul,
    QuantSoftmax,
    act_quantizer,
    is_quantizable,
    masked_softmax,
)
from .quantizers import Quantizer
from .tokens import QuantEmbedding, QuantTokenMean, masked_mean

__all__ = ["LayerStats", "trace", "fold_batchnorm", "fuse_activations", "insert_quantizers",
           "is_quantizable", "producer_chain", "LINEAR_TYPES", "ValueRecorder"]


@dataclass
class LayerStats:
    """Per-channel statistics of a layer's pre-activation output (from folded BN)."""

    beta: torch.Tensor
    gamma: torch.Tensor


def _concrete_args(model: nn.Module, batches: list | None) -> dict:
    """Forward parameters that default to ``None`` and are never given a value by the
    calibration batches are specialised (``concrete_args``) so that ``if arg is None``
    branches trace correctly; calling the traced model with another value raises."""
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return {}
    params = [p for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    given: set[str] = set()
    for b in batches or []:
        if isinstance(b, torch.Tensor):
            names = [params[0].name] if params else []
        elif isinstance(b, tuple | list):
            names = [p.name for p, v in zip(params, b) if v is not None]
        elif isinstance(b, dict):
            names = [k for k, v in b.items() if v is not None]
        else:
            names = []
        given.update(names)
    return {p.name: None for p in params
            if p.default is None and p.name not in given}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5,
                                                     equal_nan=True)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b)


def _where(exc: BaseException) -> str:
    """``file:line in function: `source``` of the innermost frame of ``exc``'s traceback
    outside torch (the user's code that could not be traced), or ``""``."""
    torch_dir = os.path.dirname(torch.__file__)
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(torch_dir)]
    if not frames:
        return ""
    f = frames[-1]
    code = f" `{f.line.strip()}`" if f.line else ""
    return f" at {os.path.basename(f.filename)}:{f.lineno} in {f.name}(){code}"


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}{_where(exc)}"


def trace(model: nn.Module, batches: list | None = None
          ) -> tuple[fx.GraphModule | None, str]:
    """``(graph_module, "")`` or ``(None, reason)`` if torch.fx cannot trace ``model`` or
    the traced graph does not reproduce the model on the first calibration batch. The
    reason names the exception and the line of the model's code it came from."""
    name = type(model).__name__
    concrete = _concrete_args(model, batches)
    try:
        if isinstance(model, fx.GraphModule) and not concrete:
            # already a graph (e.g. quant.capture): keep it as it is, so that functions it
            # calls (masked_softmax) stay single nodes
            gm = fx.GraphModule(model, copy.deepcopy(model.graph),
                                class_name=type(model).__name__)
        else:
            gm = fx.symbolic_trace(model, concrete_args=concrete or None)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "not traceable"
        return None, f"torch.fx cannot trace {name} ({_why(exc)})"
    for node in gm.graph.nodes:       # fx renames specialised placeholders ("x_1")
        if node.op == "placeholder" and node.target.endswith("_1") \
                and node.target[:-2] in concrete:
            node.target = node.name = node.target[:-2]
    gm.recompile()
    if batches:
        try:
            with torch.no_grad():
                got, want = run_batch(gm, batches[0]), run_batch(model, batches[0])
        except Exception as exc:  # noqa: BLE001
            return None, f"the traced graph of {name} fails on calibration batch 0 " \
                         f"({_why(exc)})"
        if not _same(got, want):
            return None, (f"the traced graph of {name} does not reproduce the model on "
                          "calibration batch 0 (data-dependent control flow?)")
    return gm, ""


class ValueRecorder(fx.Interpreter):
    """Runs a graph module (``ValueRecorder(gm).run(*inputs)``) and keeps every node's
    result in ``values[node]``."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[fx.Node, object] = {}

    def run_node(self, n):
        out = super().run_node(n)
        self.values[n] = out
        return out


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    if node.op == "call_module":
        return gm.get_submodule(node.target)
    return None


def act_kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """``"relu"`` / ``"relu6"`` if ``node`` is that activation, else ``None``."""
    m = module_of(gm, node)
    if isinstance(m, nn.ReLU):
        return "relu"
    if isinstance(m, nn.ReLU6):
        return "relu6"
    if node.op == "call_function" and node.target in (F.relu, torch.relu, torch.relu_):
        return "relu"
    if node.op == "call_function" and node.target is F.relu6:
        return "relu6"
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return "relu"
    if node.op == "call_function" and node.target is F.hardtanh and \
            node.args[1:3] == (0.0, 6.0):
        return "relu6"
    return None


_TABLE_MODULES = {nn.SiLU: "silu", nn.Hardswish: "hardswish", nn.LeakyReLU: "leaky_relu",
                  nn.ReLU6: "relu6", nn.GELU: "gelu", nn.Tanh: "tanh"}
_TABLE_FUNCTIONS = {F.silu: "silu", F.hardswish: "hardswish", F.leaky_relu: "leaky_relu",
                    F.relu6: "relu6", F.gelu: "gelu", torch.tanh: "tanh", F.tanh: "tanh"}


def table_act(gm: fx.GraphModule, node: fx.Node) -> tuple[str, dict] | None:
    """``(func, params)`` if ``node`` is an elementwise activation exported as a table
    (:class:`QuantAct`), else ``None``."""
    m = module_of(gm, node)
    for cls, func in _TABLE_MODULES.items():
        if type(m) is cls:
            if func == "leaky_relu":
                return func, {"negative_slope": float(m.negative_slope)}
            if func == "gelu" and m.approximate != "none":
                return None
            return func, {}
    if node.op == "call_function" and node.target in _TABLE_FUNCTIONS:
        func = _TABLE_FUNCTIONS[node.target]
        if func == "leaky_relu":
            slope = node.args[1] if len(node.args) > 1 else \
                node.kwargs.get("negative_slope", 0.01)
            return func, {"negative_slope": float(slope)}
        if func == "gelu" and node.kwargs.get("approximate", "none") != "none":
            return None
        return func, {}
    if act_kind(gm, node) == "relu6":
        return "relu6", {}
    return None


def is_last_transpose(node: fx.Node) -> bool:
    """``x.transpose(-2, -1)`` / ``torch.transpose(x, -1, -2)`` (the last two axes)."""
    if node.op == "call_method" and node.target == "transpose" or \
            node.op == "call_function" and node.target is torch.transpose:
        return tuple(node.args[1:3]) in ((-2, -1), (-1, -2)) and not node.kwargs
    return False


def permutation(node: fx.Node) -> tuple[int, ...] | None:
    """The axes of ``x.permute(...)`` / ``torch.permute`` (ints), or of
    ``x.transpose(i, j)`` with non-negative ``i, j`` as ``(i, j)`` (expanded by the
    exporter, which knows the rank)."""
    if node.kwargs:
        return None
    if node.op == "call_method" and node.target == "permute" or \
            node.op == "call_function" and node.target is torch.permute:
        dims = node.args[1:]
        if len(dims) == 1 and isinstance(dims[0], tuple | list):
            dims = tuple(dims[0])
        return tuple(dims) if all(isinstance(d, int) for d in dims) else None
    if (node.op == "call_method" and node.target == "transpose"
            or node.op == "call_function" and node.target is torch.transpose) \
            and not is_last_transpose(node) and len(node.args) == 3 \
            and all(isinstance(d, int) for d in node.args[1:]):
        return ("T", *node.args[1:])
    return None


def is_softmax(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Softmax over the last axis."""
    m = module_of(gm, node)
    if isinstance(m, nn.Softmax):
        return m.dim == -1
    if node.op == "call_function" and node.target is masked_softmax:
        return True
    if node.op == "call_function" and node.target in (F.softmax, torch.softmax) or \
            node.op == "call_method" and node.target == "softmax":
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return dim == -1 and set(node.kwargs) <= {"dim", "_stacklevel", "dtype"} \
            and node.kwargs.get("dtype") is None
    return False


def is_matmul(node: fx.Node) -> bool:
    """A product of two activations (``torch.matmul``, ``@``, ``torch.bmm``)."""
    if node.op == "call_function" and node.target in (torch.matmul, operator.matmul,
                                                      torch.bmm):
        return len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args)
    return False


def _constant_factor(node: fx.Node) -> float | None:
    """The constant ``c`` of a ``x * c`` / ``c * x`` / ``x / c`` node, else ``None``."""
    if node.op != "call_function" or node.kwargs:
        return None
    a = node.args
    if node.target in (operator.mul, torch.mul) and len(a) == 2:
        c = a[1] if isinstance(a[0], fx.Node) else a[0]
        return float(c) if isinstance(c, int | float) else None
    if node.target in (operator.truediv, torch.div) and len(a) == 2 and \
            isinstance(a[1], int | float) and a[1] != 0:
        return 1.0 / float(a[1])
    return None


def is_add(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in (operator.add, torch.add, operator.iadd):
        args = node.args
    elif node.op == "call_method" and node.target in ("add", "add_"):
        args = node.args
    else:
        return False
    return len(args) == 2 and all(isinstance(a, fx.Node) for a in args) and not node.kwargs


def avgpool_spec(gm: fx.GraphModule, node: fx.Node) -> dict | None:
    """Description of an average pool node, or ``None``."""
    m = module_of(gm, node)
    if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
        return {"kind": "global", "keepdim": True}
    if isinstance(m, nn.AvgPool2d):
        pad = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
        if pad == (0, 0) and not m.ceil_mode and m.divisor_override is None:
            return {"kind": "avgpool2d", "kernel": m.kernel_size, "stride": m.stride}
        return None
    if node.op == "call_function" and node.target is F.avg_pool2d:
        names = ("input", "kernel_size", "stride", "padding", "ceil_mode",
                 "count_include_pad", "divisor_override")
        a = dict(zip(names, node.args)) | dict(node.kwargs)
        pad = a.get("padding", 0)
        if pad in (0, (0, 0)) and not a.get("ceil_mode", False) \
                and a.get("divisor_override") is None:
            k = a["kernel_size"]
            return {"kind": "avgpool2d", "kernel": k, "stride": a.get("stride") or k}
        return None
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d \
            and len(node.args) > 1 and node.args[1] in (1, (1, 1)):
        return {"kind": "global", "keepdim": True}
    if node.op == "call_method" and node.target == "mean":
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if isinstance(dim, int):
            dim = (dim,)                                   # x.mean(1): not a spatial mean
        if isinstance(dim, tuple | list) and tuple(dim) in ((2, 3), (-2, -1), (3, 2), (-1, -2)) \
                and len(node.args) <= 2 and set(node.kwargs) <= {"dim", "keepdim"}:
            return {"kind": "global", "keepdim": bool(node.kwargs.get("keepdim", False))}
    return None


def token_mean_spec(node: fx.Node) -> dict | None:
    """``{"dim": d}`` of a mean over one non-batch axis (``x.mean(d)``, ``torch.mean(x, d)``,
    :func:`quant.tokens.masked_mean`), else ``None``; spatial means are pools
    (:func:`avgpool_spec`)."""
    if node.op == "call_function" and node.target is masked_mean:
        names = ("x", "mask", "dim")
        a = dict(zip(names, node.args)) | dict(node.kwargs)
        return {"dim": int(a.get("dim", 1))} if set(a) <= set(names) else None
    if node.op == "call_method" and node.target == "mean" or \
            node.op == "call_function" and node.target is torch.mean:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if isinstance(dim, tuple | list) and len(dim) == 1:
            dim = dim[0]
        if isinstance(dim, int) and dim != 0 and len(node.args) <= 2 and \
                set(node.kwargs) <= {"dim"} | ({"keepdim"} if not node.kwargs.get("keepdim")
                                               else set()):
            return {"dim": dim}
    return None


def is_int_input(node: fx.Node) -> bool:
    """A placeholder holding integers (token ids, a mask): its dtype as captured
    (``quant.capture``), or, without one, read only by ``nn.Embedding`` s."""
    if node.op != "placeholder":
        return False
    dtype = node.meta.get("qaccel_dtype")
    if dtype is not None:
        return not dtype.is_floating_point
    gm = node.graph.owning_module
    return bool(node.users) and all(isinstance(module_of(gm, u), nn.Embedding)
                                    for u in node.users)


PASSTHROUGH_MODULES = (nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)


def is_passthrough(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Ops that keep values on their input's quantization grid."""
    m = module_of(gm, node)
    if isinstance(m, PASSTHROUGH_MODULES):
        return True
    if node.op == "call_function" and node.target in (torch.flatten, F.max_pool2d,
                                                      F.dropout, torch.reshape,
                                                      torch.select):
        return True
    if node.op == "call_method" and node.target in ("flatten", "view", "reshape",
                                                    "contiguous", "unsqueeze"):
        return True
    if is_last_transpose(node) or permutation(node) is not None:
        return True
    return act_kind(gm, node) == "relu"


def fold_batchnorm(gm: fx.GraphModule, stats: dict[str, LayerStats],
                   skipped: list[tuple[str, str]] | None = None) -> list[str]:
    """Fold every BatchNorm directly after a conv/linear with a single user (eq. 9-12):
    ``W~ = gamma W / sqrt(var + eps)``, ``b~ = beta + gamma (b - mu) / sqrt(var + eps)``.
    Records ``stats[layer_target] = (beta, |gamma|)``; returns the folded BN names and
    appends ``(bn_name, reason)`` to ``skipped`` for every BN left in the graph."""
    skipped = [] if skipped is None else skipped
    folded = []
    for node in list(gm.graph.nodes):
        bn = module_of(gm, node)
        if not isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d):
            continue
        src = node.args[0]
        layer = module_of(gm, src) if isinstance(src, fx.Node) else None
        if not is_quantizable(layer) or len(src.users) != 1:
            skipped.append((str(node.target), "not directly after a single-use conv/linear"))
            continue
        if not bn.track_running_stats or bn.running_mean is None:
            skipped.append((str(node.target), "no running statistics"))
            continue
        with torch.no_grad():
            std = torch.sqrt(bn.running_var + bn.eps)
            gamma = bn.weight if bn.affine else torch.ones_like(std)
            beta = bn.bias if bn.affine else torch.zeros_like(std)
            k = gamma / std
            w = layer.weight
            layer.weight.copy_(w * k.reshape((-1,) + (1,) * (w.dim() - 1)))
            b = layer.bias if layer.bias is not None else torch.zeros_like(std)
            new_b = beta + (b - bn.running_mean) * k
            layer.bias = nn.Parameter(new_b.detach().clone())
        stats[src.target] = LayerStats(beta=beta.detach().clone(),
                                       gamma=gamma.detach().abs().clone())
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        folded.append(str(node.target))
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return folded


def fuse_activations(gm: fx.GraphModule) -> dict[str, str]:
    """Remove ReLU/ReLU6 nodes that directly follow a single-use conv/linear; returns
    ``{layer_target: act}`` for the fused ones."""
    fused = {}
    for node in list(gm.graph.nodes):
        if not is_quantizable(module_of(gm, node)) or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        act = act_kind(gm, user)
        if act is None or user.args[0] is not node:
            continue
        fused[node.target] = act
        user.replace_all_uses_with(node)
        gm.graph.erase_node(user)
    gm.graph.lint()
    gm.recompile()
    return fused


def producer_chain(gm: fx.GraphModule, node: fx.Node, through) -> fx.Node | None:
    """Follow ``node.args[0]`` back through nodes accepted by ``through(node)``; returns the
    first node that is not accepted."""
    cur = node.args[0] if node.args else None
    while isinstance(cur, fx.Node) and through(cur):
        cur = cur.args[0] if cur.args else None
    return cur if isinstance(cur, fx.Node) else None


def _set_module(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def _swap_for_module(gm: fx.GraphModule, node: fx.Node, name: str, module: nn.Module,
                     args: tuple, end: fx.Node | None = None) -> fx.Node:
    """Replace ``node`` by a call of the new submodule ``name`` (``module``) on ``args``;
    ``end``, a node right after ``node`` that the module absorbs (e.g. a constant factor),
    goes too. Returns the new node."""
    end = node if end is None else end
    gm.add_submodule(name, module)
    with gm.graph.inserting_after(end):
        new = gm.graph.call_module(name, args)
    end.replace_all_uses_with(new)
    if end is not node:
        gm.graph.erase_node(end)
    gm.graph.erase_node(node)
    return new


def insert_quantizers(gm: fx.GraphModule, cfg, acts: dict[str, str]) -> list[str]:
    """Replace conv/linear modules with :class:`QuantLayer` (fused act, output quantizer),
    adds with :class:`QuantAdd`, average pools with :class:`QuantAvgPool`, and put an
    input quantizer after every placeholder. Layers whose input does not come from a
    quantizer (through grid-preserving ops) get their own input quantizer. Returns the
    :class:`QuantLayer` targets in graph order."""
    on_grid: dict[fx.Node, bool] = {}
    layers = []
    counter = 0
    erased: set[fx.Node] = set()

    def fresh(prefix: str) -> str:            # quant_add_3, input_quantizer_0, ...
        nonlocal counter
        counter += 1
        return f"{prefix}_{counter - 1}"

    def swap(node: fx.Node, prefix: str, module: nn.Module, args: tuple,
             end: fx.Node | None = None) -> None:
        on_grid[_swap_for_module(gm, node, fresh(prefix), module, args, end=end)] = True

    for node in list(gm.graph.nodes):
        if node in erased:
            continue
        if node.op == "placeholder":
            if not cfg.quantize_input or is_int_input(node):
                on_grid[node] = False
                continue
            name = fresh("input_quantizer")
            gm.add_submodule(name, act_quantizer(cfg.a_bits, cfg.a_signed))
            with gm.graph.inserting_after(node):
                qn = gm.graph.call_module(name, (node,))
            node.replace_all_uses_with(qn, delete_user_cb=lambda u, qn=qn: u is not qn)
            on_grid[node] = False
            on_grid[qn] = True
            continue
        m = module_of(gm, node)
        if node.op == "call_module" and isinstance(m, Quantizer):
            on_grid[node] = True
            continue
        if is_quantizable(m):
            ql = QuantLayer(m, cfg.w_bits, per_channel=cfg.per_channel,
                            power_of_two=cfg.power_of_two,
                            act=acts.get(node.target, "none"))
            ql.output_quantizer = act_quantizer(cfg.a_bits, cfg.a_signed)
            src = node.args[0]
            if not on_grid.get(src, False):
                ql.input_quantizer = act_quantizer(cfg.a_bits, cfg.a_signed)
            _set_module(gm, node.target, ql)
            layers.append(node.target)
            on_grid[node] = True
            continue
        if is_add(node):
            act = "none"
            if len(node.users) == 1:
                user = next(iter(node.users))
                act = act_kind(gm, user) or "none"
                if act != "none" and user.args[0] is node:
                    user.replace_all_uses_with(node)
                    gm.graph.erase_node(user)
                    erased.add(user)          # later in the node list: skip it there
                else:
                    act = "none"
            swap(node, "quant_add", QuantAdd(cfg.a_bits, signed=cfg.a_signed, act=act),
                 tuple(node.args))
            continue
        if isinstance(m, nn.Embedding):
            _set_module(gm, node.target, QuantEmbedding(m, cfg.a_bits, signed=cfg.a_signed))
            on_grid[node] = True
            continue
        tmean = token_mean_spec(node)
        if tmean is not None and on_grid.get(node.args[0], False):    # (a float mean of a
                                                                      # float op stays float)
            args = (node.args[0],) if node.target is not masked_mean else \
                tuple(a for a in node.args[:2] if a is not None)
            swap(node, "quant_mean", QuantTokenMean(cfg.a_bits, signed=cfg.a_signed, **tmean),
                 args)
            continue
        if isinstance(m, nn.LayerNorm):
            _set_module(gm, node.target, QuantLayerNorm(m, cfg.w_bits, cfg.a_bits,
                                                        signed=cfg.a_signed))
            on_grid[node] = True
            continue
        if is_softmax(gm, node) or is_matmul(node):
            soft = is_softmax(gm, node)
            end, alpha = node, 1.0
            if not soft and len(node.users) == 1:          # fold a constant factor
                user = next(iter(node.users))
                c = _constant_factor(user)
                if c is not None:
                    end, alpha = user, c
            mod = QuantSoftmax(cfg.a_bits) if soft else \
                QuantMatmul(cfg.a_bits, signed=cfg.a_signed, alpha=alpha)
            args = tuple(node.args) if not soft or node.target is masked_softmax \
                else (node.args[0],)
            if end is not node:
                erased.add(end)
            swap(node, f"quant_{'softmax' if soft else 'matmul'}", mod, args, end=end)
            continue
        table = table_act(gm, node)
        if table is not None:
            qa = QuantAct(table[0], cfg.a_bits, signed=cfg.a_signed, **table[1])
            if not on_grid.get(node.args[0], False):
                qa.input_quantizer = act_quantizer(cfg.a_bits, cfg.a_signed)
            swap(node, "quant_act", qa, (node.args[0],))
            continue
        spec = avgpool_spec(gm, node)
        if spec is not None:
            swap(node, "quant_avgpool", QuantAvgPool(cfg.a_bits, signed=cfg.a_signed, **spec),
                 (node.args[0],))
            continue
        if is_passthrough(gm, node) and node.args and isinstance(node.args[0], fx.Node):
            on_grid[node] = on_grid.get(node.args[0], False)
            continue
        on_grid[node] = False
    gm.graph.lint()
    gm.recompile()
    return layers
