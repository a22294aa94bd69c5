"""The pass sequencer: walks a job's passes in ``(nt, tt, kt)`` order and forms tokens."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_int

__all__ = ["Sequencer", "token_layout"]


def token_layout(rows: int, cols: int, depth: int) -> data.StructLayout:
    """Tags that travel with each activation vector (and down the tag delay line).

    ``valid`` (a real activation beat), ``swap`` (first beat of a pass), ``first_k`` /
    ``last_k`` (first / last K pass of the T-tile), ``group_end`` (last vector of the n-group:
    pop the parameter FIFO), ``job_last`` (last vector of the job), ``t_idx`` (accumulator
    entry: ``t`` within the T-tile, or ``nt * T + t`` in a chained job), ``n_rem`` (real
    output lanes of the n-tile).
    """
    return data.StructLayout({
        "valid": 1, "swap": 1, "first_k": 1, "last_k": 1, "group_end": 1, "job_last": 1,
        "t_idx": range(depth), "n_rem": range(cols + 1),
    })


class Sequencer(wiring.Component):
    """Pass sequencer of one GEMM job (see ``sim/schedule.py``).

    ``start`` (the ``cmd`` handshake, cycle 0) loads ``T, K, N``; the first pass starts in the
    next cycle. Passes run ``for nt: for tt: for kt`` with period ``max(L, rows, cols)``,
    ``L = min(depth, T - tt * depth)``. In cycle ``t`` of a pass the sequencer needs activation
    beat ``t`` (``t < L``), weight row ``t`` (``t < rows``) and, in cycle 0 of the first pass of
    an n-group, the ``params`` beat; it presents the token of the cycle on ``token`` (``valid``
    only for ``t < L``) and the activation lane mask ``act_mask`` (lanes ``r < K - kt*rows``).
    Counters advance only while ``en``; ``running`` drops after the last pass's last cycle.
    A ``chain`` job (K-split: it keeps or resumes its sums in the bank, ``NT * T <= depth``)
    addresses entry ``nt * T + t`` (a base register advanced by ``T`` per n-group) instead
    of ``t``.

    Parameters
    ----------
    rows : int
        PE rows, in [2, 256].
    cols : int
        PE columns, in [2, 256].
    depth : int
        Accumulator depth (longest T-tile), in [1, 65536].
    dim_bits : int
        Width of ``T, K, N``, in [4, 24].

    Attributes
    ----------
    en : In(1)
        Global enable.
    start : In(1)
        Start a job with ``T, K, N`` (ignored while ``running``; all three must be > 0).
    T, K, N : In(unsigned(dim_bits))
        Job dimensions, sampled on ``start``.
    chain : In(1)
        The job is chained (``accumulate`` or not ``emit``), sampled on ``start``.
    running : Out(1)
        Passes are being issued.
    need_act, need_weight, need_params : Out(1)
        This cycle consumes a beat of that stream (if ``en``).
    w_load : Out(rows)
        One-hot PE row that latches the weight beat into its shadow registers.
    act_mask : Out(rows)
        Activation lanes inside K (the others must be fed as 0).
    token : Out(token_layout(rows, cols, depth))
        Tags of this cycle's activation vector.
    """

    def __init__(self, *, rows: int, cols: int, depth: int, dim_bits: int):
        self.rows = check_int(self, "rows", rows, 2, 256)
        self.cols = check_int(self, "cols", cols, 2, 256)
        self.depth = check_int(self, "depth", depth, 1, 65536)
        self.dim_bits = check_int(self, "dim_bits", dim_bits, 4, 24)
        super().__init__({
            "en": In(1),
            "start": In(1),
            "T": In(dim_bits),
            "K": In(dim_bits),
            "N": In(dim_bits),
            "chain": In(1),
            "running": Out(1),
            "need_act": Out(1),
            "need_weight": Out(1),
            "need_params": Out(1),
            "w_load": Out(rows),
            "act_mask": Out(rows),
            "token": Out(token_layout(rows, cols, depth)),
        })

    def elaborate(self, platform):
        m = Module()
        R, C, D = self.rows, self.cols, self.depth
        span = max(R, C)
        T = Signal(self.dim_bits)
        K = Signal(self.dim_bits)
        t_left = Signal(self.dim_bits)     # T - tt*D
        k_left = Signal(self.dim_bits)     # K - kt*R
        n_left = Signal(self.dim_bits)     # N - nt*C
        t = Signal(range(max(D, span)))    # cycle within the pass
        chain = Signal()
        nbase = Signal(range(D))           # first bank entry of the n-group (chained jobs)

        L = Signal(range(D + 1))
        period = Signal(range(max(D, span) + 1))
        first_k = Signal()
        last_k = Signal()
        first_tt = Signal()
        last_tt = Signal()
        last_n = Signal()
        end_of_pass = Signal()
        m.d.comb += [
            L.eq(Mux(t_left > D, D, t_left)),
            period.eq(Mux(L > span, L, span)),
            first_k.eq(k_left == K),
            last_k.eq(k_left <= R),
            first_tt.eq(t_left == T),
            last_tt.eq(t_left <= D),
            last_n.eq(n_left <= C),
            end_of_pass.eq(t == period - 1),
        ]

        valid = self.running & (t < L)
        tok = self.token
        m.d.comb += [
            self.need_act.eq(valid),
            self.need_weight.eq(self.running & (t < R)),
            self.need_params.eq(self.running & (t == 0) & first_k & first_tt),
            tok.valid.eq(valid),
            tok.swap.eq(valid & (t == 0)),
            tok.first_k.eq(first_k),
            tok.last_k.eq(last_k),
            tok.group_end.eq(valid & last_k & last_tt & (t == L - 1)),
            tok.job_last.eq(valid & last_k & last_tt & last_n & (t == L - 1)),
            tok.t_idx.eq(nbase + t),
            tok.n_rem.eq(Mux(n_left > C, C, n_left)),
        ]
        for r in range(R):
            m.d.comb += [
                self.w_load[r].eq(self.running & (t == r)),
                self.act_mask[r].eq(k_left > r),
            ]

        with m.If(self.running):
            with m.If(self.en):
                with m.If(~end_of_pass):
                    m.d.sync += t.eq(t + 1)
                with m.Else():
                    m.d.sync += t.eq(0)
                    with m.If(~last_k):
                        m.d.sync += k_left.eq(k_left - R)
                    with m.Else():
                        m.d.sync += k_left.eq(K)
                        with m.If(~last_tt):
                            m.d.sync += t_left.eq(t_left - D)
                        with m.Else():
                            m.d.sync += t_left.eq(T)
                            with m.If(~last_n):
                                m.d.sync += n_left.eq(n_left - C)
                                with m.If(chain):
                                    m.d.sync += nbase.eq(nbase + T)
                            with m.Else():
                                m.d.sync += self.running.eq(0)
        with m.Elif(self.start):
            m.d.sync += [
                self.running.eq(1), t.eq(0), T.eq(self.T), K.eq(self.K),
                t_left.eq(self.T), k_left.eq(self.K), n_left.eq(self.N),
                chain.eq(self.chain), nbase.eq(0),
            ]
        return m
