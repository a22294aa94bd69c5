"""SCALE-Sim 3.0.0 compatibility mode: its per-layer compute cycles and utilization columns.

SCALE-Sim maps a GEMM of ``T`` output pixels, ``K = Fh*Fw*Ch`` and ``N`` filters onto an
``R x C`` array as a spatial ``Sr x Sc`` operand folded ``ceil(Sr/R) * ceil(Sc/C)``
times, each fold streaming a temporal dimension ``Tm``:

========  =======  =======  =======  ===
dataflow  ``Sr``   ``Sc``   ``Tm``   k
========  =======  =======  =======  ===
ws        ``K``    ``N``    ``T``    2
os        ``T``    ``N``    ``K``    1
is        ``K``    ``T``    ``N``    2
========  =======  =======  =======  ===

* ``Total Cycles`` (stall-free compute) ``= ceil(Sr/R) * ceil(Sc/C) * (k*R + C + Tm - 2) - 1``:
  weight (ws) / input (is) preload is NOT overlapped with compute, unlike our RTL.
* ``Mapping Efficiency % = 100 * Sr*Sc / (ceil(Sr/R)*R * ceil(Sc/C)*C)`` (mean over folds).
* ``Compute Util % = Mapping Efficiency % * Tm / (Tm + G)`` with ``G = 2R + 2C - 3``
  (ws, is) or ``R + C - 2`` (os): the per-fold cycles SCALE-Sim divides by.
* ``Overall Util % = 100 * T*K*N / (R*C*Total Cycles)``.

``Total Cycles (incl. prefetch)`` (OFMAP DRAM stop - first DRAM read in SCALE-Sim's
scratchpad simulation) depends on its memory system and is not modelled. A workload
with ``repeat > 1`` (groups, heads) runs as ``repeat`` SCALE-Sim layers back to back.
Numpy-free, closed form.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .validate import check_int, fail
from .workload import GemmWorkload, NetworkTotals

__all__ = ["DATAFLOWS", "CompatLayer", "CompatNetwork", "compat_layer", "compat_network",
           "spatial_mapping"]

DATAFLOWS = ("ws", "os", "is")


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def spatial_mapping(dataflow: str, T: int, K: int, N: int) -> tuple[int, int, int, int]:
    """``(Sr, Sc, Tm, k)`` of a GEMM under SCALE-Sim's ``dataflow``."""
    if dataflow == "ws":
        return K, N, T, 2
    if dataflow == "os":
        return T, N, K, 1
    if dataflow == "is":
        return K, T, N, 2
    raise fail("SCALE-Sim", "dataflow", "one of " + ", ".join(map(repr, DATAFLOWS)), dataflow)


@dataclass(frozen=True)
class CompatLayer:
    name: str
    dataflow: str
    T: int
    K: int
    N: int
    repeat: int
    Sr: int
    Sc: int
    Tm: int
    folds: int             # per job
    cycles: int            # "Total Cycles" (all repeat jobs)
    macs: int
    mapping_efficiency: float   # percent
    compute_util: float         # percent
    overall_util: float         # percent

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def compat_layer(rows: int, cols: int, dataflow: str, w: GemmWorkload) -> CompatLayer:
    """SCALE-Sim's stall-free compute cycles and utilization for one workload."""
    for name, v in (("rows", rows), ("cols", cols)):
        check_int("SCALE-Sim array", name, v, 1)
    Sr, Sc, Tm, k = spatial_mapping(dataflow, w.T, w.K, w.N)
    fr, fc = _cdiv(Sr, rows), _cdiv(Sc, cols)
    per_job = fr * fc * (k * rows + cols + Tm - 2) - 1
    cycles = w.repeat * per_job
    map_eff = 100.0 * (Sr * Sc) / (fr * rows * fc * cols)
    gap = 2 * rows + 2 * cols - 3 if dataflow in ("ws", "is") else rows + cols - 2
    compute_util = map_eff * Tm / (Tm + gap)
    macs = w.macs
    overall = 100.0 * macs / (rows * cols * cycles)
    return CompatLayer(name=w.name, dataflow=dataflow, T=w.T, K=w.K, N=w.N, repeat=w.repeat,
                       Sr=Sr, Sc=Sc, Tm=Tm, folds=fr * fc, cycles=cycles, macs=macs,
                       mapping_efficiency=map_eff, compute_util=compute_util,
                       overall_util=overall)


@dataclass(frozen=True)
class CompatNetwork(NetworkTotals):
    rows: int
    cols: int
    dataflow: str
    layers: tuple[CompatLayer, ...]

    @property
    def pe_count(self) -> int:
        return self.rows * self.cols

    def to_dict(self) -> dict:
        return {"model": "scalesim-compat", "rows": self.rows, "cols": self.cols,
                "dataflow": self.dataflow, "layers": [lp.to_dict() for lp in self.layers],
                "totals": {"layers": len(self.layers), "cycles": self.cycles,
                           "macs": self.macs, "utilization": self.utilization}}


def compat_network(rows: int, cols: int, dataflow: str, gemms: Iterable[GemmWorkload]
                   ) -> CompatNetwork:
    layers = tuple(compat_layer(rows, cols, dataflow, g) for g in gemms)
    if not layers:
        raise ValueError("compat_network: no layers")
    return CompatNetwork(rows, cols, dataflow, layers)
