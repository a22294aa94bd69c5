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

__all__ = ["AmaranthRun", "run_job", "run_jobs"]


@dataclass(frozen=True)
class AmaranthRun:
    out: np.ndarray      # [NT * T, cols] output beats in stream order ([0, cols] without emit)
    cycles: int          # cycle of the last out handshake (without emit: the last busy
                         # cycle, where it would have been), the cmd handshake being cycle 0
    stalls: int          # cycles where the out register held a beat that was not taken
    handshakes: dict     # stream name -> np.ndarray of its handshake cycles (cmd = 0)


def run_job(cfg: ArrayConfig, job: GemmJob, *, gaps: float = 0.0, seed: int = 0,
            vcd: str | None = None) -> AmaranthRun:
    """Drive every stream of ``Accelerator(cfg)`` with the beats of ``job``.

    ``gaps`` is the probability that a transmitter holds back a beat (or the receiver is not
    ready) in a cycle; transmitters keep ``valid`` up until the handshake, as streams require.
    """
    return run_jobs(cfg, [job], gaps=gaps, seed=seed, vcd=vcd)[0]


def run_jobs(cfg: ArrayConfig, jobs, *, gaps: float = 0.0, seed: int = 0,
             vcd: str | None = None) -> list[AmaranthRun]:
    """:func:`run_job` for several jobs back to back on one machine (its accumulator bank
    carried from job to job, e.g. a K-split chain from :func:`sim.job.split_k`); every
    stream holds all the jobs' beats in order (``cmd`` is taken only when idle)."""
    dut = Accelerator(cfg)
    jobs = list(jobs)
    all_beats = [job_beats(cfg, j) for j in jobs]
    per_job = [{
        "cmd": [pack_cmd(cfg, b.cmd)],
        "weight": [pack_lanes(row, cfg.w_bits) for row in b.weight],
        "act": [pack_lanes(row, cfg.a_bits) for row in b.act],
        "params": [pack_params(cfg, b, nt) for nt in range(b.bias.shape[0])],
    } for b in all_beats]
    queues = {name: [w for q in per_job for w in q[name]] for name in per_job[0]}
    n_outs = [b.out.shape[0] for b in all_beats]
    n_out = sum(n_outs)
    limit = 50 * (len(queues["act"]) + len(queues["weight"]) + n_out
                  + len(jobs) * (cfg.rows + cfg.cols + 10))
    rng = np.random.default_rng(seed)
    result = {}

    async def testbench(ctx):
        streams = {name: getattr(dut, name) for name in queues}
        pos = dict.fromkeys(queues, 0)
        valid = dict.fromkeys(queues, False)
        outs = []
        cycle = 0
        stalls = []
        busy_last = []          # last cycle with busy high, per job
        shakes = {name: [] for name in (*queues, "out")}
        while len(outs) < n_out or pos["cmd"] < len(jobs) or ctx.get(dut.busy):
            if cycle > limit:
                raise AssertionError(f"jobs did not finish in {limit} cycles: {len(outs)} of "
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
                else:
                    stalls.append(cycle)
            if ctx.get(dut.busy):
                busy_last[-1] = cycle
            for name, f in fired.items():
                if f:
                    shakes[name].append(cycle)
            if fired["cmd"]:
                busy_last.append(None)
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
        result.update(outs=outs, stalls=stalls, busy_last=busy_last, shakes=shakes)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    runs = []
    cursor = dict.fromkeys(result["shakes"], 0)
    counts = [dict({name: len(q[name]) for name in q}, out=n) for q, n in zip(per_job, n_outs)]
    for i, cnt in enumerate(counts):
        mine = {}
        for name, c in cnt.items():
            mine[name] = np.array(result["shakes"][name][cursor[name]:cursor[name] + c],
                                  dtype=np.int64)
            cursor[name] += c
        c0 = int(mine["cmd"][0])
        end = result["busy_last"][i]
        words = result["outs"][cursor["out"] - cnt["out"]:cursor["out"]]
        out = (np.stack([unpack_lanes(w, cfg.cols, cfg.a_bits, cfg.a_signed) for w in words])
               if words else np.zeros((0, cfg.cols), dtype=np.int64))
        runs.append(AmaranthRun(
            out=out, cycles=end - c0,
            stalls=sum(1 for c in result["stalls"] if c0 <= c <= end),
            handshakes={name: v - c0 for name, v in mine.items()}))
    return runs
