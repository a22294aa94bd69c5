"""qaccel.dse.pareto: the front is exactly the non-dominated set (property tests)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qaccel.dse.pareto import (
    Objective,
    complete_rows,
    dominates,
    objective,
    pareto_front,
    plot_front,
    weakly_dominated_by,
)


@st.composite
def point_sets(draw):
    k = draw(st.integers(1, 3))
    n = draw(st.integers(1, 40))
    # small integer grid: many ties and duplicates, the cases a sloppy front gets wrong
    vals = draw(st.lists(st.lists(st.integers(0, 6), min_size=k, max_size=k),
                         min_size=n, max_size=n))
    maximize = draw(st.lists(st.booleans(), min_size=k, max_size=k))
    return np.array(vals, dtype=float), maximize


@settings(max_examples=300, deadline=None)
@given(point_sets())
def test_front_is_exactly_the_non_dominated_set(data):
    vals, maximize = data
    front = set(pareto_front(vals, maximize).tolist())
    assert front, "a non-empty set always has a non-dominated point"
    for i in range(len(vals)):
        dominated = any(dominates(vals[j], vals[i], maximize) for j in range(len(vals)))
        if i in front:
            assert not dominated, f"front point {vals[i]} is dominated"
        else:
            # every excluded point is dominated by a point *of the front*
            assert any(dominates(vals[j], vals[i], maximize) for j in front), vals[i]


@settings(max_examples=100, deadline=None)
@given(point_sets())
def test_every_point_is_weakly_dominated_by_the_front(data):
    vals, maximize = data
    fv = vals[pareto_front(vals, maximize)]
    assert all(weakly_dominated_by(v, fv, maximize) for v in vals)


def test_directions_matter():
    # (energy, accuracy): lower energy and higher accuracy are better
    pts = np.array([[1.0, 90.0], [2.0, 95.0], [3.0, 94.0], [1.0, 80.0]])
    assert pareto_front(pts, [False, True]).tolist() == [0, 1]
    # both minimised: (1, 80) beats everything
    assert pareto_front(pts, [False, False]).tolist() == [3]
    assert dominates(pts[1], pts[2], [False, True])
    assert not dominates(pts[0], pts[0], [False, True])      # a point never dominates itself


def test_duplicates_all_kept():
    pts = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    assert pareto_front(pts, [False, False]).tolist() == [0, 1]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="NaN"):
        pareto_front([[1.0, np.nan]], [False, False])
    with pytest.raises(ValueError, match="2 objectives but 1 directions"):
        pareto_front([[1.0, 2.0]], [False])
    with pytest.raises(ValueError, match="direction"):
        Objective("energy", "smaller")
    with pytest.raises(ValueError, match="unknown objective 'speed'"):
        objective("speed")
    assert objective("cycles:min") == Objective("cycles", "min")
    assert objective("accuracy").maximize
    assert objective("energy") == objective("energy_j")
    assert (objective("energy").name, objective("energy").direction) == ("energy_j", "min")


def test_complete_rows_drops_missing_metrics():
    rows = [{"a": 1.0, "b": 2}, {"a": None, "b": 1}, {"a": float("nan"), "b": 1},
            {"a": "x", "b": 1}, {"a": 3, "b": True}]
    assert complete_rows(rows, ["a", "b"]) == [rows[0]]


def test_plot_front_writes_png(tmp_path):
    rows = [{"energy_j": e, "accuracy": a, "latency_s": l, "tag": f"p{i}"}
            for i, (e, a, l) in enumerate([(1, 90, 5), (2, 95, 3), (3, 94, 4), (1.5, 80, 1)])]
    vals = [[r["energy_j"], r["accuracy"]] for r in rows]
    front = pareto_front(vals, [False, True])
    p = plot_front(rows, front, objective("energy"), objective("accuracy"),
                   tmp_path / "f2.png", label_key="tag")
    assert p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG"
    p3 = plot_front(rows, [0, 1, 3], objective("energy"), objective("accuracy"),
                    tmp_path / "f3.png", z=objective("latency"))
    assert p3.stat().st_size > 5000
