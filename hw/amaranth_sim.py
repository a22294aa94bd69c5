"""Run a :class:`~sim.job.GemmJob` on :class:`~hw.accelerator.Accelerator` in Amaranth's
Python simulator (unit tests and quick checks; the cocotb benches in ``tests/rtl`` run the
generated Verilog on Icarus and Verilator).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.sim import Simulator
from qaccel.sim.config import ArrayConfig
from qaccel.sim.job import GemmJob
from qaccel.sim.streams import job_beats, pack_cmd, pack_lanes, pack_params, unpack_lanes

from .accelerator import Accelerator

__all__ = ["AmaranthRun", "run_job"]


@dataclass(frozen=True)
class AmaranthRun:
    out: np.ndarray      # [NT * T, cols] output beats in stream order
    cycles: int          # cycle of the last out handshake, the cmd handshake being cycle 0
    stalls: int          # cycles where the out register held a beat that was not taken
    handshakes: dict     # stream name -> np.ndarray of its handshake cycles (cmd = 0)


def run_job(cfg: ArrayConfig, job: GemmJob, *, gaps: float = 0.0, seed: int = 0,
            vcd: str | None = None) -> AmaranthRun:
    """Drive every stream of ``Accelerator(cfg)`` with the beats of ``job``.

    ``gaps`` is the probability that a transmitter holds back a beat (or the receiver is not
    ready) in a cycle; transmitters keep ``valid`` up until the handshake, as streams require.
    """
    dut = Accelerator(cfg)
    beats = job_beats(cfg, job)
    til_nt = beats.bias.shape[0]
    queues = {
        "cmd": [pack_cmd(cfg, beats.cmd)],
        "weight": [pack_lanes(row, cfg.w_bits) for row in beats.weight],
        "act": [pack_lanes(row, cfg.a_bits) for row in beats.act],
        "params": [pack_params(cfg, beats, nt) for nt in range(til_nt)],
    }
    n_out = til_nt * job.T
    limit = 50 * (len(beats.act) + len(beats.weight) + n_out + cfg.rows + cfg.cols + 10)
    rng = np.random.default_rng(seed)
    result = {}

    async def testbench(ctx):
        streams = {name: getattr(dut, name) for name in queues}
        pos = dict.fromkeys(queues, 0)
        valid = dict.fromkeys(queues, False)
        outs = []
        cycle = 0
        cmd_cycle = last_out = None
        stalls = 0
        shakes = {name: [] for name in (*queues, "out")}
        while len(outs) < n_out:
            if cycle > limit:
                raise AssertionError(f"job did not finish in {limit} cycles: {len(outs)} of "
                                     f"{n_out} outputs, positions {pos}")
            for name, port in streams.items():
                if pos[name] < len(queues[name]):
                    if not valid[name]:
                        valid[name] = gaps == 0.0 or rng.random() >= gaps
                    ctx.set(port.payload.as_value(), queues[name][pos[name]])
                else:
                    valid[name] = False
                ctx.set(port.valid, valid[name])
            out_ready = gaps == 0.0 or rng.random() >= gaps
            ctx.set(dut.out.ready, not out_ready)
            out_valid = ctx.get(dut.out.valid)
            ctx.set(dut.out.ready, out_ready)
            if ctx.get(dut.out.valid) != out_valid:
                raise AssertionError("out.valid depends on out.ready")
            fired = {name: valid[name] and bool(ctx.get(port.ready))
                     for name, port in streams.items()}
            if ctx.get(dut.out.valid):
                if out_ready:
                    outs.append(ctx.get(dut.out.payload.as_value()))
                    shakes["out"].append(cycle)
                    last_out = cycle
                else:
                    stalls += 1
            for name, f in fired.items():
                if f:
                    shakes[name].append(cycle)
            if fired["cmd"]:
                cmd_cycle = cycle
            await ctx.tick()
            cycle += 1
            for name, f in fired.items():
                if f:
                    pos[name] += 1
                    valid[name] = False
        # drain a few cycles: no spurious output, machine idle again
        ctx.set(dut.out.ready, 1)
        for name in queues:
            ctx.set(streams[name].valid, 0)
        for _ in range(cfg.rows + cfg.cols + 4):
            if ctx.get(dut.out.valid):
                raise AssertionError("extra output beat after the job's last one")
            await ctx.tick()
        if ctx.get(dut.busy):
            raise AssertionError("busy still high after the job")
        left = {name: len(q) - pos[name] for name, q in queues.items() if pos[name] != len(q)}
        if left:
            raise AssertionError(f"input beats not consumed: {left}")
        result["outs"] = outs
        result["cycles"] = last_out - cmd_cycle
        result["stalls"] = stalls
        result["handshakes"] = {name: np.array(c, dtype=np.int64) - cmd_cycle
                                for name, c in shakes.items()}

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    out = np.stack([unpack_lanes(w, cfg.cols, cfg.a_bits, cfg.a_signed)
                    for w in result["outs"]])
    return AmaranthRun(out=out, cycles=result["cycles"], stalls=result["stalls"],
                       handshakes=result["handshakes"])
