"""qaccel.dse.isoarea: the largest square-ish array in an area budget, from Yosys cells."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qaccel.sim import ArrayConfig
from qaccel.sim.analytic import analyze_network
from qaccel.sim.workload import conv_workload, linear_workload

from qaccel.dse.isoarea import area_model, array_for_budget, fit_array


@settings(max_examples=60, deadline=None)
@given(pe=st.integers(50, 2000), lane=st.integers(0, 8000), budget=st.integers(1, 3_000_000),
       aspect=st.integers(1, 3))
def test_fit_array_is_the_largest_that_fits(pe, lane, budget, aspect):
    def cells(r, c):
        return r * c * pe + c * lane

    if cells(2, 2) > budget:
        with pytest.raises(ValueError, match="area_budget_cells=.* too small"):
            fit_array(budget, cells, max_aspect=aspect)
        return
    r, c = fit_array(budget, cells, max_aspect=aspect, hi=64)
    assert cells(r, c) <= budget
    assert max(r, c) <= aspect * min(r, c)
    better = [(rr, cc) for rr in range(2, 65) for cc in range(2, 65)
              if max(rr, cc) <= aspect * min(rr, cc) and cells(rr, cc) <= budget
              and rr * cc > r * c]
    assert not better, better[:3]


def test_fit_array_rejects_bad_budget():
    for bad in (0, -5, "big", True, None):
        with pytest.raises(ValueError, match="area_budget_cells"):
            fit_array(bad, lambda r, c: r * c)


def _digits_cnn_gemms():
    return [conv_workload("c1", 8, 8, 1, 16, 3, padding=1),
            conv_workload("c2", 8, 8, 16, 32, 3, padding=1),
            conv_workload("c3", 4, 4, 32, 64, 3, padding=1),
            linear_workload("fc", 1, 64, 10)]


def test_narrow_bits_buy_more_pes_and_fewer_cycles():
    """Yosys cells (cached under build/synth/area; a fresh machine synthesizes three parts
    per bit-width, about a minute for the first call)."""
    base = ArrayConfig(per_channel=True, acc_bits=32, mult_bits=16)
    w8a8 = area_model(base.replace(w_bits=8, a_bits=8))
    w4a4 = area_model(base.replace(w_bits=4, a_bits=4))
    assert w4a4.pe_cells < w8a8.pe_cells          # the multiplier shrinks
    budget = 200_000
    big = array_for_budget(base.replace(w_bits=8, a_bits=8), budget)
    small = array_for_budget(base.replace(w_bits=4, a_bits=4), budget)
    for cfg, m in ((big, w8a8), (small, w4a4)):
        assert m.cells(cfg.rows, cfg.cols) <= budget
        assert m.cells(cfg.rows + 1, cfg.cols + 1) > budget
    assert small.rows * small.cols > big.rows * big.cols
    lat8 = analyze_network(big, _digits_cnn_gemms()).cycles
    lat4 = analyze_network(small, _digits_cnn_gemms()).cycles
    assert lat4 < lat8


def test_sweep_area_budget_sets_each_points_array(tmp_path):
    from qaccel.sweep.spec import parse_spec

    doc = {"workload": {"network": "resnet18"}, "fixed": {"per_channel": True},
           "grid": {"w_bits": [4, 8], "a_bits": [4, 8]}, "area_budget_cells": 200_000}
    spec = parse_spec(doc, "iso.yaml", tmp_path)
    arrays = {(p.array.w_bits, p.array.a_bits): p.array for p in spec.points}
    assert len(arrays) == 4
    for cfg in arrays.values():
        want = array_for_budget(cfg.replace(rows=4, cols=4), 200_000)
        assert (cfg.rows, cfg.cols) == (want.rows, want.cols)
    assert arrays[4, 4].rows * arrays[4, 4].cols > arrays[8, 8].rows * arrays[8, 8].cols
    with pytest.raises(ValueError, match="grid.rows: not with area_budget_cells"):
        parse_spec({**doc, "grid": {"rows": [8, 16]}}, "iso.yaml", tmp_path)
    with pytest.raises(ValueError, match="area_budget_cells: must be a number > 0"):
        parse_spec({**doc, "area_budget_cells": "big"}, "iso.yaml", tmp_path)
    with pytest.raises(ValueError, match="too small"):
        parse_spec({**doc, "area_budget_cells": 1000}, "iso.yaml", tmp_path)
