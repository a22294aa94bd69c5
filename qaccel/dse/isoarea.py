"""Iso-area design points: the largest array a bit-width configuration affords in a fixed
area budget.

Area is counted in Yosys generic cells of the synthesized datapath parts
(:func:`qaccel.synth.area_report`, no-ABC flow, cached in the workspace's ``synth/``): the
processing element, the requantizer and the parameter FIFO. The parts are synthesized once
per bit-width configuration at a small reference geometry (``PART_LANES x PART_LANES``);
an ``R x C`` array then costs

    ``cells(R, C) = R * C * pe + C * (requantizer lane + parameter FIFO lane)``

(the requantizer and the FIFO hold one lane per column, so they are scaled per lane, as
:func:`qaccel.synth.area_report` scales the requantizer). :func:`array_for_budget` picks
the square-ish ``R x C`` with the most PEs that fits: narrower bit-widths buy more PEs
in the same area, and the analytic model turns them into fewer cycles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qaccel.sim import ArrayConfig

__all__ = ["AreaModel", "area_model", "datapath_cells", "fit_array", "array_for_budget"]

#: fields of ArrayConfig that do not change a part's area in this model (geometry, buffers)
_GEOMETRY = ("rows", "cols", "weight_buffer_kib", "act_buffer_kib", "out_buffer_kib")


@dataclass(frozen=True)
class AreaModel:
    """Yosys cells of one bit-width configuration's datapath, per PE and per column lane.

    Parameters
    ----------
    pe_cells : int
        One processing element.
    requant_lane_cells : float
        One requantizer lane (synthesized with several lanes, divided by their number).
    fifo_lane_cells : float
        The parameter FIFO's share per column (synthesized at the reference geometry,
        divided by its columns).
    config : dict
        The bit-width fields of the configuration the parts were synthesized for.
    """

    pe_cells: int
    requant_lane_cells: float
    fifo_lane_cells: float
    config: dict

    def cells(self, rows: int, cols: int) -> float:
        """Datapath cells of a ``rows x cols`` array."""
        return rows * cols * self.pe_cells + cols * (self.requant_lane_cells
                                                     + self.fifo_lane_cells)


def area_model(cfg: ArrayConfig) -> AreaModel:
    """Synthesize (or read from the cache) ``cfg``'s PE, requantizer and parameter FIFO.

    The first Yosys call of a machine compiles the WebAssembly (about a minute); later
    configurations take seconds, cached ones nothing.
    """
    from qaccel.synth import PART_LANES, area_report

    ref = cfg.replace(rows=PART_LANES, cols=PART_LANES)
    rep = area_report(ref, parts=("pe", "requantizer", "params_fifo"))
    mode = "pc" if cfg.per_channel else "pt"
    parts = rep["parts"]
    s = rep["summary"]
    return AreaModel(pe_cells=int(s["pe_cells"]),
                     requant_lane_cells=float(s[f"requant_lane_{mode}_cells"]),
                     fifo_lane_cells=parts[f"params_fifo@{mode}"]["cells"] / ref.cols,
                     config={k: v for k, v in cfg.to_dict().items() if k not in _GEOMETRY})


def datapath_cells(cfg: ArrayConfig) -> float:
    """Datapath cells (PEs + requantizer + parameter FIFO) of ``cfg``'s array."""
    return area_model(cfg).cells(cfg.rows, cfg.cols)


def fit_array(budget_cells: float, cells: Callable[[int, int], float], *,
              max_aspect: int = 2, lo: int = 2, hi: int = 256) -> tuple[int, int]:
    """The ``(rows, cols)`` with the most PEs whose ``cells(rows, cols)`` fits the budget.

    Square-ish: ``max(rows, cols) <= max_aspect * min(rows, cols)``. Among equal PE counts
    the squarer array wins, then the one with more rows (the reduction dimension).

    Raises
    ------
    ValueError
        If not even a ``lo x lo`` array fits (naming the budget and that array's cells).
    """
    if isinstance(budget_cells, bool) or not isinstance(budget_cells, int | float) \
            or not budget_cells > 0:
        raise ValueError(f"area_budget_cells must be a number > 0, not {budget_cells!r}")
    if not (isinstance(max_aspect, int) and max_aspect >= 1):
        raise ValueError(f"max_aspect must be an integer >= 1, not {max_aspect!r}")
    best = None
    for r in range(lo, hi + 1):
        for c in range(max(lo, -(-r // max_aspect)), min(hi, r * max_aspect) + 1):
            if cells(r, c) > budget_cells:
                break                             # cells grow with c
            key = (r * c, -abs(r - c), r)
            if best is None or key > best[0]:
                best = (key, (r, c))
    if best is None:
        raise ValueError(f"area_budget_cells={budget_cells:g} is too small: a {lo}x{lo} array "
                         f"needs {cells(lo, lo):,.0f} cells")
    return best[1]


def array_for_budget(cfg: ArrayConfig, budget_cells: float, *, max_aspect: int = 2
                     ) -> ArrayConfig:
    """``cfg`` with the largest square-ish ``rows x cols`` that fits ``budget_cells``
    datapath cells at ``cfg``'s bit-widths (see :func:`fit_array`)."""
    model = area_model(cfg)
    r, c = fit_array(budget_cells, model.cells, max_aspect=max_aspect)
    return cfg.replace(rows=r, cols=c)
