"""Hypothesis strategies shared by the cycle-model tests (``test_cycle``, ``test_psum_spill``);
imported as a sibling module, like ``tests/rtl/rtl_configs.py``."""

from __future__ import annotations

from hypothesis import strategies as st
from qaccel.sim.config import ArrayConfig


@st.composite
def configs(draw, max_dim: int = 9, max_acc_depth: int = 12) -> ArrayConfig:
    """Random valid ``ArrayConfig``: 2..16-bit weights and activations, a multiplier and an
    accumulator that fit the 62-bit product limit (narrow accumulators, which wrap, as often
    as wide ones), ``rows, cols`` in ``2..max_dim``, ``acc_depth`` in ``1..max_acc_depth``,
    either signedness of activations, per-tensor or per-channel requantization.

    Parameters
    ----------
    draw : callable
        Supplied by ``hypothesis.strategies.composite``.
    max_dim : int
        Largest ``rows`` and ``cols`` (small arrays keep one example's simulation short).
    max_acc_depth : int
        Largest ``acc_depth``.

    Returns
    -------
    ArrayConfig
        The drawn configuration.
    """
    w_bits = draw(st.integers(2, 16))
    a_bits = draw(st.integers(2, 16))
    mult_bits = draw(st.integers(1, min(32, 62 - w_bits - a_bits)))
    floor, ceil = w_bits + a_bits, min(60, 62 - mult_bits)
    # narrow accumulators (which wrap) as often as wide ones
    acc_bits = draw(st.one_of(st.integers(floor, min(ceil, floor + 4)),
                              st.integers(floor, ceil)))
    return ArrayConfig(rows=draw(st.integers(2, max_dim)), cols=draw(st.integers(2, max_dim)),
                       w_bits=w_bits, a_bits=a_bits, a_signed=draw(st.booleans()),
                       acc_bits=acc_bits, mult_bits=mult_bits,
                       per_channel=draw(st.booleans()),
                       acc_depth=draw(st.integers(1, max_acc_depth)))
