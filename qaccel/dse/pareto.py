"""Pareto fronts: which design points no other point beats on every objective.

A point ``a`` *dominates* ``b`` when ``a`` is at least as good as ``b`` on every objective
and strictly better on one (each objective has a direction: accuracy is maximised, energy,
latency and area minimised). The *front* is the set of points no other point dominates.
Equal points do not dominate each other, so duplicates of a front point are all on the
front.

Pure numpy; :func:`plot_front` draws a front with matplotlib (Agg, PNG).
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Objective", "OBJECTIVES", "objective", "dominates", "pareto_front",
           "weakly_dominated_by", "complete_rows", "plot_front"]

_DIRECTIONS = ("min", "max")


@dataclass(frozen=True)
class Objective:
    """One objective: the metric ``name`` (a store column) and its ``direction``.

    Parameters
    ----------
    name : str
        Column / metric name.
    direction : {"min", "max"}
        Whether smaller or larger values are better.
    label : str
        Axis label for plots (default: ``name``).
    """

    name: str
    direction: str
    label: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Objective.name must be a non-empty string, not {self.name!r}")
        if self.direction not in _DIRECTIONS:
            raise ValueError(f"Objective.direction must be 'min' or 'max', not "
                             f"{self.direction!r} (objective {self.name!r})")
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @property
    def maximize(self) -> bool:
        return self.direction == "max"


#: the search objectives, by short name: the store column each reads and its direction
OBJECTIVES = {
    "accuracy": Objective("accuracy", "max", "accuracy, integer network (%)"),
    "energy": Objective("energy_j", "min", "energy per inference (J)"),
    "latency": Objective("latency_s", "min", "latency per inference (s)"),
    "area": Objective("area_cells", "min", "datapath area (Yosys cells)"),
}


def objective(spec: str) -> Objective:
    """An objective from its short name (``"energy"``), its column (``"energy_j"``), or
    ``"column:min"`` / ``"column:max"`` for any other numeric column."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"objective must be a non-empty string, not {spec!r}")
    if ":" in spec:
        name, direction = spec.rsplit(":", 1)
        return Objective(name, direction)
    if spec in OBJECTIVES:
        return OBJECTIVES[spec]
    for o in OBJECTIVES.values():
        if o.name == spec:
            return o
    raise ValueError(f"unknown objective {spec!r}: use one of {', '.join(OBJECTIVES)} "
                     f"or COLUMN:min / COLUMN:max")


def _oriented(values, maximize: Sequence[bool]) -> np.ndarray:
    """``values`` as an ``(n, k)`` float array where smaller is better in every column."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values must be 2-D (points x objectives), got shape {v.shape}")
    if v.shape[1] != len(maximize):
        raise ValueError(f"values have {v.shape[1]} objectives but {len(maximize)} directions "
                         f"were given")
    if np.isnan(v).any():
        raise ValueError("values hold NaN; drop points without every metric first")
    sign = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)
    return v * sign


def dominates(a, b, maximize: Sequence[bool]) -> bool:
    """True if point ``a`` dominates point ``b`` (no worse everywhere, better somewhere)."""
    o = _oriented([a, b], maximize)
    return bool(np.all(o[0] <= o[1]) and np.any(o[0] < o[1]))


def pareto_front(values, maximize: Sequence[bool]) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of ``values``.

    Parameters
    ----------
    values : array_like, shape (n, k)
        One row per point, one column per objective (no NaN).
    maximize : sequence of bool, length k
        Direction of each column: True to maximise, False to minimise.

    Returns
    -------
    numpy.ndarray of int
        Rows that no other row dominates. Identical rows are all kept.
    """
    o = _oriented(values, maximize)
    n = len(o)
    keep = np.ones(n, dtype=bool)
    # sort by the first objective (then the rest) so dominators come early; a point can
    # only be dominated by one that is no worse in the first objective
    order = np.lexsort(o.T[::-1])
    o_sorted = o[order]
    for pos in range(n):
        i = order[pos]
        if not keep[i]:
            continue
        # points after pos that i dominates
        rest = o_sorted[pos + 1:]
        dominated = np.all(o[i] <= rest, axis=1) & np.any(o[i] < rest, axis=1)
        keep[order[pos + 1:][dominated]] = False
    return np.flatnonzero(keep)


def weakly_dominated_by(point, front_values, maximize: Sequence[bool]) -> bool:
    """True if some row of ``front_values`` is at least as good as ``point`` everywhere."""
    o = _oriented(np.vstack([np.asarray(point, dtype=np.float64)[None, :],
                             np.asarray(front_values, dtype=np.float64)]), maximize)
    return bool(np.any(np.all(o[1:] <= o[0], axis=1)))


def plot_front(rows: Sequence[Mapping], front: Sequence[int], x: Objective, y: Objective,
               path, z: Objective | None = None, title: str = "",
               label_key: str | None = None, marked: Sequence[int] = (),
               marked_label: str = "marked") -> pathlib.Path:
    """Scatter all points and highlight the front (PNG).

    2-D: ``x`` against ``y``, the front as a step line. With ``z``: every point coloured by
    ``z`` (colour bar), front points outlined; the front is the 3-objective front.

    Parameters
    ----------
    rows : sequence of mapping
        Points with (at least) the ``x``, ``y`` (and ``z``) keys.
    front : sequence of int
        Indices of the front rows.
    label_key : str, optional
        Key of a short text drawn next to every front point (e.g. a configuration tag).
    marked : sequence of int
        Rows drawn with an extra marker (e.g. the uniform-precision points), legend
        ``marked_label``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fs = set(int(i) for i in front)
    xs = np.array([float(r[x.name]) for r in rows])
    ys = np.array([float(r[y.name]) for r in rows])
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    others = np.array([i not in fs for i in range(len(rows))], dtype=bool)
    on = ~others
    if z is None:
        ax.scatter(xs[others], ys[others], s=18, c="0.65", label="dominated")
        ax.scatter(xs[on], ys[on], s=36, c="tab:red", edgecolors="black", linewidths=0.5,
                   label="Pareto front", zorder=3)
        if on.any():
            idx = np.flatnonzero(on)
            idx = idx[np.lexsort((ys[idx] * (-1 if y.maximize else 1), xs[idx]))]
            ax.step(xs[idx], ys[idx], where="post", color="tab:red", lw=1, alpha=0.7)
    else:
        zs = np.array([float(r[z.name]) for r in rows])
        sc = ax.scatter(xs, ys, s=np.where(on, 44, 16), c=zs, cmap="viridis",
                        edgecolors=np.where(on, "black", "none").tolist(), linewidths=0.8,
                        zorder=3)
        cb = fig.colorbar(sc, ax=ax)
        cb.set_label(f"{z.label} ({'higher' if z.maximize else 'lower'} is better)")
        ax.scatter([], [], s=44, c="white", edgecolors="black", label="Pareto front (3-D)")
    if len(marked):
        mk = np.asarray(list(marked), dtype=int)
        ax.scatter(xs[mk], ys[mk], s=90, marker="s", facecolors="none", edgecolors="tab:blue",
                   linewidths=1.2, label=marked_label, zorder=4)
    if label_key is not None:
        mid = (xs.min() + xs.max()) / 2
        for i in sorted(fs):
            right = xs[i] > mid                    # keep the text inside the axes
            ax.annotate(str(rows[i][label_key]), (xs[i], ys[i]), fontsize=6,
                        xytext=(-3 if right else 3, 3), textcoords="offset points",
                        ha="right" if right else "left")
    if len(xs) and np.all(xs > 0) and xs.max() / xs.min() > 50:
        ax.set_xscale("log")
    ax.set_xlabel(f"{x.label} ({'higher' if x.maximize else 'lower'} is better)")
    ax.set_ylabel(f"{y.label} ({'higher' if y.maximize else 'lower'} is better)")
    ax.set_title(title or f"{len(fs)} non-dominated of {len(rows)} points")
    ax.grid(True, lw=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _finite(v) -> bool:
    if isinstance(v, bool) or v is None:
        return False
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def complete_rows(rows: Sequence[Mapping], names: Sequence[str]) -> list[Mapping]:
    """The rows that hold a finite number under every key of ``names``."""
    return [r for r in rows if all(_finite(r.get(n)) for n in names)]
