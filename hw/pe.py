"""One processing element of the weight-stationary array, with double-buffered weights."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_bool, check_int

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """Multiply-accumulate cell ``psum <= wrap(psum_in + a * w_eff)``.

    Registers: ``a``, ``swap``, ``psum`` (``acc_bits``, wraps), ``w_active`` and ``w_shadow``
    (``w_bits``). During a cycle the PE holds one activation in ``a``;
    ``w_eff = swap ? w_shadow : w_active``, and when ``swap`` is set ``w_active <= w_shadow``
    (the first activation of a pass switches to the weights loaded in the background).
    ``a`` and ``swap`` move on to the right neighbour (``a_out``, ``swap_out``), the partial
    sum to the PE below (``psum_out``). Every register only changes while ``en`` is high.

    Parameters
    ----------
    w_bits : int
        Signed weight width, in [2, 16].
    a_bits : int
        Activation width, in [2, 16].
    a_signed : bool
        Activations are signed (else unsigned).
    acc_bits : int
        Partial-sum width, in [w_bits + a_bits, 60]; the sum wraps (two's complement).

    Attributes
    ----------
    en : In(1)
        Global enable; when low every register holds.
    a_in : In(signed(a_bits) or unsigned(a_bits))
        Activation from the left neighbour (or the input skew).
    swap_in : In(1)
        Swap tag travelling with ``a_in``.
    psum_in : In(signed(acc_bits))
        Partial sum from the PE above (0 in row 0).
    w_in : In(signed(w_bits))
        Weight to latch into ``w_shadow``.
    w_load : In(1)
        Latch ``w_in`` into ``w_shadow`` at the end of this cycle (if ``en``).
    a_out : Out(signed(a_bits) or unsigned(a_bits))
        The ``a`` register.
    swap_out : Out(1)
        The ``swap`` register.
    psum_out : Out(signed(acc_bits))
        The ``psum`` register.
    """

    def __init__(self, *, w_bits: int, a_bits: int, a_signed: bool, acc_bits: int):
        self.w_bits = check_int(self, "w_bits", w_bits, 2, 16)
        self.a_bits = check_int(self, "a_bits", a_bits, 2, 16)
        self.a_signed = check_bool(self, "a_signed", a_signed)
        self.acc_bits = check_int(self, "acc_bits", acc_bits, w_bits + a_bits, 60)
        a_shape = signed(a_bits) if a_signed else unsigned(a_bits)
        super().__init__({
            "en": In(1),
            "a_in": In(a_shape),
            "swap_in": In(1),
            "psum_in": In(signed(acc_bits)),
            "w_in": In(signed(w_bits)),
            "w_load": In(1),
            "a_out": Out(a_shape),
            "swap_out": Out(1),
            "psum_out": Out(signed(acc_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        w_active = Signal(signed(self.w_bits))
        w_shadow = Signal(signed(self.w_bits))
        w_eff = Signal(signed(self.w_bits))
        m.d.comb += w_eff.eq(Mux(self.swap_out, w_shadow, w_active))
        with m.If(self.en):
            m.d.sync += [
                self.a_out.eq(self.a_in),
                self.swap_out.eq(self.swap_in),
                # exact product, then two's-complement wrap to acc_bits on assignment
                self.psum_out.eq(self.psum_in + self.a_out * w_eff),
            ]
            with m.If(self.swap_out):
                m.d.sync += w_active.eq(w_shadow)
            with m.If(self.w_load):
                m.d.sync += w_shadow.eq(self.w_in)
        return m
