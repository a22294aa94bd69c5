"""Map a PyTorch model (or a SCALE-Sim topology file) to the accelerator's GEMM workloads.

What becomes a GEMM (:class:`sim.workload.GemmWorkload`), in execution order:

* ``nn.Conv2d`` -- im2col with its padding, stride, dilation and groups
  (:func:`sim.workload.conv_workload`; a grouped / depthwise convolution is ``groups``
  per-group GEMMs, ``repeat = groups``); the batch multiplies ``T``.
* ``nn.Linear`` -- ``T`` = all leading dimensions of its input.
* ``torch.matmul`` / ``torch.bmm`` / ``Tensor.matmul`` / ``@`` -- ``[..., T, K] @ [..., K, N]``,
  ``repeat`` = the broadcast batch dimensions (e.g. batch x heads).
* ``F.scaled_dot_product_attention`` -- its two matmuls, ``Q K^T`` (``T=L, K=E, N=S``) and
  ``P V`` (``T=L, K=S, N=Ev``).
* ``nn.MultiheadAttention`` -- its input projections, the two attention matmuls and the
  output projection.

Two front ends give the same list: ``torch.fx`` (symbolic trace + shape propagation) where
the model traces, forward hooks (modules) plus a ``TorchFunctionMode`` (matmuls)
otherwise. Names are module paths; matmuls are named ``<module path>.matmul<i>``.
"""

from __future__ import annotations

import logging
import math
import operator
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from qaccel.sim.topology import read_topology
from qaccel.sim.workload import GemmWorkload, conv_workload, linear_workload, matmul_workload

__all__ = ["Workloads", "workloads_from_model", "workloads_from_topology", "fx_workloads",
           "hook_workloads"]

log = logging.getLogger("qaccel.mapping")


class Workloads(list):
    """The GEMM workloads (a ``list`` of :class:`GemmWorkload`) and how they were found:
    ``method`` (``"fx"`` or ``"hooks"``) and, when ``"auto"`` fell back from fx to hooks,
    ``fallback_reason`` (the fx exception, type and text)."""

    def __init__(self, items=(), method: str = "fx", fallback_reason: str | None = None):
        super().__init__(items)
        self.method = method
        self.fallback_reason = fallback_reason

_MATMUL_FUNCS = {torch.matmul, torch.bmm, operator.matmul, torch.Tensor.matmul,
                 torch.Tensor.__matmul__, torch.Tensor.bmm}
_MATMUL_METHODS = {"matmul", "bmm", "__matmul__"}
_SDPA = F.scaled_dot_product_attention


def _conv(name: str, mod: nn.Conv2d, in_shape) -> GemmWorkload:
    if len(in_shape) == 3:
        in_shape = (1, *in_shape)
    b, c, h, w = (int(s) for s in in_shape)
    padding = mod.padding
    if isinstance(padding, str):
        padding = (0, 0) if padding == "valid" else tuple(
            d * (k - 1) // 2 for d, k in zip(mod.dilation, mod.kernel_size))
    return conv_workload(name, h, w, c, mod.out_channels, tuple(mod.kernel_size),
                         tuple(mod.stride), tuple(padding), tuple(mod.dilation), mod.groups,
                         batch=b)


def _linear(name: str, mod: nn.Linear, in_shape) -> GemmWorkload:
    tokens = math.prod(int(s) for s in in_shape[:-1]) if len(in_shape) > 1 else 1
    return linear_workload(name, tokens, mod.in_features, mod.out_features)


def _matmul(name: str, a_shape, b_shape) -> GemmWorkload:
    a, b = [int(s) for s in a_shape], [int(s) for s in b_shape]
    if len(a) == 1:
        a = [1, *a]
    if len(b) == 1:
        b = [*b, 1]
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return matmul_workload(name, a[-2], a[-1], b[-1], repeat=math.prod(batch))


def _sdpa(prefix: str, q_shape, k_shape, v_shape) -> list[GemmWorkload]:
    q, k, v = ([int(s) for s in x] for x in (q_shape, k_shape, v_shape))
    batch = math.prod(torch.broadcast_shapes(tuple(q[:-2]), tuple(k[:-2])))
    return [matmul_workload(f"{prefix}0", q[-2], q[-1], k[-2], repeat=batch),
            matmul_workload(f"{prefix}1", q[-2], k[-2], v[-1], repeat=batch)]


def _mha(name: str, mod: nn.MultiheadAttention, q_shape, k_shape) -> list[GemmWorkload]:
    q, k = [int(s) for s in q_shape], [int(s) for s in k_shape]
    if len(q) == 2:
        q, k = [1, *q], [1, *k]
    elif not mod.batch_first:
        q, k = [q[1], q[0], q[2]], [k[1], k[0], k[2]]
    b, lq, e = q
    lk = k[1]
    h = mod.num_heads
    hd = e // h
    return [linear_workload(f"{name}.q_proj", b * lq, e, e),
            linear_workload(f"{name}.k_proj", b * lk, mod.kdim, e),
            linear_workload(f"{name}.v_proj", b * lk, mod.vdim, e),
            matmul_workload(f"{name}.matmul0", lq, hd, lk, repeat=b * h),
            matmul_workload(f"{name}.matmul1", lq, lk, hd, repeat=b * h),
            linear_workload(f"{name}.out_proj", b * lq, e, e)]


class _Namer:
    def __init__(self):
        self.counts: dict[str, int] = {}

    def __call__(self, path: str, n: int = 1) -> str:
        i = self.counts.get(path, 0)
        self.counts[path] = i + n
        return f"{path + '.' if path else ''}matmul{i}"


def _is_leaf_gemm(mod: nn.Module) -> bool:
    return isinstance(mod, nn.Conv2d | nn.Linear | nn.MultiheadAttention)


# ---- torch.fx -------------------------------------------------------------------------------

class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_leaf_gemm(m) or super().is_leaf_module(m, qualname)


class _ShapeRecorder(torch.fx.Interpreter):
    """Runs the graph once and stores every tensor result's shape in ``node.meta``."""

    def run_node(self, n):
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            n.meta["qaccel_shape"] = tuple(result.shape)
        return result


def fx_workloads(model: nn.Module, example_input: torch.Tensor) -> list[GemmWorkload]:
    """Workloads by ``torch.fx`` symbolic tracing and shape propagation (raises if the model
    does not trace)."""
    tracer = _Tracer()
    graph = tracer.trace(model)
    gm = torch.fx.GraphModule(tracer.root, graph)
    with torch.no_grad():
        _ShapeRecorder(gm).run(example_input)
    modules = dict(gm.named_modules())
    namer = _Namer()
    out: list[GemmWorkload] = []

    def shape(arg):
        return arg.meta["qaccel_shape"]

    def path_of(node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        return list(stack)[-1] if stack else ""

    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, nn.Conv2d):
                out.append(_conv(node.target, mod, shape(node.args[0])))
            elif isinstance(mod, nn.Linear):
                out.append(_linear(node.target, mod, shape(node.args[0])))
            elif isinstance(mod, nn.MultiheadAttention):
                q = node.args[0] if node.args else node.kwargs["query"]
                k = node.args[1] if len(node.args) > 1 else node.kwargs["key"]
                out.extend(_mha(node.target, mod, shape(q), shape(k)))
        elif (node.op == "call_function" and node.target in _MATMUL_FUNCS) or (
                node.op == "call_method" and node.target in _MATMUL_METHODS):
            a, b = node.args[0], node.args[1]
            out.append(_matmul(namer(path_of(node)), shape(a), shape(b)))
        elif node.op == "call_function" and node.target is _SDPA:
            args = list(node.args) + [node.kwargs.get(n) for n in ("query", "key", "value")
                                      if n in node.kwargs]
            name = namer(path_of(node), 2)
            out.extend(_sdpa(name[:-1], *(shape(a) for a in args[:3])))
    return out


# ---- forward hooks ------------------------------------------------------------------------

class _MatmulMode(TorchFunctionMode):
    def __init__(self, record):
        super().__init__()
        self.record = record

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _MATMUL_FUNCS or func is _SDPA:
            self.record(func, args, kwargs)
        return func(*args, **kwargs)


def hook_workloads(model: nn.Module, example_input: torch.Tensor) -> list[GemmWorkload]:
    """Workloads from one forward pass with module hooks (Conv2d, Linear,
    MultiheadAttention) and a function mode that sees ``matmul`` / ``bmm`` / ``@`` /
    ``scaled_dot_product_attention``."""
    out: list[GemmWorkload] = []
    stack: list[str] = []
    inside_leaf = [0]
    namer = _Namer()
    handles = []

    def pre(name):
        def hook(mod, args):
            stack.append(name)
            if _is_leaf_gemm(mod):
                inside_leaf[0] += 1
        return hook

    def post(name):
        def hook(mod, args, kwargs, output):
            stack.pop()
            if not _is_leaf_gemm(mod):
                return
            inside_leaf[0] -= 1
            if inside_leaf[0]:
                return
            if isinstance(mod, nn.Conv2d):
                out.append(_conv(name, mod, tuple(args[0].shape)))
            elif isinstance(mod, nn.Linear):
                out.append(_linear(name, mod, tuple(args[0].shape)))
            else:
                q = args[0] if args else kwargs["query"]
                k = args[1] if len(args) > 1 else kwargs["key"]
                out.extend(_mha(name, mod, tuple(q.shape), tuple(k.shape)))
        return hook

    def record(func, args, kwargs):
        if inside_leaf[0]:
            return
        path = stack[-1] if stack else ""
        if func is _SDPA:
            q = args[0] if args else kwargs["query"]
            k = args[1] if len(args) > 1 else kwargs["key"]
            v = args[2] if len(args) > 2 else kwargs["value"]
            name = namer(path, 2)
            out.extend(_sdpa(name[:-1], q.shape, k.shape, v.shape))
        else:
            out.append(_matmul(namer(path), tuple(args[0].shape), tuple(args[1].shape)))

    for name, mod in model.named_modules():
        if name == "":
            continue
        handles.append(mod.register_forward_pre_hook(pre(name)))
        handles.append(mod.register_forward_hook(post(name), with_kwargs=True))
    try:
        with torch.no_grad(), _MatmulMode(record):
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    return out


def workloads_from_model(model: nn.Module, example_input: torch.Tensor,
                         method: str = "auto") -> Workloads:
    """GEMM workloads of ``model`` on ``example_input`` (a :class:`Workloads` list).

    ``method``: ``"fx"``, ``"hooks"`` or ``"auto"`` (fx, falling back to hooks when the
    model does not trace; the fx error is logged at WARNING on the ``qaccel.mapping``
    logger and kept as ``result.fallback_reason``)."""
    if method not in ("auto", "fx", "hooks"):
        raise ValueError(f"method must be 'auto', 'fx' or 'hooks', not {method!r}")
    model = model.eval()
    if method == "hooks":
        gemms = Workloads(hook_workloads(model, example_input), "hooks")
    else:
        try:
            gemms = Workloads(fx_workloads(model, example_input), "fx")
        except Exception as exc:
            if method == "fx":
                raise
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = f"{type(exc).__name__}: {text}"
            log.warning("%s: torch.fx mapping failed (%s); using forward hooks instead",
                        type(model).__name__, reason)
            gemms = Workloads(hook_workloads(model, example_input), "hooks", reason)
    if not gemms:
        raise ValueError(f"{type(model).__name__}: no Conv2d / Linear / matmul layers found")
    return gemms


def workloads_from_topology(path: str | os.PathLike, gemm: bool | None = None
                            ) -> list[GemmWorkload]:
    """Workloads of a SCALE-Sim topology file (conv or ``Layer, M, N, K`` GEMM CSV)."""
    return [layer.workload() for layer in read_topology(path, gemm=gemm)]
