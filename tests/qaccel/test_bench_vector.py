"""The vector bench's measuring function and table (cheap: the whole measurement is < 2 s)."""

from __future__ import annotations

import numpy as np
import pytest

from qaccel.benches.vector import OPS, measure, table, ulp_errors


def test_ulp_errors_of_exact_rounding_and_of_an_off_by_one_kernel():
    y = np.linspace(-3.0, 3.0, 1001)
    scale = 0.05
    exact = np.rint(y / scale)
    mx, mean, ideal = ulp_errors(exact, y, scale, -128, 127)
    assert mx <= 0.5 + 1e-9 and ideal == pytest.approx(mx) and 0.2 < mean < 0.3
    mx1, mean1, ideal1 = ulp_errors(exact + 1, y, scale, -128, 127)
    assert 1.4 < mx1 <= 1.5 + 1e-9 and mean1 > 0.7 and ideal1 == ideal
    # saturation is not counted: the reference is clamped to the output range
    assert ulp_errors(np.full(3, 127), np.array([10.0, 20.0, 30.0]), 0.05, -128, 127)[0] == 0
    with pytest.raises(ValueError, match="same non-empty shape"):
        ulp_errors(exact[:3], y, scale, -128, 127)


def test_measure_has_every_op_and_bounds_the_exact_ones():
    rows = measure(n_rows=16, seed=1)
    assert {r.op for r in rows} == set(OPS)
    assert all(r.ideal_max <= 0.5 + 1e-6 and r.n > 0 for r in rows)
    for r in rows:
        assert r.mean_ulp <= r.max_ulp
        if r.op.startswith("lut:") or r.op == "i_mean":   # float-then-round by construction
            assert r.max_ulp <= 0.5 + 1e-4, r
        if r.op == "i_sqrt":                               # floor: below 1 LSB
            assert r.max_ulp <= 1.0, r
    lines = table(rows)
    assert len(lines) == 2 + len(rows) and all(line.count("|") == 7 for line in lines)
    with pytest.raises(ValueError, match="n_rows"):
        measure(n_rows=0)
