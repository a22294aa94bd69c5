"""Top level: the whole quantized-GEMM accelerator with stream interfaces."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from qaccel.sim.config import ArrayConfig
from qaccel.sim.schedule import params_fifo_depth

from ._checks import fail
from .accumulator import AccumulatorBank
from .array import SystolicArray
from .controller import Sequencer, token_layout
from .layouts import (
    act_layout,
    act_shape,
    cmd_layout,
    out_layout,
    params_layout,
    psum_layout,
    weight_layout,
)
from .params_fifo import ParamsFifo
from .requant import Requantizer

__all__ = ["Accelerator"]


class Accelerator(wiring.Component):
    """Weight-stationary systolic accelerator executing one quantized GEMM job at a time:
    ``Y[T x N] = requant(X[T x K] @ W[K x N] + bias)``, tiled over K, N and T.

    The beat order of every stream is fixed in :mod:`sim.streams` and the timing in
    :mod:`sim.schedule`; ``hw/README.md`` documents the pipeline register by register. One
    global enable freezes the whole machine in any cycle where a needed input beat is not
    valid or the ``out`` register holds a beat that is not accepted. An input's ``ready`` is
    ``needed & everything-else-OK`` (it may depend on the other streams' ``valid``);
    ``out.valid`` is a register and never depends on ``out.ready``. ``cmd`` is accepted only
    when idle (``busy`` low); a ``cmd`` with ``T``, ``K`` or ``N`` equal to 0 is consumed and
    ignored (no output). K-split chains: ``accumulate`` starts the sums from the bank
    instead of ``bias``; without ``emit`` the final sums stay in the bank, no ``out`` beat is
    sent and ``busy`` falls in the cycle the last one would have been sent. Partial-sum
    spill: ``load`` starts each output's first K pass from its ``psum_in`` beat instead of
    ``bias`` (the beat is taken in that vector's accumulate cycle; the machine freezes while
    it is not valid); ``raw`` sends the final sums unrequantized on ``psum_out`` instead of
    ``out``, in the cycle the ``out`` beat would take (lanes past N are 0). With every stream
    always valid/ready neither flag changes the timing. ``load`` with ``accumulate`` is not a
    valid command (the cycle model refuses it); the RTL would take the ``psum_in`` beats and
    still resume from the bank.

    Parameters
    ----------
    cfg : ArrayConfig
        Every hardware parameter (rows, cols, widths, per-channel scaling, accumulator depth,
        ``dim_bits``).

    Attributes
    ----------
    cmd : In(stream.Signature(cmd_layout(cfg)))
        One beat per job: ``T, K, N, z_y, relu, accumulate, emit, load, raw`` (+ ``m, s`` in
        per-tensor builds).
    weight : In(stream.Signature(ArrayLayout(signed(w_bits), cols)))
        One PE row of weights per beat.
    act : In(stream.Signature(ArrayLayout(a_shape, rows)))
        One activation vector per beat.
    params : In(stream.Signature(params_layout(cfg)))
        One beat per n-tile: ``bias[cols]`` (+ ``m[cols], s[cols]`` per-channel).
    psum_in : In(stream.Signature(ArrayLayout(signed(acc_bits), cols)))
        A ``load`` job's starting sums, one vector per output vector in ``out`` order (taken
        in the accumulate cycle of the vector's first K pass); lanes past N are don't-care.
        No beats unless ``load``.
    out : Out(stream.Signature(ArrayLayout(a_shape, cols)))
        One requantized output vector per beat (no beats in a ``raw`` job).
    psum_out : Out(stream.Signature(ArrayLayout(signed(acc_bits), cols)))
        A ``raw`` job's final sums ``wrap(base + x @ w)``, one vector per beat in ``out``
        order, lanes past N 0; sent instead of ``out``.
    busy : Out(1)
        A job is in progress (from the ``cmd`` handshake to its last ``out`` (``psum_out``)
        handshake, or the cycle that beat would have taken without ``emit``).
    """

    def __init__(self, cfg: ArrayConfig):
        if not isinstance(cfg, ArrayConfig):
            raise fail(self, f"Accelerator.cfg must be an ArrayConfig, not {cfg!r}")
        self.cfg = cfg
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout(cfg))),
            "weight": In(stream.Signature(weight_layout(cfg))),
            "act": In(stream.Signature(act_layout(cfg))),
            "params": In(stream.Signature(params_layout(cfg))),
            "psum_in": In(stream.Signature(psum_layout(cfg))),
            "out": Out(stream.Signature(out_layout(cfg))),
            "psum_out": Out(stream.Signature(psum_layout(cfg))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, C, D = cfg.rows, cfg.cols, cfg.acc_depth

        m.submodules.sequencer = seq = Sequencer(rows=R, cols=C, depth=D,
                                                 dim_bits=cfg.dim_bits)
        m.submodules.array = arr = SystolicArray(rows=R, cols=C, w_bits=cfg.w_bits,
                                                 a_bits=cfg.a_bits, a_signed=cfg.a_signed,
                                                 acc_bits=cfg.acc_bits)
        m.submodules.accumulator = acc = AccumulatorBank(cols=C, acc_bits=cfg.acc_bits, depth=D)
        m.submodules.params_fifo = fifo = ParamsFifo(params_layout(cfg),
                                                     depth=params_fifo_depth(cfg))
        m.submodules.requantizer = rq = Requantizer(
            lanes=C, acc_bits=cfg.acc_bits, mult_bits=cfg.mult_bits, a_bits=cfg.a_bits,
            a_signed=cfg.a_signed, per_channel=cfg.per_channel)

        # ---- job registers (from cmd) ---------------------------------------------------
        z_y = Signal(act_shape(cfg))
        relu = Signal()
        acc_in = Signal()                  # accumulate: start from the bank, not bias
        emit = Signal()                    # send outputs (else keep the sums in the bank)
        load = Signal()                    # first K pass starts from psum_in, not bias
        raw = Signal()                     # send the final sums on psum_out, not requantized
        job_m = Signal(unsigned(cfg.mult_bits))
        job_s = Signal(unsigned(6))
        cmd = self.cmd.payload
        m.d.comb += self.cmd.ready.eq(~self.busy)
        cmd_fire = self.cmd.valid & self.cmd.ready
        dims_ok = (cmd.T != 0) & (cmd.K != 0) & (cmd.N != 0)
        with m.If(cmd_fire & dims_ok):
            m.d.sync += [self.busy.eq(1), z_y.eq(cmd.z_y), relu.eq(cmd.relu),
                         acc_in.eq(cmd.accumulate), emit.eq(cmd.emit), load.eq(cmd.load),
                         raw.eq(cmd.raw)]
            if not cfg.per_channel:
                m.d.sync += [job_m.eq(cmd.m), job_s.eq(cmd.s)]
        m.d.comb += [
            seq.start.eq(cmd_fire & dims_ok),
            seq.T.eq(cmd.T), seq.K.eq(cmd.K), seq.N.eq(cmd.N),
            seq.chain.eq(cmd.accumulate | ~cmd.emit),
        ]

        # ---- tag delay line: token of cycle τ is at tags[i] during τ + 1 + i ---------------
        tok = seq.token
        en = Signal()
        tags = [Signal(token_layout(R, C, D), name=f"tag_{i}") for i in range(R + C)]
        with m.If(en):
            m.d.sync += tags[0].eq(tok)
            for i in range(1, R + C):
                m.d.sync += tags[i].eq(tags[i - 1])
        here = tags[R + C - 1]           # arrives with the aligned column sums (cycle α)
        need_psum = Signal()             # the vector in the accumulate stage takes a psum_in beat
        m.d.comb += need_psum.eq(load & here.valid & here.first_k)

        # ---- global enable --------------------------------------------------------------
        out_ok = ((~self.out.valid | self.out.ready)
                  & (~self.psum_out.valid | self.psum_out.ready))
        m.d.comb += [
            en.eq(out_ok
                  & (~seq.need_act | self.act.valid)
                  & (~seq.need_weight | self.weight.valid)
                  & (~seq.need_params | self.params.valid)
                  & (~need_psum | self.psum_in.valid)),
            self.act.ready.eq(seq.need_act & en),
            self.weight.ready.eq(seq.need_weight & en),
            self.params.ready.eq(seq.need_params & en),
            self.psum_in.ready.eq(need_psum & en),
            seq.en.eq(en), arr.en.eq(en), acc.en.eq(en), fifo.en.eq(en), rq.en.eq(en),
        ]

        # ---- sequencer -> array (masked, skewed inside) -------------------------------------
        for r in range(R):
            m.d.comb += arr.a_in[r].eq(Mux(tok.valid & seq.act_mask[r], self.act.payload[r], 0))
        m.d.comb += [
            arr.swap_in.eq(tok.swap),
            arr.w_in.eq(self.weight.payload),
            arr.w_load.eq(seq.w_load),
            fifo.w_en.eq(seq.need_params),
            fifo.w_data.eq(self.params.payload),
        ]

        # ---- accumulate (α) ---------------------------------------------------------------
        m.d.comb += [
            acc.rd_addr.eq(tags[R + C - 2].t_idx),
            acc.valid.eq(here.valid), acc.first.eq(here.first_k & ~acc_in),
            acc.last.eq(here.last_k), acc.keep.eq(~emit),
            acc.addr.eq(here.t_idx),
            acc.psum.eq(arr.psum_out),
            acc.bias.eq(fifo.r_data.bias),
            acc.load.eq(load), acc.start.eq(self.psum_in.payload),
            fifo.r_en.eq(here.valid & here.group_end),
        ]

        # ---- requantizer (α+1, α+2) ---------------------------------------------------------
        m.d.comb += [
            rq.i_valid.eq(acc.sum_valid), rq.i_acc.eq(acc.sum),
            rq.i_lanes.eq(here.n_rem), rq.i_last.eq(here.job_last),
            rq.z_y.eq(z_y), rq.relu.eq(relu),
        ]
        if cfg.per_channel:
            m.d.comb += [rq.i_m.eq(fifo.r_data.m), rq.i_s.eq(fifo.r_data.s)]
        else:
            m.d.comb += [rq.i_m.eq(job_m), rq.i_s.eq(job_s)]

        # ---- raw sums (α+1, α+2): two delay registers alongside the requantizer stages ----
        raw_1 = Signal(psum_layout(cfg))
        raw_2 = Signal(psum_layout(cfg))
        with m.If(en & raw):
            for c in range(C):
                m.d.sync += raw_1[c].eq(Mux(c < here.n_rem, acc.sum[c], 0))
            m.d.sync += raw_2.eq(raw_1)

        # ---- output registers (α+3): out, or psum_out in a raw job -------------------------
        out_last = Signal()
        ghost_last = Signal()            # without emit: where the last beat would be
        out_fire = self.out.valid & self.out.ready
        psum_fire = self.psum_out.valid & self.psum_out.ready
        with m.If(en):
            m.d.sync += [self.out.valid.eq(rq.o_valid & emit & ~raw),
                         self.out.payload.eq(rq.o_y),
                         self.psum_out.valid.eq(rq.o_valid & emit & raw),
                         self.psum_out.payload.eq(raw_2),
                         out_last.eq(rq.o_last),
                         ghost_last.eq(rq.o_valid & rq.o_last & ~emit)]
        with m.Else():
            m.d.sync += ghost_last.eq(0)
            # accepted while the rest of the machine is frozen: drop it, keep the pipeline
            with m.If(out_fire):
                m.d.sync += self.out.valid.eq(0)
            with m.If(psum_fire):
                m.d.sync += self.psum_out.valid.eq(0)
        with m.If(((out_fire | psum_fire) & out_last) | ghost_last):
            m.d.sync += self.busy.eq(0)
        return m
