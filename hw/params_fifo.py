"""Small first-word-fall-through register FIFO for the per-n-group parameters."""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Shape, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_int

__all__ = ["ParamsFifo"]


class ParamsFifo(wiring.Component):
    """``depth`` registers holding the bias (and per-channel ``M, S``) of n-groups in flight.

    The head entry is always visible on ``r_data`` (first word falls through). ``w_en`` pushes
    ``w_data``; ``r_en`` pops the head; both in the same cycle is allowed, also when full. The
    accelerator never overflows it: the pass schedule bounds the n-groups in flight by
    ``ceil((rows + cols + 1) / max(rows, cols)) + 1`` (see ``hw/README.md``); ``overflow``
    is a sticky flag for simulation checks. Nothing changes while ``en`` is low.

    Parameters
    ----------
    shape : ShapeLike
        Shape (or layout) of one entry.
    depth : int
        Entries, in [1, 64].

    Attributes
    ----------
    en : In(1)
        Global enable.
    w_en : In(1)
        Push ``w_data``.
    w_data : In(shape)
        Entry to push.
    r_en : In(1)
        Pop the head.
    r_data : Out(shape)
        Head entry (don't-care when empty).
    level : Out(range(depth + 1))
        Entries held.
    overflow : Out(1)
        Sticky: a push found the FIFO full without a simultaneous pop.
    """

    def __init__(self, shape, *, depth: int):
        Shape.cast(shape)
        self.shape = shape
        self.depth = check_int(self, "depth", depth, 1, 64)
        super().__init__({
            "en": In(1),
            "w_en": In(1),
            "w_data": In(shape),
            "r_en": In(1),
            "r_data": Out(shape),
            "level": Out(range(depth + 1)),
            "overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.depth
        storage = Array(Signal(self.shape, name=f"entry_{i}") for i in range(d))
        head = Signal(range(d))
        tail = Signal(range(d))
        m.d.comb += self.r_data.eq(storage[head])

        def bump(ptr):
            return (ptr + 1) if d & (d - 1) == 0 else Mux(ptr == d - 1, 0, ptr + 1)

        push = self.en & self.w_en
        pop = self.en & self.r_en
        with m.If(push):
            m.d.sync += [storage[tail].eq(self.w_data), tail.eq(bump(tail))]
            with m.If((self.level == d) & ~pop):
                m.d.sync += self.overflow.eq(1)
        with m.If(pop):
            m.d.sync += head.eq(bump(head))
        with m.If(push & ~pop):
            m.d.sync += self.level.eq(self.level + 1)
        with m.Elif(pop & ~push):
            m.d.sync += self.level.eq(self.level - 1)
        return m

