"""The ``rows x cols`` weight-stationary systolic array with input skew and output de-skew."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_bool, check_int
from .pe import ProcessingElement

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """``rows x cols`` grid of :class:`~hw.pe.ProcessingElement` with skew and de-skew.

    Rows hold the reduction dimension, columns the output channels. An activation vector
    presented on ``a_in`` in cycle ``τ`` enters skewed: lane ``r`` passes ``r`` skew registers
    and is held in PE ``(r, 0)`` during cycle ``τ + r + 1``; PE ``(r, c)`` holds it during
    ``τ + r + c + 1``. Partial sums flow down; column ``c``'s bottom sum is delayed by
    ``cols - 1 - c`` de-skew registers, so the column sums of the vector are all on
    ``psum_out`` during cycle ``τ + rows + cols``. Every register only changes while ``en``.

    Weights: when ``w_load[r]`` is set, row ``r``'s shadow weights latch ``w_in`` (one lane per
    column) at the end of the cycle. The ``swap`` tag of a vector makes each PE switch to its
    shadow weights as that vector passes.

    Parameters
    ----------
    rows : int
        PE rows, in [2, 256].
    cols : int
        PE columns, in [2, 256].
    w_bits, a_bits, a_signed, acc_bits
        As for :class:`~hw.pe.ProcessingElement`.

    Attributes
    ----------
    en : In(1)
        Global enable.
    a_in : In(ArrayLayout(a_shape, rows))
        Activation vector (lanes already masked by the sequencer).
    swap_in : In(1)
        Swap tag of the vector on ``a_in``.
    w_in : In(ArrayLayout(signed(w_bits), cols))
        One row of weights.
    w_load : In(rows)
        One-hot: which PE row latches ``w_in`` into its shadow weights.
    psum_out : Out(ArrayLayout(signed(acc_bits), cols))
        Aligned column sums, ``rows + cols`` cycles after the vector entered.
    """

    def __init__(self, *, rows: int, cols: int, w_bits: int, a_bits: int, a_signed: bool,
                 acc_bits: int):
        self.rows = check_int(self, "rows", rows, 2, 256)
        self.cols = check_int(self, "cols", cols, 2, 256)
        self.w_bits = check_int(self, "w_bits", w_bits, 2, 16)
        self.a_bits = check_int(self, "a_bits", a_bits, 2, 16)
        self.a_signed = check_bool(self, "a_signed", a_signed)
        self.acc_bits = check_int(self, "acc_bits", acc_bits, w_bits + a_bits, 60)
        self.a_shape = signed(a_bits) if a_signed else unsigned(a_bits)
        super().__init__({
            "en": In(1),
            "a_in": In(data.ArrayLayout(self.a_shape, rows)),
            "swap_in": In(1),
            "w_in": In(data.ArrayLayout(signed(w_bits), cols)),
            "w_load": In(rows),
            "psum_out": Out(data.ArrayLayout(signed(acc_bits), cols)),
        })

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        pes = [[ProcessingElement(w_bits=self.w_bits, a_bits=self.a_bits,
                                  a_signed=self.a_signed, acc_bits=self.acc_bits)
                for c in range(C)] for r in range(R)]
        for r in range(R):
            for c in range(C):
                m.submodules[f"pe_{r}_{c}"] = pe = pes[r][c]
                m.d.comb += [
                    pe.en.eq(self.en),
                    pe.w_in.eq(self.w_in[c]),
                    pe.w_load.eq(self.w_load[r]),
                    pe.psum_in.eq(pes[r - 1][c].psum_out if r > 0 else 0),
                ]
                if c > 0:
                    m.d.comb += [pe.a_in.eq(pes[r][c - 1].a_out),
                                 pe.swap_in.eq(pes[r][c - 1].swap_out)]

        # input skew: lane r passes r registers before PE (r, 0)
        for r in range(R):
            a, swap = self.a_in[r], self.swap_in
            for i in range(r):
                a_q = Signal(self.a_shape, name=f"skew_a_{r}_{i}")
                swap_q = Signal(name=f"skew_swap_{r}_{i}")
                with m.If(self.en):
                    m.d.sync += [a_q.eq(a), swap_q.eq(swap)]
                a, swap = a_q, swap_q
            m.d.comb += [pes[r][0].a_in.eq(a), pes[r][0].swap_in.eq(swap)]

        # output de-skew: column c is delayed cols - 1 - c more registers
        for c in range(C):
            p = pes[R - 1][c].psum_out
            for i in range(C - 1 - c):
                p_q = Signal(signed(self.acc_bits), name=f"deskew_{c}_{i}")
                with m.If(self.en):
                    m.d.sync += p_q.eq(p)
                p = p_q
            m.d.comb += self.psum_out[c].eq(p)
        return m
