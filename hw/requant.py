"""Two-stage requantizer: ``y = clamp(z_y + ((acc * M + R) >> S), lo, hi)`` per lane."""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_bool, check_int, fail

__all__ = ["Requantizer"]


class Requantizer(wiring.Component):
    """SPEC requantization of ``lanes`` accumulators, in two register stages.

    ``R = 1 << (S - 1)`` if ``S > 0`` else 0; ``>>`` is arithmetic (floor); ``lo = z_y`` when
    ``relu`` is set, else the output type's minimum; ``hi`` its maximum. Lanes ``>= i_lanes``
    are forced to 0. Scaling is per tensor (one ``M``, ``S``) or per channel (one per lane),
    chosen at build time.

    Timing: the inputs are latched into the stage-1 register at the end of the cycle they are
    presented (if ``en``); stage 1 computes ``prod = acc * M`` into the stage-2 register; stage 2
    computes ``y`` combinationally, so ``o_valid``/``o_y``/``o_last`` show a vector two enabled
    clock edges after it was presented. ``z_y`` and ``relu`` are per job and must stay constant
    while vectors are in flight.

    Parameters
    ----------
    lanes : int
        Vector width (array columns), in [2, 256].
    acc_bits : int
        Accumulator width, in [4, 60].
    mult_bits : int
        Unsigned multiplier width, in [1, 32]; ``acc_bits + mult_bits <= 62``.
    a_bits : int
        Output width, in [2, 16].
    a_signed : bool
        Output type is signed (else unsigned).
    per_channel : bool
        One ``(M, S)`` per lane (else one per tensor).

    Attributes
    ----------
    en : In(1)
        Global enable; when low both stages hold.
    i_valid : In(1)
        A vector is presented.
    i_acc : In(ArrayLayout(signed(acc_bits), lanes))
        Accumulators.
    i_m : In(unsigned(mult_bits)) or In(ArrayLayout(unsigned(mult_bits), lanes))
        Multiplier ``M`` (per tensor, or per lane).
    i_s : In(unsigned(6)) or In(ArrayLayout(unsigned(6), lanes))
        Shift ``S`` in [0, 63] (per tensor, or per lane).
    i_lanes : In(range(lanes + 1))
        Number of real lanes; higher lanes output 0.
    i_last : In(1)
        Tag travelling with the vector (the job's last output).
    z_y : In(signed(a_bits) or unsigned(a_bits))
        Output zero-point.
    relu : In(1)
        Fused ReLU: clamp below at ``z_y``.
    o_valid : Out(1)
        A requantized vector is on ``o_y``.
    o_y : Out(ArrayLayout(signed(a_bits) or unsigned(a_bits), lanes))
        Requantized outputs.
    o_last : Out(1)
        ``i_last`` of that vector.
    """

    def __init__(self, *, lanes: int, acc_bits: int, mult_bits: int, a_bits: int,
                 a_signed: bool, per_channel: bool):
        self.lanes = check_int(self, "lanes", lanes, 2, 256)
        self.acc_bits = check_int(self, "acc_bits", acc_bits, 4, 60)
        self.mult_bits = check_int(self, "mult_bits", mult_bits, 1, 32)
        if acc_bits + mult_bits > 62:
            raise fail(self, f"Requantizer.acc_bits + mult_bits must be <= 62, not "
                             f"{acc_bits} + {mult_bits} = {acc_bits + mult_bits}")
        self.a_bits = check_int(self, "a_bits", a_bits, 2, 16)
        self.a_signed = check_bool(self, "a_signed", a_signed)
        self.per_channel = check_bool(self, "per_channel", per_channel)
        self.y_shape = signed(a_bits) if a_signed else unsigned(a_bits)
        m_shape, s_shape = unsigned(mult_bits), unsigned(6)
        if per_channel:
            m_shape = data.ArrayLayout(m_shape, lanes)
            s_shape = data.ArrayLayout(s_shape, lanes)
        super().__init__({
            "en": In(1),
            "i_valid": In(1),
            "i_acc": In(data.ArrayLayout(signed(acc_bits), lanes)),
            "i_m": In(m_shape),
            "i_s": In(s_shape),
            "i_lanes": In(range(lanes + 1)),
            "i_last": In(1),
            "z_y": In(self.y_shape),
            "relu": In(1),
            "o_valid": Out(1),
            "o_y": Out(data.ArrayLayout(self.y_shape, lanes)),
            "o_last": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.lanes
        acc_lanes = data.ArrayLayout(signed(self.acc_bits), n)
        prod_lanes = data.ArrayLayout(signed(self.acc_bits + self.mult_bits), n)

        # stage 1 register: accumulators with their (M, S)
        s1_valid = Signal()
        s1_acc = Signal(acc_lanes)
        s1_m = Signal.like(self.i_m)
        s1_s = Signal.like(self.i_s)
        s1_lanes = Signal.like(self.i_lanes)
        s1_last = Signal()
        # stage 2 register: products
        s2_valid = Signal()
        s2_prod = Signal(prod_lanes)
        s2_s = Signal.like(self.i_s)
        s2_lanes = Signal.like(self.i_lanes)
        s2_last = Signal()

        def lane(value, c):
            return value[c] if self.per_channel else value

        with m.If(self.en):
            m.d.sync += [
                s1_valid.eq(self.i_valid), s1_acc.eq(self.i_acc), s1_m.eq(self.i_m),
                s1_s.eq(self.i_s), s1_lanes.eq(self.i_lanes), s1_last.eq(self.i_last),
                s2_valid.eq(s1_valid), s2_s.eq(s1_s), s2_lanes.eq(s1_lanes),
                s2_last.eq(s1_last),
            ]
            for c in range(n):
                m.d.sync += s2_prod[c].eq(s1_acc[c] * lane(s1_m, c))

        if self.a_signed:
            tmin, tmax = -(1 << (self.a_bits - 1)), (1 << (self.a_bits - 1)) - 1
        else:
            tmin, tmax = 0, (1 << self.a_bits) - 1
        lo = Signal(signed(self.a_bits + 1))
        m.d.comb += lo.eq(Mux(self.relu, self.z_y, tmin))
        hi = Const(tmax, signed(self.a_bits + 1))
        for c in range(n):
            s = lane(s2_s, c)
            rterm = (Const(1, 1) << s) >> 1                      # 1 << (S - 1), or 0 if S == 0
            val = Signal(signed(self.acc_bits + self.mult_bits + 3), name=f"val_{c}")
            m.d.comb += val.eq(((s2_prod[c] + rterm) >> s) + self.z_y)
            y = Mux(val < lo, lo, Mux(val > hi, hi, val))
            m.d.comb += self.o_y[c].eq(Mux(c < s2_lanes, y, 0))
        m.d.comb += [self.o_valid.eq(s2_valid), self.o_last.eq(s2_last)]
        return m
