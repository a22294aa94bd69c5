"""Evaluating design points: what a Dask worker runs. Workers never touch the store.

- cost (``metrics: [cost]``): the analytic model and the energy model
  (:func:`qaccel.sim.energy.workloads_energy`: cycle-exact latency, traffic, energy with the
  point's table), each layer under the point's ``mapping`` (the fixed nest, or the
  :mod:`qaccel.sim.mapper` search for its ``objective``); a quantized or exported integer
  network is costed layer by layer at its own bit-widths (:func:`qaccel.flow.network_cost`).
  The vector unit's layers (an integer network's pooling, adds, softmax, LayerNorm, ...;
  ``bert_base``'s) count in the cycles, traffic and energy on the point's
  ``vector_lanes``;
- area (``[area]``): Yosys cells of the datapath (:func:`qaccel.dse.isoarea.datapath_cells`:
  PE, requantizer and parameter FIFO, synthesized once per bit-width configuration, cached);
- accuracy (``[accuracy]``, workloads with data): :func:`qaccel.flow.quantize_model` (cached
  by content hash in the workspace, once per quantization config) and the integer network on
  the test split.
"""

from __future__ import annotations

import functools
import time
import traceback

from qaccel.sim.config import ArrayConfig

from .fields import METRIC_GROUPS
from .spec import DesignPoint
from .workload import WorkloadContext

__all__ = ["cost_metrics", "net_cost_metrics", "area_metrics", "quantized", "evaluate_point",
           "evaluate_batch", "PointResult"]

#: (config_hash, status, error, elapsed_s, metrics)
PointResult = tuple[str, str, "str | None", float, dict]


def _mapper(mapping: str, objective: str, table):
    """``None`` (the fixed nest) or a per-layer mapper for ``analyze_network``."""
    from qaccel.sim.mapper import choose_mapping

    if mapping == "fixed":
        return None
    return lambda cfg, w: choose_mapping(cfg, w, mapping, objective, table)


def cost_metrics(cfg: ArrayConfig, gemms, table, clock_mhz: float, mapping: str = "fixed",
                 objective: str = "energy", vectors=()) -> dict:
    """Cycles, latency, utilization, traffic and energy of ``gemms`` on ``cfg``, each layer
    mapped per ``mapping`` (``"fixed"`` or ``"search"`` for ``objective``), and of the
    vector-unit layers ``vectors`` (serialized with the array)."""
    from qaccel.sim.energy import CATEGORIES, workloads_energy

    perf, _, total = workloads_energy(cfg, gemms, table, _mapper(mapping, objective, table),
                                      vectors)
    cats = total.by_category()
    traffic = perf.traffic
    out = {"cycles": int(perf.cycles), "latency_s": perf.cycles / (clock_mhz * 1e6),
           "utilization": float(perf.utilization), "macs": int(perf.macs),
           "dram_bits": traffic.total("dram"), "buffer_bits": traffic.total("buffer"),
           "energy_j": total.total_pj * 1e-12,
           "pj_per_mac": total.total_pj / perf.macs if perf.macs else 0.0}
    out.update({f"energy_{c}_j": cats[c] * 1e-12 for c in CATEGORIES})
    return out


@functools.lru_cache(maxsize=256)
def _datapath_cells(cfg: ArrayConfig) -> float:
    from qaccel.dse.isoarea import datapath_cells

    return datapath_cells(cfg)


def area_metrics(cfg: ArrayConfig) -> dict:
    """Yosys cells of the datapath (synthesis cached per bit-width configuration)."""
    return {"area_cells": int(round(_datapath_cells(cfg)))}


@functools.lru_cache(maxsize=4)
def _loaded(model: str, calib: int):
    """The digits model with its calibration and test data, its FP32 accuracy (per
    process)."""
    import torch

    from qaccel import flow
    from qaccel.quant import digits

    torch.set_num_threads(1)
    lm = flow.load_model(model, n_calib=calib)
    return lm, digits.evaluate(lm.model, lm.test_set)


@functools.lru_cache(maxsize=4)
def _int_network(path: str):
    from qaccel.sim.network import IntNetwork

    return IntNetwork.load(path)


def net_cost_metrics(net, cfg: ArrayConfig, table, clock_mhz: float, mapping: str = "fixed",
                     objective: str = "energy", seq_len: int | None = None
                     ) -> tuple[dict, ArrayConfig]:
    """Cost of an integer network, every layer at its own bit-widths and mapped per
    ``mapping``/``objective``, its vector-unit layers included, at ``seq_len`` (token
    networks; :func:`qaccel.flow.network_cost`), plus its traffic; and the array that runs
    it."""
    from qaccel import flow
    from qaccel.sim.energy import CATEGORIES

    cost = flow.network_cost(net, cfg, clock_mhz, table, "analytic", area=False,
                             mapping=mapping, objective=objective, seq_len=seq_len)
    dram = cost["dram_bits"]
    buf = sum(row["buffer_bits"] for row in cost["layers"] + cost["vector_unit"]["layers"])
    cats = cost["energy_categories_pj"]
    out = {"cycles": int(cost["cycles"]), "latency_s": float(cost["latency_s"]),
           "utilization": float(cost["utilization"]), "macs": int(cost["macs"]),
           "dram_bits": dram, "buffer_bits": buf, "energy_j": float(cost["energy_j"]),
           "pj_per_mac": float(cost["pj_per_mac"])}
    out.update({f"energy_{c}_j": cats[c] * 1e-12 for c in CATEGORIES})
    return out, flow.hardware_config(cfg, net)


def quantized(ctx: WorkloadContext, quant_cfg) -> dict:
    """Quantize the workload's model with ``quant_cfg`` (:func:`qaccel.flow.quantize_model`,
    cached by content hash in the workspace) and score it on the test split."""
    from qaccel import flow
    from qaccel.quant import digits

    lm, fp32 = _loaded(ctx.model, ctx.calib)
    qmodel, net = flow.quantize_model(lm.model, lm.calib, quant_cfg)
    acc_int, _ = flow.integer_accuracy(net, lm.test_set)
    return {"net": net, "accuracy": acc_int,
            "accuracy_fake_quant": digits.evaluate(qmodel, lm.test_set), "accuracy_fp32": fp32}


def evaluate_point(ctx: WorkloadContext, point: DesignPoint, groups, tables: dict) -> dict:
    """Every metric of ``groups`` for one point; raises on failure."""
    metrics: dict = {}
    table = tables[point.energy_table]
    hw = point.array
    net = None
    if ctx.kind == "model":
        q = quantized(ctx, point.quant)
        net = q.pop("net")
        if "accuracy" in groups:
            metrics.update(q)
    elif ctx.kind == "int_network":
        net = _int_network(ctx.int_network)
    if net is not None:
        cost, hw = net_cost_metrics(net, point.array, table, point.clock_mhz, point.mapping,
                                    point.objective, ctx.seq_len)
    elif "cost" in groups:
        cost = cost_metrics(point.array, ctx.gemms, table, point.clock_mhz, point.mapping,
                            point.objective, ctx.vectors(point.array))
    if "cost" in groups:
        metrics.update(cost)
    if "area" in groups:
        metrics.update(area_metrics(hw))
    want = [m for g in groups for m in METRIC_GROUPS[g]]
    missing = [m for m in want if m not in metrics]
    if missing:
        raise RuntimeError(f"metrics {missing} were not computed")
    return metrics


def _error_text(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def evaluate_batch(ctx: WorkloadContext, tables: dict, points, groups) -> list[PointResult]:
    """Evaluate ``points`` one by one; a failing point becomes an ``error`` result and the
    others still run. Runs on a worker."""
    if ctx.workspace:                   # the client's workspace: shared caches live there
        from qaccel import workspace

        workspace.use(ctx.workspace)
    out = []
    for p in points:
        t0 = time.perf_counter()
        try:
            m = evaluate_point(ctx, p, groups, tables)
            out.append((p.config_hash, "ok", None, time.perf_counter() - t0, m))
        except Exception as exc:               # stored with the point; the sweep goes on
            out.append((p.config_hash, "error", _error_text(exc), time.perf_counter() - t0,
                        {}))
    return out
