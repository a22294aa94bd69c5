"""The SPEC's integer arithmetic against pure-Python big-int implementations."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qaccel.sim.arith import (
    bits_for_range,
    int_range,
    output_bounds,
    quantize_multiplier,
    requantize,
    rounding_term,
    wrap,
)


def py_wrap(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def py_requant(acc: int, m: int, s: int, z_y: int, lo: int, hi: int) -> int:
    r = (1 << (s - 1)) if s > 0 else 0
    return min(hi, max(lo, z_y + ((acc * m + r) >> s)))     # Python >> floors


# ---- wrap ----------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [2, 3, 8, 16, 31, 60])
def test_wrap_matches_big_int(bits):
    vals = [0, 1, -1, (1 << (bits - 1)) - 1, -(1 << (bits - 1)), 1 << (bits - 1),
            -(1 << (bits - 1)) - 1, (1 << bits) + 5, -(1 << bits) - 5, (1 << 62) - 1, -(1 << 62)]
    got = wrap(np.array(vals, dtype=np.int64), bits)
    assert got.dtype == np.int64
    assert got.tolist() == [py_wrap(v, bits) for v in vals]


@given(st.integers(-(1 << 62), (1 << 62) - 1), st.integers(2, 62))
@settings(max_examples=300, deadline=None)
def test_wrap_property(v, bits):
    w = int(wrap(v, bits))
    assert w == py_wrap(v, bits)
    assert -(1 << (bits - 1)) <= w < (1 << (bits - 1)) and (w - v) % (1 << bits) == 0


def test_int_range_and_bounds():
    assert int_range(8, True) == (-128, 127) and int_range(8, False) == (0, 255)
    assert output_bounds(8, False, 17, relu=True) == (17, 255)
    assert output_bounds(8, False, 17, relu=False) == (0, 255)
    assert output_bounds(4, True, 0, relu=True) == (0, 7)
    assert output_bounds(4, True, 0, relu=False) == (-8, 7)


def test_rounding_term():
    s = np.arange(64)
    got = rounding_term(s)
    assert got.tolist() == [0] + [1 << (k - 1) for k in range(1, 64)]


# ---- requantizer ------------------------------------------------------------------------

def test_requantize_exhaustive_small():
    accs = np.arange(-300, 301, dtype=np.int64)
    for m, s, (z_y, lo, hi) in itertools.product([0, 1, 3, 7, 255], [0, 1, 2, 5, 9, 63],
                                                 [(0, -128, 127), (10, 10, 255), (3, 0, 15)]):
        got = requantize(accs, m, s, z_y, lo, hi)
        want = [py_requant(int(a), m, s, z_y, lo, hi) for a in accs]
        assert got.tolist() == want, (m, s, z_y)


def test_requantize_rounds_half_up_toward_plus_infinity():
    # (acc + 2^(S-1)) >> S: exact halves go up, also for negative accumulators
    got = requantize(np.array([-3, -2, -1, 1, 2, 3, 5]), 1, 1, 0, -100, 100)
    assert got.tolist() == [-1, -1, 0, 1, 1, 2, 3]


@pytest.mark.parametrize(("acc_bits", "mult_bits"), [(30, 32), (46, 16), (60, 2), (16, 1)])
def test_requantize_extremes_fit_int64(acc_bits, mult_bits):
    amin, amax = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    mmax = (1 << mult_bits) - 1
    accs = [amin, amin + 1, -1, 0, 1, amax - 1, amax]
    for m, s in itertools.product([0, 1, mmax], [0, 1, 31, 62, 63]):
        for lo, hi, z in ((-(1 << 15), (1 << 15) - 1, 0), (0, 255, 128)):
            got = requantize(np.array(accs, dtype=np.int64), m, s, z, lo, hi).tolist()
            assert got == [py_requant(a, m, s, z, lo, hi) for a in accs], (m, s, lo, hi)


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_requantize_per_channel_property(data):
    mult_bits = data.draw(st.integers(1, 32))
    acc_bits = data.draw(st.integers(4, 62 - mult_bits))
    n = data.draw(st.integers(1, 6))
    accs = data.draw(st.lists(st.lists(st.integers(-(1 << (acc_bits - 1)),
                                                   (1 << (acc_bits - 1)) - 1),
                                       min_size=n, max_size=n), min_size=1, max_size=4))
    ms = data.draw(st.lists(st.integers(0, (1 << mult_bits) - 1), min_size=n, max_size=n))
    ss = data.draw(st.lists(st.integers(0, 63), min_size=n, max_size=n))
    a_bits, signed = data.draw(st.integers(2, 16)), data.draw(st.booleans())
    tlo, thi = int_range(a_bits, signed)
    z_y = data.draw(st.integers(tlo, thi))
    lo, hi = output_bounds(a_bits, signed, z_y, data.draw(st.booleans()))
    got = requantize(np.array(accs, dtype=np.int64), np.array(ms), np.array(ss), z_y, lo, hi)
    want = [[py_requant(a, m, s, z_y, lo, hi) for a, m, s in zip(row, ms, ss)] for row in accs]
    assert got.tolist() == want


# ---- quantize_multiplier --------------------------------------------------------------------

def check_multiplier(x: float, mult_bits: int, m: int, s: int) -> None:
    limit = (1 << mult_bits) - 1
    exact = Fraction(x) * (1 << s)
    assert 0 <= m <= limit and 0 <= s <= 63
    # M is x * 2^S rounded to nearest, ties to even
    assert abs(exact - m) <= Fraction(1, 2)
    if abs(exact - m) == Fraction(1, 2):
        assert m % 2 == 0
    # S is the largest: one more bit of shift would need M > limit
    if s < 63:
        nxt = Fraction(x) * (1 << (s + 1))
        assert round(nxt) > limit          # Python round: ties to even, on a Fraction
        # so x * 2^S >= (limit + 1/2) / 2, and the relative error is at most 1/2 over that
        assert abs(Fraction(m, 1 << s) - Fraction(x)) <= Fraction(x) * 2 / (2 * limit + 1)


@given(st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False),
       st.integers(1, 32))
@settings(max_examples=400, deadline=None)
def test_quantize_multiplier_property(x, mult_bits):
    if round(x) > (1 << mult_bits) - 1:
        with pytest.raises(ValueError, match=rf"needs a multiplier above 2\*\*{mult_bits} - 1"):
            quantize_multiplier(x, mult_bits)
        return
    m, s = quantize_multiplier(x, mult_bits)
    assert m.shape == s.shape == (1,) and m.dtype == s.dtype == np.int64
    if x == 0.0:
        assert (int(m[0]), int(s[0])) == (0, 0)
    else:
        check_multiplier(x, mult_bits, int(m[0]), int(s[0]))


def test_quantize_multiplier_known_values():
    m, s = quantize_multiplier([0.5, 0.75, 1.0, 0.1], 16)
    # 0.5 = 32768 / 2^16; 0.75 = 49152 / 2^16; 1.0 = 32768 / 2^15 (65536 does not fit)
    assert m[:3].tolist() == [32768, 49152, 32768] and s[:3].tolist() == [16, 16, 15]
    assert int(m[3]) == round(0.1 * 2 ** int(s[3])) and int(m[3]) < 1 << 16 <= 2 * int(m[3]) + 1


def test_quantize_multiplier_ties_to_even():
    # at S = 10: 12.5 -> 12 and 13.5 -> 14 (ties to even, not half up)
    m, s = quantize_multiplier([12.5 / 1024, 13.5 / 1024], 4)
    assert s.tolist() == [10, 10] and m.tolist() == [12, 14]
    # 15.5 would round to 16 > 15 at S = 10, so S drops to 9 (7.75 -> 8)
    m, s = quantize_multiplier(15.5 / 1024, 4)
    assert (int(m[0]), int(s[0])) == (8, 9)


def test_quantize_multiplier_tiny_and_per_channel():
    m, s = quantize_multiplier(np.array([1e-30, 1e-305, 5e-324, 0.0]), 16)
    assert s.tolist() == [63, 63, 63, 0]
    assert int(m[0]) == round(1e-30 * 2.0 ** 63) and m[1:].tolist() == [0, 0, 0]
    m, s = quantize_multiplier(np.array([[0.25, 0.5], [1.0, 2.0]]), 8)
    assert m.shape == (2, 2) and s.shape == (2, 2)
    for x, mm, ss in zip([0.25, 0.5, 1.0, 2.0], m.ravel(), s.ravel()):
        check_multiplier(x, 8, int(mm), int(ss))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_quantize_multiplier_rejects_bad_scales(bad):
    with pytest.raises(ValueError, match=r"real_scale must be finite and >= 0"):
        quantize_multiplier(bad, 16)


@pytest.mark.parametrize("bad", [0, -1, 63, 8.0, True])
def test_quantize_multiplier_rejects_bad_widths(bad):
    kind = "in" if type(bad) is int else "an integer in"
    with pytest.raises(ValueError, match=rf"quantize_multiplier\.mult_bits must be {kind} "
                                         rf"\[1, 62\], not {bad!r}"):
        quantize_multiplier(0.5, bad)


def test_quantize_multiplier_scale_too_large():
    quantize_multiplier(255.4, 8)                                   # rounds to 255: fits
    with pytest.raises(ValueError, match=r"real_scale 255\.5 needs a multiplier above 2\*\*8 - 1"):
        quantize_multiplier(255.5, 8)                               # ties to even: 256


@pytest.mark.parametrize(("lo", "hi", "bits"), [(0, 0, 1), (-1, 0, 1), (0, 1, 2), (-2, 1, 2),
                                                (-3, 0, 3), (0, 127, 8), (-128, 0, 8),
                                                (-129, 0, 9), (0, 128, 9)])
def test_bits_for_range(lo, hi, bits):
    assert bits_for_range(lo, hi) == bits
    # and it is the smallest: one bit fewer does not hold the range
    assert -(1 << (bits - 1)) <= lo and hi < (1 << (bits - 1))
    if bits > 1:
        assert lo < -(1 << (bits - 2)) or hi >= (1 << (bits - 2))
