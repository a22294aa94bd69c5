"""The end-to-end co-design flow: one model -> quantized integer network -> accuracy and
hardware cost on an array configuration.

The steps are pure functions of frozen configurations, so the sweep engine calls them too:

- :func:`load_model` -- a shipped digits model (``digits_cnn``, ``digits_mobilenet``), a
  user ``module:factory`` with a ``module:loader`` for calibration and test data, or an
  exported integer network ``net.npz``;
- :func:`quantize_model` -- :func:`qaccel.quant.quantize` + :func:`qaccel.quant.export`,
  cached by content hash (weights + :class:`~qaccel.quant.QuantConfig` + calibration data +
  the quantizer's sources) in the workspace's ``cache/networks``;
- :func:`network_cost` -- per-layer cycles and utilization (analytic model, optionally
  re-run on the cycle model), energy breakdown, Yosys area, the network's real per-layer
  bit-widths;
- :func:`run` -- all of it for one :class:`RunConfig`, with the integer network executed
  on the chosen engine (``analytic``: numpy GEMMs; ``cycle``: every GEMM on
  :mod:`qaccel.sim.cycle`; ``rtl``: as ``cycle``, plus whole inferences through the cocotb
  bench).

A user loader ``module:loader`` is called without arguments and returns
``(calib, (x_test, y_test))``: ``calib`` an iterable of input batches (or one tensor),
``x_test``/``y_test`` tensors (or arrays) of test inputs and integer labels.

Only numpy and :mod:`qaccel.sim` are imported at module level; torch, the quantizer and the
RTL tools are imported when a step needs them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import pathlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from qaccel.sim.config import ArrayConfig
from qaccel.sim.network import IntLayer, IntNetwork

__all__ = ["ENGINES", "ARRAY_KINDS", "RunConfig", "RunReport", "LoadedModel", "load_model",
           "quantize_model", "network_cache_key", "array_layers", "layer_config",
           "hardware_config", "network_seq_len", "network_sample_inputs", "network_workloads",
           "network_vector_workloads", "network_energy_report", "network_cost", "top1",
           "float_accuracy", "integer_accuracy", "engine_gemm_fn", "rtl_check", "run"]

ENGINES = ("analytic", "cycle", "rtl")
#: layer kinds whose GEMMs run on the array (a ``matmul``'s right operand, minus its
#: zero-point, is the stationary matrix; the left one streams in)
ARRAY_KINDS = ("linear", "conv2d", "matmul")
#: images per executor call when the GEMMs run on the cycle model (one job per layer each)
ENGINE_BATCH = 32


def _progress(iterable, desc: str, unit: str = "it"):
    """A tqdm bar on stderr when it is a terminal (the quantizer's progress policy)."""
    from qaccel.quant.progress import bar

    return bar(iterable, "auto", desc=desc, unit=unit, leave=False)


# ---- configuration --------------------------------------------------------------------

@dataclass(frozen=True)
class RunConfig:
    """Everything :func:`run` needs; validated on construction (``ValueError`` naming the
    field).

    Parameters
    ----------
    model : str
        ``digits_cnn`` / ``digits_mobilenet``, ``module:factory`` (a callable returning an
        ``nn.Module``) or the path of an exported ``net.npz``.
    data : str or None
        ``module:loader`` for calibration and test data (required with ``module:factory``;
        optional with ``net.npz``, where it gives the integer accuracy).
    quant : QuantConfig or None
        Quantization options (default ``QuantConfig()``); unused for ``net.npz``.
    array : ArrayConfig
        The array. Its ``rows``, ``cols``, ``acc_depth``, ``dim_bits`` and buffers are
        used; bit-widths, accumulator, multiplier and scaling follow the network
        (:func:`hardware_config`).
    engine : {"analytic", "cycle", "rtl"}
        Where the integer network's GEMMs run (see the module docstring).
    clock_mhz : float
        Clock for the latency.
    energy_table : str or None
        Energy table JSON (default: Horowitz 45 nm).
    n_calib : int
        Calibration images of a shipped model.
    eval_images : int or None
        Test images every accuracy is measured on (the first ones; ``None``: all).
    rtl_images : int
        Whole inferences run through the cocotb bench with ``engine="rtl"``.
    sim : {"auto", "verilator", "icarus"}
        HDL simulator for ``engine="rtl"``.
    area : bool
        Synthesize the datapath with Yosys for the area (cached per hardware config).
    seq_len : int or None
        Sequence length a token network (``net.npz`` with variable-length inputs) is
        costed at; ``None``: the length it was exported with (:func:`network_seq_len`).
    """

    model: str = "digits_cnn"
    data: str | None = None
    quant: object = None
    array: ArrayConfig = field(default_factory=lambda: ArrayConfig(rows=8, cols=8,
                                                                   acc_depth=256))
    engine: str = "cycle"
    clock_mhz: float = 500.0
    energy_table: str | None = None
    n_calib: int = 256
    eval_images: int | None = None
    rtl_images: int = 1
    sim: str = "auto"
    area: bool = True
    seq_len: int | None = None

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"RunConfig.model must be a model name, module:factory or a "
                             f".npz path, not {self.model!r}")
        if self.data is not None and (not isinstance(self.data, str)
                                      or ":" not in self.data):
            raise ValueError(f"RunConfig.data must be 'module:loader', not {self.data!r}")
        if self.quant is None:
            from qaccel.quant.config import QuantConfig

            object.__setattr__(self, "quant", QuantConfig())
        elif type(self.quant).__name__ != "QuantConfig":
            raise ValueError(f"RunConfig.quant must be a QuantConfig, not {self.quant!r}")
        if not isinstance(self.array, ArrayConfig):
            raise ValueError(f"RunConfig.array must be an ArrayConfig, not {self.array!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"RunConfig.engine must be one of {', '.join(ENGINES)}, not "
                             f"{self.engine!r}")
        if isinstance(self.clock_mhz, bool) or not isinstance(self.clock_mhz, int | float) \
                or not self.clock_mhz > 0:
            raise ValueError(f"RunConfig.clock_mhz must be a number > 0, not "
                             f"{self.clock_mhz!r}")
        for name, lo in (("n_calib", 1), ("rtl_images", 1), ("eval_images", 1),
                         ("seq_len", 1)):
            v = getattr(self, name)
            if name in ("eval_images", "seq_len") and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"RunConfig.{name} must be an integer >= {lo}, not {v!r}")
        if self.sim not in ("auto", "verilator", "icarus"):
            raise ValueError(f"RunConfig.sim must be auto, verilator or icarus, not "
                             f"{self.sim!r}")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["quant"] = self.quant.to_dict()
        d["array"] = self.array.to_dict()
        return d


# ---- loading ----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class LoadedModel:
    """What :func:`load_model` found: a float model with data, or an integer network.

    ``calib`` is an iterable of input batches, ``test_set`` ``(x, y)`` tensors; both may be
    ``None`` for ``net.npz`` without a loader. ``net`` is set only for ``net.npz``."""

    name: str
    model: object = None
    calib: object = None
    test_set: tuple | None = None
    net: IntNetwork | None = None


def _import_attr(spec: str, what: str):
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"RunConfig.{what}: {spec!r} is not 'module:attribute'")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"RunConfig.{what}: cannot import module {mod_name!r} ({exc})") \
            from None
    obj = getattr(module, attr, None)
    if not callable(obj):
        raise ValueError(f"RunConfig.{what}: module {mod_name!r} has no callable {attr!r}")
    return obj


def _call_loader(data: str):
    out = _import_attr(data, "data")()
    try:
        calib, (x, y) = out
    except (TypeError, ValueError):
        raise ValueError(f"RunConfig.data: {data} must return (calib, (x_test, y_test))") \
            from None
    import torch

    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"RunConfig.data: {data} returned {len(x)} test inputs and "
                         f"{len(y)} labels")
    if isinstance(calib, torch.Tensor):
        calib = [calib]
    return calib, (x, y)


def load_model(spec: str, data: str | None = None, *, n_calib: int = 256) -> LoadedModel:
    """Load a shipped digits model, a user ``module:factory`` (with ``data``) or a
    ``net.npz``. Errors are ``ValueError`` naming ``RunConfig.model`` / ``RunConfig.data``.
    """
    if spec.endswith(".npz"):
        path = pathlib.Path(spec).expanduser()
        if not path.is_file():
            raise ValueError(f"RunConfig.model: integer network {spec!r} does not exist")
        try:
            net = IntNetwork.load(path)
        except ValueError as exc:
            raise ValueError(f"RunConfig.model: {exc}") from None
        calib, test_set = _call_loader(data) if data else (None, None)
        return LoadedModel(name=path.stem, test_set=test_set, calib=calib, net=net)
    if ":" in spec:
        if data is None:
            raise ValueError(f"RunConfig.data: a user model ({spec}) needs a 'module:loader' "
                             f"for calibration and test data")
        from torch import nn

        model = _import_attr(spec, "model")()
        if not isinstance(model, nn.Module):
            raise ValueError(f"RunConfig.model: {spec} returned {type(model).__name__}, not "
                             f"an nn.Module")
        calib, test_set = _call_loader(data)
        return LoadedModel(name=spec.rsplit(":", 1)[-1], model=model.eval(), calib=calib,
                           test_set=test_set)
    from qaccel.quant import digits

    if spec not in digits.ARCHS:
        raise ValueError(f"RunConfig.model: unknown model {spec!r}; use one of "
                         f"{', '.join(sorted(digits.ARCHS))}, module:factory or a .npz file")
    model, calib, test_set = digits.get_model(spec, n_calib=n_calib)
    if data is not None:
        calib, test_set = _call_loader(data)
    return LoadedModel(name=spec, model=model, calib=calib, test_set=test_set)


# ---- quantization (content-hash cache) ------------------------------------------------

def _quant_fingerprint() -> str:
    """Hash of the quantizer's sources: a changed quantizer invalidates the cache."""
    import qaccel.quant as q

    h = hashlib.sha256()
    for p in sorted(pathlib.Path(q.__file__).parent.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _hash_tensor(h, t) -> None:
    a = np.ascontiguousarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t)
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())


def network_cache_key(model, calib, quant_cfg) -> str:
    """SHA-256 of the model (architecture + weights), the :class:`QuantConfig`, the
    calibration batches and the quantizer's sources."""
    from qaccel.quant.pipeline import as_batches

    h = hashlib.sha256(b"qaccel-network-v1")
    h.update(_quant_fingerprint().encode())
    h.update(repr(model).encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        _hash_tensor(h, t)
    qd = {k: v for k, v in quant_cfg.to_dict().items() if k != "progress"}
    h.update(json.dumps(qd, sort_keys=True).encode())
    for batch in as_batches(calib):
        for t in (batch if isinstance(batch, tuple | list) else
                  batch.values() if isinstance(batch, dict) else [batch]):
            _hash_tensor(h, t)
    return h.hexdigest()


def _example_input(calib):
    from qaccel.quant.pipeline import as_batches

    batch = as_batches(calib)[0]
    if not hasattr(batch, "shape"):
        raise ValueError("RunConfig.data: export needs calibration batches that are tensors")
    return batch[:1]


def quantize_model(model, calib, quant_cfg, *, cache: bool = True):
    """``(qmodel, IntNetwork)``: :func:`qaccel.quant.quantize` then
    :func:`qaccel.quant.export`, cached under ``cache/networks/<key>/`` of the workspace.

    The integer network is stored as ``net.npz`` (no pickle) and the fake-quantized model
    with ``torch.save`` (a pickle, read back only from this workspace's own cache).
    """
    import torch

    from qaccel import quant, workspace

    key = network_cache_key(model, calib, quant_cfg)
    where = workspace.current().dir("cache", "networks") / key[:24]
    net_path, q_path = where / "net.npz", where / "qmodel.pt"
    if cache and net_path.is_file() and q_path.is_file():
        try:
            return torch.load(q_path, weights_only=False), IntNetwork.load(net_path)
        except Exception:               # a torn or stale entry: quantize again
            pass
    qmodel = quant.quantize(model, calib, quant_cfg)
    net = quant.export(qmodel, _example_input(calib))
    if cache:
        where.mkdir(parents=True, exist_ok=True)
        tmp = where / f".tmp{os.getpid()}"
        net.save(tmp.with_suffix(".npz"))
        torch.save(qmodel, tmp.with_suffix(".pt"))
        os.replace(tmp.with_suffix(".npz"), net_path)
        os.replace(tmp.with_suffix(".pt"), q_path)
    return qmodel, net


# ---- the network on the array -----------------------------------------------------------

def array_layers(net: IntNetwork) -> list[int]:
    """Indices of the layers of ``net`` that run on the array (:data:`ARRAY_KINDS`)."""
    return [i for i, L in enumerate(net.layers) if L.kind in ARRAY_KINDS]


def layer_config(array_cfg: ArrayConfig, net: IntNetwork, layer: IntLayer, *,
                 strict: bool = False) -> ArrayConfig:
    """``array_cfg`` with the bit-widths, scaling, accumulator and multiplier of one GEMM
    layer of ``net``: ``w_bits`` the layer's, ``a_bits``/``a_signed`` its input's. An
    activation x activation ``matmul`` holds its right operand minus its zero-point: as
    wide as that operand if signed, one bit wider if unsigned; per-tensor scaling.

    ``strict``: the configuration its GEMM jobs run on (cycle model, RTL), whose
    requantizer writes the input type; a layer whose output type differs (mixed
    precision) is then a ``ValueError`` naming the layer. The cost model (``strict=False``)
    takes such layers with their input width."""
    qi, qo = layer.in_q[0], layer.out_q
    if strict and (qi.bits, qi.signed) != (qo.bits, qo.signed):
        raise ValueError(f"layer {layer.name!r}: input A{qi.bits}{'s' if qi.signed else 'u'} "
                         f"and output A{qo.bits}{'s' if qo.signed else 'u'} differ; the "
                         "array's requantizer writes the input type (use the analytic "
                         "engine)")
    w_bits, per_channel = int(layer.w_bits), bool(layer.per_channel)
    if layer.kind == "matmul":
        qb = layer.in_q[1]
        w_bits, per_channel = qb.bits + (0 if qb.signed else 1), False
    try:
        return array_cfg.replace(w_bits=w_bits, a_bits=qi.bits, a_signed=qi.signed,
                                 acc_bits=net.acc_bits, mult_bits=net.mult_bits,
                                 per_channel=per_channel)
    except ValueError as exc:
        raise ValueError(f"layer {layer.name!r}: {exc}") from None


def hardware_config(array_cfg: ArrayConfig, net: IntNetwork) -> ArrayConfig:
    """The array that runs every layer of ``net``: the widest weights and activations of
    its GEMM layers (:func:`array_layers`, attention matmuls included), per-channel if any
    layer is, ``net``'s accumulator and multiplier."""
    cfgs = [layer_config(array_cfg, net, net.layers[i]) for i in array_layers(net)]
    if not cfgs:
        raise ValueError("the integer network has no conv2d/linear/matmul layer")
    return array_cfg.replace(w_bits=max(c.w_bits for c in cfgs),
                             a_bits=max(c.a_bits for c in cfgs),
                             a_signed=any(c.a_signed for c in cfgs),
                             per_channel=any(c.per_channel for c in cfgs),
                             acc_bits=net.acc_bits, mult_bits=net.mult_bits)


def network_seq_len(net: IntNetwork, seq_len: int | None = None) -> int | None:
    """The sequence length ``net`` is costed at: ``None`` for a network without a variable
    length; else ``seq_len``, or the length it was exported with (``meta["seq_len"]``).
    ``ValueError`` starting with ``seq_len:`` when a needed length is missing, not a
    positive integer, or given for a network of fixed shape."""
    variable = any(-1 in v.shape for v in net.inputs)
    if seq_len is not None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int | np.integer) \
                or seq_len < 1:
            raise ValueError(f"seq_len: must be an integer >= 1, not {seq_len!r}")
        if not variable:
            raise ValueError(f"seq_len: the network's inputs have fixed shapes "
                             f"({', '.join(str(v.shape) for v in net.inputs)}); a sequence "
                             f"length ({seq_len}) applies to token networks only")
        return int(seq_len)
    if not variable:
        return None
    rec = net.meta.get("seq_len")
    if rec is None:
        raise ValueError("seq_len: the network's inputs have a variable sequence length and "
                         "the file records none (meta seq_len); give the length to cost it "
                         "at (--seq-len)")
    if isinstance(rec, bool) or not isinstance(rec, int) or rec < 1:
        raise ValueError(f"seq_len: the network's recorded meta seq_len {rec!r} is not an "
                         f"integer >= 1; give the length (--seq-len)")
    return rec


def network_sample_inputs(net: IntNetwork, seq_len: int | None = None, batch: int = 1,
                          seed: int = 0) -> list[np.ndarray]:
    """In-range inputs of ``net`` (:func:`qaccel.sim.executor.sample_inputs`) at the
    sequence length :func:`network_seq_len` resolves."""
    from qaccel.sim.executor import sample_inputs

    seq = network_seq_len(net, seq_len)
    return sample_inputs(net, batch, 1 if seq is None else seq, seed)


def _on_samples(net: IntNetwork, seq_len: int | None, batch: int, fn: Callable):
    """``fn(inputs)`` on sample inputs of ``net``; a ``ValueError`` of a token network's
    run names ``seq_len`` (a length the network does not take, e.g. its position table)."""
    xs = network_sample_inputs(net, seq_len, batch)
    try:
        return fn(xs)
    except ValueError as exc:
        seq = network_seq_len(net, seq_len)
        if seq is None:
            raise
        raise ValueError(f"seq_len: at sequence length {seq}: {exc}") from None


def network_workloads(net: IntNetwork, seq_len: int | None = None, *, batch: int = 1
                      ) -> list:
    """One :class:`~qaccel.sim.workload.GemmWorkload` per layer of ``net`` that runs on the
    array (:func:`array_layers`: conv2d, linear and the activation x activation matmuls,
    ``repeat`` = batch x heads) for ``batch`` inferences at the sequence length
    :func:`network_seq_len` resolves; shapes from one run on in-range inputs."""
    from qaccel.sim import executor
    from qaccel.sim.workload import GemmWorkload, conv_workload, matmul_workload

    xs, outs = _on_samples(net, seq_len, batch,
                           lambda xs: (xs, executor.run(net, xs, trace=True).outputs))

    def shape(j: int) -> tuple:
        return (xs[-j - 1] if j < 0 else outs[j]).shape

    out = []
    for i in array_layers(net):
        L = net.layers[i]
        shp = shape(L.inputs[0])
        if L.kind == "conv2d":
            b, c, h, w = shp
            out.append(conv_workload(L.name, h, w, c, L.out_channels, L.kernel, L.stride,
                                     L.padding, groups=L.groups, batch=b))
        elif L.kind == "matmul":
            n = shape(L.inputs[1])[-1]
            out.append(matmul_workload(L.name, T=shp[-2], K=shp[-1], N=n,
                                       repeat=int(np.prod(shp[:-2], dtype=np.int64))))
        else:
            out.append(GemmWorkload(name=L.name, T=int(np.prod(shp[:-1], dtype=np.int64)),
                                    K=int(shp[-1]), N=L.out_channels, op="linear"))
    return out


def network_vector_workloads(net: IntNetwork, seq_len: int | None = None, *,
                             batch: int = 1) -> list:
    """The vector-unit layers of ``net`` (:func:`qaccel.sim.executor.vector_workloads`:
    tables, adds, pooling, softmax, LayerNorm, ...) for ``batch`` inferences at the
    sequence length :func:`network_seq_len` resolves."""
    from qaccel.sim.executor import vector_workloads

    return _on_samples(net, seq_len, batch, lambda xs: vector_workloads(net, xs))


def network_energy_report(cfg: ArrayConfig, gemms, table, source: str = "",
                          rows: dict | None = None,
                          layer_cfgs: Sequence[ArrayConfig] | None = None,
                          mapping: str = "fixed", objective: str = "energy",
                          vectors: Sequence = ()) -> dict:
    """Analytic model + energy model of ``gemms`` on ``cfg``: a JSON-able report (per layer
    and total). ``layer_cfgs`` (one per workload) gives each layer its own bit-widths
    (a quantized network's real ones); ``rows`` maps layer names to topology rows for
    error messages; ``mapping`` ``"fixed"`` (the fixed nest) or ``"search"`` (each layer
    mapped by :mod:`sim.mapper` for ``objective``). ``vectors``: the vector-unit layers
    (``VectorWorkload``), reported under ``vector_unit`` and included in the totals."""
    from qaccel.sim.analytic import analyze_layer, analyze_vector
    from qaccel.sim.energy import (
        EnergyBreakdown,
        counts_from_perf,
        extrapolated_buffers,
        layer_energy,
        vector_energy,
    )
    from qaccel.sim.mapper import choose_mapping

    rows = rows or {}
    gemms = list(gemms)
    cfgs = [cfg] * len(gemms) if layer_cfgs is None else list(layer_cfgs)
    if len(cfgs) != len(gemms):
        raise ValueError(f"layer_cfgs has {len(cfgs)} entries for {len(gemms)} workloads")
    layers, total = [], EnergyBreakdown(name="total", terms={})
    for g, c in zip(gemms, cfgs):
        try:
            lp = analyze_layer(c, g, choose_mapping(c, g, mapping, objective, table))
        except ValueError as exc:
            where = f"{source}: row {rows[g.name]}" if g.name in rows else source
            raise ValueError(f"{where}: {exc}") from None
        e = layer_energy(c, counts_from_perf(lp), table)
        total = total + e
        layers.append({"name": lp.name, "op": lp.op, "T": lp.T, "K": lp.K, "N": lp.N,
                       "repeat": lp.repeat, "w_bits": c.w_bits, "a_bits": c.a_bits,
                       "cycles": lp.cycles, "macs": lp.macs,
                       "utilization": lp.utilization, "total_pj": e.total_pj,
                       "dram_bits": lp.dram_bits, "compulsory_bits": lp.compulsory_bits,
                       "buffer_bits": lp.traffic.total("buffer"),
                       "mapping": lp.mapping.to_dict(),
                       "categories_pj": e.by_category(), "terms_pj": e.terms})
    vector_rows = []
    for v in vectors:
        vp = analyze_vector(cfg, v)
        e = vector_energy(cfg, vp, table)
        total = total + e
        vector_rows.append({**vp.to_dict(), "total_pj": e.total_pj, "terms_pj": e.terms})
    macs = total.macs
    return {"source": source, "config": cfg.to_dict(), "tag": cfg.tag(),
            "table": table.to_dict(), "layers": layers, "vector_unit": vector_rows,
            "extrapolated_buffers": extrapolated_buffers(cfg, table),
            "mapping": mapping, "objective": objective,
            "total": {"cycles": total.cycles, "macs": macs, "total_pj": total.total_pj,
                      "dram_bits": sum(L["dram_bits"] for L in layers) + sum(
                          sum(a["reads"] + a["writes"] for a in r["traffic_bits"]["dram"].values())
                          for r in vector_rows),
                      "compulsory_bits": sum(L["compulsory_bits"] for L in layers),
                      "pj_per_mac": total.total_pj / macs if macs else 0.0,
                      "categories_pj": total.by_category(), "terms_pj": total.terms}}


def _area_cells(summary: dict, cfg: ArrayConfig) -> int:
    """Yosys cells of the datapath: PE array + ``cols`` requantizer lanes + params FIFO."""
    mode = "pc" if cfg.per_channel else "pt"
    return int(round(summary["array_cells"] + summary[f"requant_lane_{mode}_cells"] * cfg.cols
                     + summary.get(f"params_fifo_{mode}_cells", 0)))


def _gemm_on_cycle_model(cfg: ArrayConfig, job, log: list | None = None):
    """Run one executor GEMM job on the cycle model of ``cfg``; its outputs must equal the
    numpy reference and its cycles the analytic closed form."""
    from qaccel.sim.cycle import simulate
    from qaccel.sim.reference import reference_gemm
    from qaccel.sim.schedule import gemm_cycles

    job = job.for_config(cfg)
    r = simulate(cfg, job)
    want = gemm_cycles(cfg, job.T, job.K, job.N)
    if r.cycles != want:
        raise AssertionError(f"cycle model took {r.cycles} cycles for a {job.T}x{job.K}x"
                             f"{job.N} GEMM, the analytic model says {want}")
    if not np.array_equal(r.y, reference_gemm(cfg, job).y):
        raise AssertionError(f"cycle model outputs differ from the integer reference on a "
                             f"{job.T}x{job.K}x{job.N} GEMM")
    if log is not None:
        log.append(r.cycles)
    return r.y


def engine_gemm_fn(net: IntNetwork, array_cfg: ArrayConfig, engine: str,
                   log: dict | None = None) -> Callable | None:
    """``layer_gemm_fn`` for :func:`qaccel.sim.executor.run`: ``None`` (numpy) for
    ``analytic``, else ``layer -> gemm_fn`` running every GEMM of a conv2d / linear /
    matmul layer on the cycle model of that layer's configuration (:func:`layer_config`),
    checked against numpy and the closed-form cycles. ``log`` (optional) collects the
    measured cycles per layer name."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "analytic":
        return None
    cfgs = {net.layers[i].name: layer_config(array_cfg, net, net.layers[i], strict=True)
            for i in array_layers(net)}

    def for_layer(layer: IntLayer) -> Callable | None:
        if layer.kind not in ARRAY_KINDS:
            return None
        cfg, name = cfgs[layer.name], layer.name
        return lambda job: _gemm_on_cycle_model(
            cfg, job, None if log is None else log.setdefault(name, []))

    return for_layer


def network_cost(net: IntNetwork, array_cfg: ArrayConfig, clock_mhz: float = 500.0,
                 energy_table=None, engine: str = "analytic", *, area: bool = True,
                 mapping: str = "fixed", objective: str = "energy",
                 seq_len: int | None = None) -> dict:
    """Cost of one inference of ``net`` on ``array_cfg``'s array and vector unit.

    Each array layer (conv2d, linear, attention matmul: :func:`array_layers`) is costed
    with its own bit-widths (:func:`layer_config`); the hardware (area) is
    :func:`hardware_config`. The vector-unit layers (:func:`network_vector_workloads`:
    pooling, residual adds, tables, softmax, LayerNorm, ...) run on
    ``array_cfg.vector_lanes`` lanes, serialized with the array, and count in the totals.
    ``seq_len``: the sequence length of a token network (:func:`network_seq_len`).
    ``engine="cycle"`` (or ``"rtl"``) also runs every array layer's GEMMs of one inference
    on the cycle model and asserts that outputs and cycles equal the executor's and the
    analytic count. ``energy_table``: an :class:`~qaccel.sim.energy.EnergyTable`, a path or
    ``None`` (default table). ``mapping``/``objective``: as :func:`network_energy_report`
    (``"search"`` only with the analytic engine: the cycle model and the RTL run the fixed
    nest).

    Returns a JSON-able dict: ``layers`` (per array layer: shape, bits, cycles,
    utilization, energy by category), ``vector_unit`` (``lanes``, ``layers`` with their
    operations, cycles and energy, totals and their ``cycle_share`` / ``energy_share``),
    ``cycles`` (array + vector unit), ``array_cycles``, ``macs``, ``dram_bits``, ``utilization``,
    ``latency_s``, ``energy_j``, ``energy_categories_pj``, ``seq_len``, ``area_cells``,
    ``area_transistors``, ``area`` (Yosys summary) and ``hardware`` (the array's
    configuration).
    """
    from qaccel.sim import executor
    from qaccel.sim.energy import EnergyTable, load_table

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if mapping != "fixed" and engine != "analytic":
        raise ValueError(f"mapping {mapping!r} needs the analytic engine, not {engine!r} "
                         "(the cycle model and the RTL run the fixed nest)")
    table = energy_table if isinstance(energy_table, EnergyTable) else load_table(energy_table)
    hw = hardware_config(array_cfg, net)
    seq = network_seq_len(net, seq_len)
    idx = array_layers(net)
    cfgs = [layer_config(array_cfg, net, net.layers[i]) for i in idx]
    rep = network_energy_report(hw, network_workloads(net, seq), table, "network",
                                layer_cfgs=cfgs, mapping=mapping, objective=objective,
                                vectors=network_vector_workloads(net, seq))
    layers = []
    for i, c, row in zip(idx, cfgs, rep["layers"]):
        L = net.layers[i]
        layers.append({**{k: v for k, v in row.items() if k != "terms_pj"},
                       "kind": L.kind, "groups": L.groups,
                       "out_bits": L.out_q.bits, "a_signed": L.in_q[0].signed,
                       "per_channel": c.per_channel, "energy_pj": row["total_pj"]})
    if engine != "analytic":
        log: dict = {}
        executor.run(net, network_sample_inputs(net, seq),
                     layer_gemm_fn=engine_gemm_fn(net, array_cfg, "cycle", log))
        for row in layers:
            row["cycles_cycle_model"] = sum(log[row["name"]])
            if row["cycles_cycle_model"] != row["cycles"]:
                raise AssertionError(f"layer {row['name']}: cycle model "
                                     f"{row['cycles_cycle_model']} cycles, analytic "
                                     f"{row['cycles']}")
    t = rep["total"]
    vrows = [{k: v for k, v in r.items() if k not in ("terms_pj", "traffic_bits")}
             for r in rep["vector_unit"]]
    v_cycles = sum(r["cycles"] for r in vrows)
    v_pj = sum(r["total_pj"] for r in vrows)
    vector = {"lanes": hw.vector_unit_lanes, "layers": vrows, "cycles": v_cycles,
              "ops": sum(r["ops"] for r in vrows), "energy_pj": v_pj,
              "cycle_share": v_cycles / t["cycles"] if t["cycles"] else 0.0,
              "energy_share": v_pj / t["total_pj"] if t["total_pj"] else 0.0}
    out = {"hardware": hw.to_dict(), "tag": hw.tag(), "clock_mhz": float(clock_mhz),
           "engine": engine, "energy_table": table.to_dict()["name"], "layers": layers,
           "vector_unit": vector, "seq_len": seq, "dram_bits": t["dram_bits"],
           "cycles": t["cycles"], "array_cycles": t["cycles"] - v_cycles, "macs": t["macs"],
           "utilization": t["macs"] / (hw.rows * hw.cols * t["cycles"]),
           "latency_s": t["cycles"] / (clock_mhz * 1e6),
           "energy_j": t["total_pj"] * 1e-12, "energy_pj": t["total_pj"],
           "pj_per_mac": t["pj_per_mac"], "energy_categories_pj": t["categories_pj"],
           "extrapolated_buffers": rep["extrapolated_buffers"],
           "bits": [{"name": r["name"], "w_bits": r["w_bits"], "a_bits": r["a_bits"],
                     "out_bits": r["out_bits"], "per_channel": r["per_channel"]}
                    for r in layers],
           "area_cells": None, "area_transistors": None, "area": None}
    if area:
        from qaccel.synth import area_report

        summary = area_report(hw)["summary"]
        out.update(area=summary, area_cells=_area_cells(summary, hw),
                   area_transistors=summary.get("datapath_transistors"))
    return out


# ---- accuracy ---------------------------------------------------------------------------

def top1(scores, labels) -> float:
    """Top-1 accuracy (%) of ``scores[B, classes]`` against integer ``labels[B]``."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    return 100.0 * float((scores.argmax(axis=1) == labels).mean())


def integer_accuracy(net: IntNetwork, test_set, gemm_fn=None, batch: int | None = None
                     ) -> tuple[float, np.ndarray]:
    """``(accuracy %, integer outputs)`` of the integer network on ``test_set = (x, y)``,
    GEMMs on ``gemm_fn`` (``layer -> gemm_fn`` as :func:`engine_gemm_fn` returns;
    ``None``: numpy), ``batch`` images per executor call."""
    from qaccel.sim import executor

    x, y = (np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in test_set)
    x_int = net.input_q.quantize(x)
    step = len(x) if batch is None else batch
    chunks = range(0, len(x), step)
    if gemm_fn is not None:
        chunks = _progress(chunks, desc="integer network on the cycle model", unit="batch")
    outs = [executor.run(net, x_int[i:i + step], layer_gemm_fn=gemm_fn) for i in chunks]
    y_int = np.concatenate(outs)
    return top1(y_int, y), y_int


def float_accuracy(model, test_set) -> float:
    """Top-1 accuracy (%) of a torch model on ``test_set = (x, y)`` (batches of 512)."""
    import torch

    x, y = test_set
    with torch.no_grad():
        scores = torch.cat([model(x[i:i + 512]) for i in range(0, len(x), 512)])
    return top1(scores.numpy(), y.numpy() if hasattr(y, "numpy") else y)


# ---- RTL --------------------------------------------------------------------------------

def rtl_check(net: IntNetwork, array_cfg: ArrayConfig, x_int, sim: str = "auto") -> dict:
    """Run every GEMM of the inferences ``x_int`` (the network's input array, or a list of
    its input arrays, batch first) through the cocotb bench (one simulator build per
    distinct layer configuration) and check that the RTL's outputs and cycles equal the
    cycle model's, and the cycle model's the executor's.

    Returns ``{"simulator", "jobs", "outputs_match", "cycles_match", "rtl_cycles",
    "model_cycles", "layers", "statement", "runs"}``."""
    from qaccel.rtl_build import default_simulator, run_jobs
    from qaccel.sim import executor

    sim = default_simulator() if sim == "auto" else sim
    groups: dict = {}                                       # rtl_key -> (cfg, [(name, job)])
    def collect(L: IntLayer):
        if L.kind not in ARRAY_KINDS:
            return None
        cfg = layer_config(array_cfg, net, L, strict=True)

        def fn(g):
            groups.setdefault(cfg.rtl_key(), (cfg, []))[1].append((L.name, g.for_config(cfg)))
            return _gemm_on_cycle_model(cfg, g)

        return fn

    xs = list(x_int) if isinstance(x_int, tuple | list) else [x_int]
    n_inf = len(xs[0])
    for i in range(n_inf):                   # one inference per executor call
        executor.run(net, [x[i:i + 1] for x in xs], layer_gemm_fn=collect)
    recs, runs, layers = [], [], []
    for cfg, named in groups.values():
        r = run_jobs(cfg, [job for _, job in named], sim, name="flow")
        runs.append({"config": cfg.tag(), "jobs": len(named), "passed": r.passed,
                     "log": str(r.log), "sim_seconds": r.sim_seconds,
                     "built": "cached" if r.built.cached else "built"})
        recs += r.jobs
        for (name, _), rec in zip(named, r.jobs):
            layers.append({"name": name, "rtl_cycles": rec.get("rtl_cycles"),
                           "model_cycles": rec.get("model_cycles"),
                           "outputs_match": rec.get("outputs_match"),
                           "cycles_match": rec.get("cycles_match")})
        if len(r.jobs) != len(named):
            layers.append({"name": "(bench stopped early)", "outputs_match": False,
                           "cycles_match": False})
    n_jobs = sum(len(named) for _, named in groups.values())
    outputs = all(x["outputs_match"] for x in layers) and len(recs) == n_jobs
    cycles = all(x["cycles_match"] for x in layers) and len(recs) == n_jobs
    passed = outputs and cycles and all(r["passed"] for r in runs)
    rtl_c = sum(x.get("rtl_cycles") or 0 for x in layers)
    model_c = sum(x.get("model_cycles") or 0 for x in layers)
    statement = (f"RTL ({sim}, cocotb) == cycle model == integer executor on {n_inf} "
                 f"whole inference(s): {n_jobs} GEMMs, every output integer and all "
                 f"{rtl_c:,} cycles equal" if passed else
                 f"RTL ({sim}) DISAGREES with the cycle model: outputs_match={outputs}, "
                 f"cycles_match={cycles}; logs: {', '.join(r['log'] for r in runs)}")
    return {"simulator": sim, "images": int(n_inf), "jobs": n_jobs,
            "outputs_match": bool(outputs), "cycles_match": bool(cycles),
            "passed": bool(passed), "rtl_cycles": rtl_c, "model_cycles": model_c,
            "layers": layers, "runs": runs, "statement": statement}


# ---- the whole flow ---------------------------------------------------------------------

@dataclass(frozen=True)
class RunReport:
    """Result of :func:`run`. ``to_dict()`` is ``report.json``: ``accuracy`` (``fp32``,
    ``fake_quant``, ``integer``, ``executor``; ``None`` where not measurable), ``cycles``,
    ``energy_j``, ``area_cells`` and the rest of :func:`network_cost`, ``rtl``."""

    config: RunConfig
    model: str
    accuracy: dict
    cost: dict
    eval_images: int
    rtl: dict | None = None
    seconds: dict = field(default_factory=dict)
    net: IntNetwork | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        return {"model": self.model, "engine": self.config.engine,
                "accuracy": dict(self.accuracy), "eval_images": self.eval_images,
                **{k: v for k, v in self.cost.items()},
                "rtl": self.rtl, "seconds": dict(self.seconds),
                "config": self.config.to_dict()}


def run(cfg: RunConfig) -> RunReport:
    """Load, quantize (cached), measure the accuracies, execute the integer network on
    ``cfg.engine`` and cost it on ``cfg.array``. Asserts that the integer network on the
    engine gives exactly the executor's outputs (hence accuracy)."""
    seconds = {}
    t0 = time.perf_counter()
    loaded = load_model(cfg.model, cfg.data, n_calib=cfg.n_calib)
    seconds["load"] = time.perf_counter() - t0
    qmodel = None
    net = loaded.net
    if net is None:
        t0 = time.perf_counter()
        qmodel, net = quantize_model(loaded.model, loaded.calib, cfg.quant)
        seconds["quantize"] = time.perf_counter() - t0
    acc = {"fp32": None, "fake_quant": None, "integer": None, "executor": None}
    n_eval = 0
    if loaded.test_set is not None:
        if [v.kind for v in net.inputs] != ["act"]:
            raise ValueError(f"RunConfig.data: test data (x, y) applies to networks with one "
                             f"activation input; {loaded.name} takes "
                             f"{', '.join(f'{v.name} ({v.kind})' for v in net.inputs)}")
        x, y = loaded.test_set
        n_eval = len(x) if cfg.eval_images is None else min(cfg.eval_images, len(x))
        test = (x[:n_eval], y[:n_eval])
        t0 = time.perf_counter()
        if loaded.model is not None:
            acc["fp32"] = float_accuracy(loaded.model, test)
            acc["fake_quant"] = float_accuracy(qmodel, test)
        acc["executor"], y_ref = integer_accuracy(net, test)
        seconds["accuracy"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fn = engine_gemm_fn(net, cfg.array, cfg.engine)
        acc["integer"], y_eng = integer_accuracy(net, test, fn,
                                                 None if fn is None else ENGINE_BATCH)
        seconds["engine"] = time.perf_counter() - t0
        if not np.array_equal(y_eng, y_ref) or acc["integer"] != acc["executor"]:
            raise AssertionError(f"the integer network on the {cfg.engine} engine differs "
                                 f"from the executor ({acc['integer']} vs {acc['executor']})")
    t0 = time.perf_counter()
    cost = network_cost(net, cfg.array, cfg.clock_mhz, cfg.energy_table,
                        "analytic" if cfg.engine == "analytic" else "cycle", area=cfg.area,
                        seq_len=cfg.seq_len)
    cost["engine"] = cfg.engine
    seconds["cost"] = time.perf_counter() - t0
    rtl = None
    if cfg.engine == "rtl":
        t0 = time.perf_counter()
        if loaded.test_set is not None:
            x_int = net.input_q.quantize(np.asarray(loaded.test_set[0][:cfg.rtl_images]))
        else:
            x_int = network_sample_inputs(net, cfg.seq_len, cfg.rtl_images)
        rtl = rtl_check(net, cfg.array, x_int, cfg.sim)
        per_inf = rtl["rtl_cycles"] / max(rtl["images"], 1)
        rtl["cycles_per_inference"] = per_inf
        rtl["equals_analytic"] = per_inf == cost["array_cycles"]
        seconds["rtl"] = time.perf_counter() - t0
    return RunReport(config=cfg, model=loaded.name, accuracy=acc, cost=cost,
                     eval_images=n_eval, rtl=rtl, seconds=seconds, net=net)
