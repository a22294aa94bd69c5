"""Per-column accumulator banks: preloaded with bias (or loaded starting sums) on the first K
pass, wrapping sums."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_int

__all__ = ["AccumulatorBank"]


class AccumulatorBank(wiring.Component):
    """``depth`` entries x ``cols`` lanes of ``acc_bits`` accumulators (one memory word per
    entry, all lanes side by side).

    For the vector on the inputs (valid during the *accumulate* cycle)::

        base = first ? (load ? start : bias) : acc[addr]
        sum  = wrap(base + psum)            # per lane, acc_bits two's complement
        if not last or keep: acc[addr] <= sum   # written at the end of the cycle
        if last: sum_valid = 1              # sum goes to the requantizer

    The bank is never cleared: the first K pass of a T-tile starts from ``bias`` (``first``
    is low in a K-split job that resumes the sums a previous job left; ``keep`` stores the
    final sums of one that does not emit), or from ``start`` in a job that ``load``s its
    starting sums (a partial-sum spill chain: the ``psum_in`` stream). The memory
    has a synchronous read port, so the address of the vector arriving in the *next* enabled
    cycle is given one cycle ahead on ``rd_addr``. A sum written in one cycle may be read back
    two or more cycles later (the pass schedule guarantees at least ``max(rows, cols)``).
    Nothing changes while ``en`` is low (the read data holds too).

    Parameters
    ----------
    cols : int
        Lanes, in [2, 256].
    acc_bits : int
        Accumulator width, in [4, 60].
    depth : int
        Entries, in [1, 65536].

    Attributes
    ----------
    en : In(1)
        Global enable.
    rd_addr : In(range(depth))
        Entry of the vector presented on the inputs in the next enabled cycle.
    valid : In(1)
        The inputs carry a real vector this cycle.
    first : In(1)
        First K pass: start from ``bias`` (or ``start``) instead of the stored entry.
    last : In(1)
        Last K pass: send ``sum`` to the requantizer (and store it only if ``keep``).
    keep : In(1)
        Store the final sums too (a job without ``emit``; constant during a job).
    load : In(1)
        The first K pass starts from ``start`` instead of ``bias`` (constant during a job).
    addr : In(range(depth))
        Entry of the vector on the inputs (the previous cycle's ``rd_addr``).
    psum : In(ArrayLayout(signed(acc_bits), cols))
        Column sums from the array.
    bias : In(ArrayLayout(signed(acc_bits), cols))
        Bias of the current n-group.
    start : In(ArrayLayout(signed(acc_bits), cols))
        Starting sums of the vector on the inputs (used when ``first & load``).
    sum : Out(ArrayLayout(signed(acc_bits), cols))
        ``wrap(base + psum)`` (combinational).
    sum_valid : Out(1)
        ``valid & last``: ``sum`` is final this cycle.
    """

    def __init__(self, *, cols: int, acc_bits: int, depth: int):
        self.cols = check_int(self, "cols", cols, 2, 256)
        self.acc_bits = check_int(self, "acc_bits", acc_bits, 4, 60)
        self.depth = check_int(self, "depth", depth, 1, 65536)
        lanes = data.ArrayLayout(signed(acc_bits), cols)
        self.lanes = lanes
        super().__init__({
            "en": In(1),
            "rd_addr": In(range(depth)),
            "valid": In(1),
            "first": In(1),
            "last": In(1),
            "keep": In(1),
            "load": In(1),
            "addr": In(range(depth)),
            "psum": In(lanes),
            "bias": In(lanes),
            "start": In(lanes),
            "sum": Out(lanes),
            "sum_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=self.lanes, depth=self.depth, init=[])
        rd = mem.read_port()
        wr = mem.write_port()
        m.d.comb += [
            rd.addr.eq(self.rd_addr),
            rd.en.eq(self.en),
            wr.addr.eq(self.addr),
            wr.data.eq(self.sum),
            wr.en.eq(self.en & self.valid & (~self.last | self.keep)),
            self.sum_valid.eq(self.valid & self.last),
        ]
        for c in range(self.cols):
            base = Mux(self.first, Mux(self.load, self.start[c], self.bias[c]), rd.data[c])
            m.d.comb += self.sum[c].eq(base + self.psum[c])
        return m
