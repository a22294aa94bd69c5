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

:func:`vector_workloads_from_model` describes the ops around the GEMMs that run on the
vector unit (:class:`sim.workload.VectorWorkload`: pooling, residual adds, standalone
ReLUs, tables, softmax, LayerNorm, GELU, token means, embeddings), the way the integer
export (:mod:`quant.export`) runs them; it uses the same ``torch.fx`` trace.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import operator
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from qaccel.sim.topology import read_topology
from qaccel.sim.vector import LUT_MAX_BITS
from qaccel.sim.workload import (
    GemmWorkload,
    VectorWorkload,
    conv_workload,
    linear_workload,
    matmul_workload,
)

__all__ = ["Workloads", "workloads_from_model", "workloads_from_topology", "fx_workloads",
           "hook_workloads", "vector_workloads_from_model", "vectors_at_bits"]

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
    """Names of function / method calls: ``<module path>.<op><i>``, counted per path and
    op (``n`` numbers taken at once)."""

    def __init__(self):
        self.counts: dict[tuple[str, str], int] = {}

    def __call__(self, path: str, n: int = 1, op: str = "matmul") -> str:
        i = self.counts.get((path, op), 0)
        self.counts[path, op] = i + n
        return f"{path + '.' if path else ''}{op}{i}"


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


def _traced(model: nn.Module, example_input: torch.Tensor) -> torch.fx.GraphModule:
    """``model`` traced (GEMM modules as leaves) with every tensor's shape in
    ``node.meta["qaccel_shape"]`` from one run on ``example_input``."""
    tracer = _Tracer()
    graph = tracer.trace(model)
    gm = torch.fx.GraphModule(tracer.root, graph)
    with torch.no_grad():
        _ShapeRecorder(gm).run(example_input)
    return gm


def _path_of(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack)[-1] if stack else ""


def fx_workloads(model: nn.Module, example_input: torch.Tensor) -> list[GemmWorkload]:
    """Workloads by ``torch.fx`` symbolic tracing and shape propagation (raises if the model
    does not trace)."""
    gm = _traced(model, example_input)
    modules = dict(gm.named_modules())
    namer = _Namer()
    out: list[GemmWorkload] = []

    def shape(arg):
        return arg.meta["qaccel_shape"]


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
            out.append(_matmul(namer(_path_of(node)), shape(a), shape(b)))
        elif node.op == "call_function" and node.target is _SDPA:
            args = list(node.args) + [node.kwargs.get(n) for n in ("query", "key", "value")
                                      if n in node.kwargs]
            name = namer(_path_of(node), 2)
            out.extend(_sdpa(name[:-1], *(shape(a) for a in args[:3])))
    return out


# ---- vector unit ----------------------------------------------------------------------------

_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_RELU_FUNCS = {F.relu, torch.relu, torch.relu_}
_RELU6_FUNCS = {F.relu6}
_SOFTMAX_FUNCS = {F.softmax, torch.softmax}
_GELU_FUNCS = {F.gelu}
#: elementwise activations the export turns into a table (a ReLU6 only where it is not fused
#: into a GEMM or an add); a GELU is a table up to LUT_MAX_BITS input bits, I-BERT's integer
#: GELU above
_TABLE_MODULES = (nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.Tanh, nn.Sigmoid)
_TABLE_FUNCS = {F.silu, F.hardswish, F.leaky_relu, torch.tanh, F.tanh, torch.sigmoid,
                F.sigmoid}
_TABLE_METHODS = {"tanh", "sigmoid"}
_GEMM_MODULES = (nn.Conv2d, nn.Linear)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _arg(node, i: int, name: str, default=None):
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


class _VectorGraph:
    """What the nodes of a traced graph are on the vector unit."""

    def __init__(self, gm: torch.fx.GraphModule):
        self.modules = dict(gm.named_modules())
        self.live: set = set()                 # nodes computed from the model's inputs
        for node in gm.graph.nodes:
            if node.op == "placeholder" or any(a in self.live for a in node.all_input_nodes):
                self.live.add(node)

    def module(self, node):
        return self.modules.get(node.target) if node.op == "call_module" else None

    def is_call(self, node, funcs=(), methods=(), modules=()) -> bool:
        return (node.op == "call_function" and node.target in funcs
                or node.op == "call_method" and node.target in methods
                or isinstance(self.module(node), modules) and bool(modules))

    def activation(self, arg) -> bool:
        """A tensor computed from the model's input (not a constant, parameter or size)."""
        return isinstance(arg, torch.fx.Node) and arg in self.live \
            and len(arg.meta.get("qaccel_shape", ())) > 0

    def is_add(self, node) -> bool:
        """``a + b`` of two activations (a residual add; a constant or a parameter added is
        not a vector-unit add)."""
        if not self.is_call(node, _ADD_FUNCS, ("add", "add_")) or len(node.args) != 2:
            return False
        return all(self.activation(a) for a in node.args)

    def relu_kind(self, node) -> str | None:
        if self.is_call(node, _RELU_FUNCS, ("relu", "relu_"), (nn.ReLU,)):
            return "relu"
        if self.is_call(node, _RELU6_FUNCS, (), (nn.ReLU6,)):
            return "relu6"
        return None

    def fused(self, node) -> bool:
        """A ReLU / ReLU6 the export fuses into its producer: the only user of a
        conv / linear (through a BatchNorm folded into it; the requantizer's clamp) or of a
        residual add (:class:`quant.modules.QuantAdd`'s ``act``)."""
        src = node.args[0] if node.args else None
        if not isinstance(src, torch.fx.Node) or len(src.users) != 1:
            return False
        if self.is_add(src) or isinstance(self.module(src), _GEMM_MODULES):
            return True
        if isinstance(self.module(src), _BATCHNORMS):
            inner = src.args[0]
            return isinstance(inner, torch.fx.Node) and len(inner.users) == 1 \
                and isinstance(self.module(inner), _GEMM_MODULES)
        return False

    def spatial_mean(self, node) -> bool:
        """``x.mean((2, 3))`` / ``torch.mean(x, (-2, -1))`` of a 4-d tensor."""
        if not self.is_call(node, (torch.mean,), ("mean",)):
            return False
        dim = _arg(node, 1, "dim")
        shape = node.args[0].meta.get("qaccel_shape", ())
        return isinstance(dim, tuple | list) and len(shape) == 4 \
            and sorted(d % 4 for d in dim) == [2, 3]

    def token_axis(self, node) -> int | None:
        """The axis of a mean over one non-batch axis (a token mean), else ``None``."""
        if not self.is_call(node, (torch.mean,), ("mean",)):
            return None
        dim = _arg(node, 1, "dim")
        if isinstance(dim, tuple | list) and len(dim) == 1:
            dim = dim[0]
        nd = len(node.args[0].meta.get("qaccel_shape", ()))
        return dim % nd if isinstance(dim, int) and nd > 1 and dim % nd else None


def _global_pool(mod) -> bool:
    return isinstance(mod, nn.AdaptiveAvgPool2d) and mod.output_size in (1, (1, 1))


def vector_workloads_from_model(model: nn.Module, example_input: torch.Tensor, *,
                                a_bits: int | None = 8) -> list[VectorWorkload]:
    """The vector-unit layers of ``model`` on ``example_input``, in execution order, as the
    integer export (:mod:`quant.export`) and :mod:`sim.executor` run them.

    Same ``torch.fx`` trace and shape propagation as :func:`fx_workloads` (raises if the
    model does not trace). Shapes include the batch; widths are left empty (the array's
    ``a_bits``). What becomes a :class:`~sim.workload.VectorWorkload`:

    * ``nn.MaxPool2d`` / ``F.max_pool2d`` -- ``maxpool2d``, ``window = kh kw``;
      ``nn.AvgPool2d`` / ``F.avg_pool2d`` -- ``avgpool2d``, ``window = kh kw``;
      ``nn.AdaptiveAvgPool2d(1)`` / ``F.adaptive_avg_pool2d(x, 1)`` / a mean over H, W --
      ``global_avgpool``, ``window = H W``; a mean over one other non-batch axis --
      ``mean`` (``window`` = that axis).
    * ``a + b`` (``operator.add`` / ``iadd`` / ``torch.add`` / ``Tensor.add``) of two
      activations -- ``add``; a constant, parameter or buffer added is not one.
    * ReLU / ReLU6: fused, as the export fuses them, when it is the only user of a
      conv / linear (through a BatchNorm, which folds into the conv) -- the requantizer's
      clamp -- or of a residual add (the add's clamp); otherwise a ReLU is ``relu`` and a
      ReLU6 a table (``lut``).
    * SiLU, Hardswish, LeakyReLU, Tanh, Sigmoid -- ``lut``; GELU -- ``lut`` up to
      :data:`sim.vector.LUT_MAX_BITS` bits of ``a_bits``, ``gelu`` (I-BERT's integer GELU)
      above or with ``a_bits=None`` (resolve later with :func:`vectors_at_bits`).
    * softmax (``nn.Softmax``, ``F.softmax``, ``Tensor.softmax``; the scores of
      ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``) -- ``softmax``;
      ``nn.LayerNorm`` / ``F.layer_norm`` -- ``layernorm`` (``params`` = gamma and beta);
      ``nn.Embedding`` -- ``embedding``.

    Names: a module's path (a module called again gets ``#<i>``); a function or method
    ``<module path>.<op><i>`` (``layer1.0.add0``), like :func:`fx_workloads`' matmuls.
    Reshapes, flatten, dropout, transposes and constant factors (folded into a
    requantizer) cost nothing."""
    if a_bits is not None and (isinstance(a_bits, bool) or not isinstance(a_bits, int)
                               or a_bits < 1):
        raise ValueError(f"a_bits must be a positive integer or None, not {a_bits!r}")
    gm = _traced(model.eval(), example_input)
    g = _VectorGraph(gm)
    gelu = "lut" if a_bits is not None and a_bits <= LUT_MAX_BITS else "gelu"
    out: list[VectorWorkload] = []
    seen: dict[str, int] = {}
    namer = _Namer()

    def name_of(node, op: str) -> str:
        if node.op == "call_module":
            name = str(node.target)
            k = seen.get(name, 0)
            seen[name] = k + 1
            return name if k == 0 else f"{name}#{k}"
        return namer(_path_of(node), op=op)

    def shape(arg) -> tuple[int, ...]:
        return tuple(int(s) for s in arg.meta["qaccel_shape"])

    def emit(node, op: str, kind: str, ins, out_shape=None, window: int = 1,
             params: int = 0, name: str | None = None):
        out.append(VectorWorkload(name or name_of(node, op), kind,
                                  tuple(shape(a) for a in ins),
                                  out_shape or shape(node), window, params))

    for node in gm.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        mod = g.module(node)
        x = node.args[0] if node.args else None
        if isinstance(mod, nn.MultiheadAttention):
            q, k = shape(_arg(node, 0, "query")), shape(_arg(node, 1, "key"))
            if len(q) == 2:
                q, k = (1, *q), (1, *k)
            elif not mod.batch_first:
                q, k = (q[1], q[0], q[2]), (k[1], k[0], k[2])
            scores = (q[0], mod.num_heads, q[1], k[1])
            out.append(VectorWorkload(f"{node.target}.softmax", "softmax", (scores,), scores))
        elif node.op == "call_function" and node.target is _SDPA:
            q, k = shape(_arg(node, 0, "query")), shape(_arg(node, 1, "key"))
            scores = (*torch.broadcast_shapes(q[:-2], k[:-2]), q[-2], k[-2])
            out.append(VectorWorkload(name_of(node, "softmax"), "softmax", (scores,), scores))
        elif not g.activation(x) or not node.meta.get("qaccel_shape"):
            continue
        elif g.is_add(node):
            emit(node, "add", "add", node.args)
        elif g.relu_kind(node) is not None:
            if not g.fused(node):
                kind = "relu" if g.relu_kind(node) == "relu" else "lut"
                emit(node, "relu", kind, [x])
        elif isinstance(mod, nn.MaxPool2d) or g.is_call(node, (F.max_pool2d,)):
            k = mod.kernel_size if mod is not None else _arg(node, 1, "kernel_size")
            emit(node, "maxpool", "maxpool2d", [x], window=math.prod(_pair(k)))
        elif isinstance(mod, nn.AvgPool2d) or g.is_call(node, (F.avg_pool2d,)):
            k = mod.kernel_size if mod is not None else _arg(node, 1, "kernel_size")
            emit(node, "avgpool", "avgpool2d", [x], window=math.prod(_pair(k)))
        elif _global_pool(mod) or g.spatial_mean(node) or (
                g.is_call(node, (F.adaptive_avg_pool2d,))
                and _arg(node, 1, "output_size") in (1, (1, 1))):
            emit(node, "mean" if g.spatial_mean(node) else "avgpool", "global_avgpool", [x],
                 window=math.prod(shape(x)[-2:]))
        elif g.token_axis(node) is not None:
            emit(node, "mean", "mean", [x], window=shape(x)[g.token_axis(node)])
        elif isinstance(mod, nn.Softmax) or g.is_call(node, _SOFTMAX_FUNCS, ("softmax",)):
            emit(node, "softmax", "softmax", [x])
        elif isinstance(mod, nn.LayerNorm) or g.is_call(node, (F.layer_norm,)):
            if mod is not None:
                n, affine = math.prod(mod.normalized_shape), 2 * mod.elementwise_affine
            else:
                ns = _arg(node, 1, "normalized_shape")
                n = math.prod([ns] if isinstance(ns, int) else ns)
                affine = sum(_arg(node, i, a) is not None for i, a in ((2, "weight"),
                                                                       (3, "bias")))
            emit(node, "layernorm", "layernorm", [x], params=affine * n)
        elif isinstance(mod, nn.GELU) or g.is_call(node, _GELU_FUNCS):
            emit(node, "gelu", gelu, [x])
        elif isinstance(mod, _TABLE_MODULES) or g.is_call(node, _TABLE_FUNCS, _TABLE_METHODS):
            op = node.target if node.op == "call_method" else \
                getattr(node.target, "__name__", "lut")
            emit(node, op, "lut", [x])
        elif isinstance(mod, nn.Embedding):
            emit(node, "embedding", "embedding", [x])
    return out


def vectors_at_bits(vectors, a_bits: int) -> list[VectorWorkload]:
    """``vectors`` (from :func:`vector_workloads_from_model` with ``a_bits=None``) on an
    array of ``a_bits``: an integer ``gelu`` becomes a table (``lut``) up to
    :data:`sim.vector.LUT_MAX_BITS` bits, as the export does."""
    if a_bits > LUT_MAX_BITS:
        return list(vectors)
    return [dataclasses.replace(v, kind="lut") if v.kind == "gelu" else v for v in vectors]


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
