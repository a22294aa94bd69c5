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

__all__ = ["AmaranthRun", "run_job", "run_jobs", "run_beats", "run_spill_chain"]


@dataclass(frozen=True)
class AmaranthRun:
    """What one job did on the Amaranth ``Accelerator``."""

    out: np.ndarray      # [NT * T, cols] output beats in stream order ([0, cols] without
                         # emit or with raw)
    psum_out: np.ndarray  # [NT * T, cols] raw-sum beats of a raw job, else [0, cols]
    cycles: int          # cycle of the last out / psum_out handshake (without emit: the last
                         # busy cycle, where it would have been), the cmd handshake cycle 0
    stalls: int          # cycles where the out / psum_out register held a beat not taken
    handshakes: dict     # stream name -> np.ndarray of its handshake cycles (cmd = 0)


def run_job(cfg: ArrayConfig, job: GemmJob, *, gaps: float = 0.0, seed: int = 0,
            vcd: str | None = None) -> AmaranthRun:
    """Drive every stream of ``Accelerator(cfg)`` with the beats of ``job`` (``psum_in`` too,
    in a ``load`` job) and collect its ``out`` and ``psum_out`` beats.

    ``gaps`` is the probability that a transmitter holds back a beat (or a receiver, ``out``
    or ``psum_out``, is not ready) in a cycle; transmitters keep ``valid`` up until the
    handshake, as streams require.
    """
    return run_jobs(cfg, [job], gaps=gaps, seed=seed, vcd=vcd)[0]


def run_jobs(cfg: ArrayConfig, jobs, *, gaps: float = 0.0, seed: int = 0,
             vcd: str | None = None) -> list[AmaranthRun]:
    """:func:`run_job` for several jobs back to back on one machine (its accumulator bank
    carried from job to job, e.g. a K-split chain from :func:`sim.job.split_k`); every
    stream holds all the jobs' beats in order (``cmd`` is taken only when idle). The
    ``psum_in`` beats of a ``load`` job come from its ``psum``; for a spill chain, whose
    ``psum`` is the previous job's ``psum_out``, use :func:`run_spill_chain`."""
    return run_beats(cfg, [job_beats(cfg, j) for j in jobs], gaps=gaps, seed=seed, vcd=vcd)


def run_spill_chain(cfg: ArrayConfig, jobs, *, gaps: float = 0.0,
                    seed: int = 0) -> list[AmaranthRun]:
    """A partial-sum spill chain back to back on one machine, the host looping ``psum_out``
    back: every job after the first must ``load``, and its ``psum_in`` beats are the
    ``psum_out`` beats the previous (``raw``) job sent, fed back as they arrive (its own
    ``psum`` only fixes the ``load`` flag; its values are ignored). The first job's
    ``psum_in`` (if it loads) comes from its ``psum``."""
    jobs = list(jobs)
    for i, job in enumerate(jobs[1:], 1):
        if not (job.load and jobs[i - 1].raw and (job.T, job.N) == (jobs[i - 1].T,
                                                                    jobs[i - 1].N)):
            raise ValueError(f"run_spill_chain: jobs[{i}] must load the raw sums of "
                             f"jobs[{i - 1}] (same T, N; jobs[{i - 1}].raw and "
                             f"jobs[{i}].psum set)")
    return run_beats(cfg, [job_beats(cfg, j) for j in jobs], gaps=gaps, seed=seed,
                     spill=True)


def run_beats(cfg: ArrayConfig, all_beats, *, gaps: float = 0.0, seed: int = 0,
              vcd: str | None = None, spill: bool = False) -> list[AmaranthRun]:
    """:func:`run_jobs` on the jobs' stream beats (:class:`sim.streams.JobBeats`, e.g.
    with don't-care lanes filled at random). ``spill``: the ``psum_in`` beats of every job
    but the first are the ``psum_out`` words the machine sent before (see
    :func:`run_spill_chain`)."""
    dut = Accelerator(cfg)
    all_beats = list(all_beats)
    per_job = [{
        "cmd": [pack_cmd(cfg, b.cmd)],
        "weight": [pack_lanes(row, cfg.w_bits) for row in b.weight],
        "act": [pack_lanes(row, cfg.a_bits) for row in b.act],
        "params": [pack_params(cfg, b, nt) for nt in range(b.bias.shape[0])],
        "psum_in": [pack_lanes(row, cfg.acc_bits) for row in b.psum_in],
    } for b in all_beats]
    n_jobs = len(all_beats)
    queues = {name: [w for q in per_job for w in q[name]] for name in per_job[0]}
    n_psum_in = len(queues["psum_in"])
    if spill:       # filled from psum_out as the machine sends it
        queues["psum_in"] = list(per_job[0]["psum_in"])
    receivers = ("out", "psum_out")
    n_recv = [{"out": b.out.shape[0], "psum_out": b.psum_out.shape[0]} for b in all_beats]
    total = {name: sum(n[name] for n in n_recv) for name in receivers}
    limit = 50 * (len(queues["act"]) + len(queues["weight"]) + sum(total.values())
                  + n_jobs * (cfg.rows + cfg.cols + 10))
    rng = np.random.default_rng(seed)
    result = {}

    async def testbench(ctx):
        streams = {name: getattr(dut, name) for name in queues}
        pos = dict.fromkeys(queues, 0)
        valid = dict.fromkeys(queues, False)
        got = {name: [] for name in receivers}
        cycle = 0
        stalls = []
        busy_last = []          # last cycle with busy high, per job
        shakes = {name: [] for name in (*queues, *receivers)}
        while (any(len(got[n]) < total[n] for n in receivers) or pos["cmd"] < n_jobs
               or ctx.get(dut.busy)):
            if cycle > limit:
                raise AssertionError(f"jobs did not finish in {limit} cycles: "
                                     f"{ {n: len(got[n]) for n in receivers} } of {total} "
                                     f"outputs, positions {pos}")
            for name, port in streams.items():
                if pos[name] < len(queues[name]):
                    if not valid[name]:
                        valid[name] = gaps == 0.0 or rng.random() >= gaps
                    ctx.set(port.payload.as_value(), queues[name][pos[name]])
                else:
                    valid[name] = False
                ctx.set(port.valid, valid[name])
            for name in receivers:
                port = getattr(dut, name)
                ready = gaps == 0.0 or rng.random() >= gaps
                ctx.set(port.ready, not ready)
                was_valid = ctx.get(port.valid)
                ctx.set(port.ready, ready)
                if ctx.get(port.valid) != was_valid:
                    raise AssertionError(f"{name}.valid depends on {name}.ready")
            fired = {name: valid[name] and bool(ctx.get(port.ready))
                     for name, port in streams.items()}
            for name in receivers:
                port = getattr(dut, name)
                if ctx.get(port.valid):
                    if ctx.get(port.ready):
                        got[name].append(ctx.get(port.payload.as_value()))
                        shakes[name].append(cycle)
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
            if spill:
                fed = got["psum_out"][len(queues["psum_in"]) - len(per_job[0]["psum_in"]):]
                queues["psum_in"] += fed[:n_psum_in - len(queues["psum_in"])]
        # drain a few cycles: no spurious output, machine idle again
        for name in receivers:
            ctx.set(getattr(dut, name).ready, 1)
        for name in queues:
            ctx.set(streams[name].valid, 0)
        for _ in range(cfg.rows + cfg.cols + 4):
            for name in receivers:
                if ctx.get(getattr(dut, name).valid):
                    raise AssertionError(f"extra {name} beat after the job's last one")
            await ctx.tick()
        if ctx.get(dut.busy):
            raise AssertionError("busy still high after the job")
        left = {name: len(q) - pos[name] for name, q in queues.items() if pos[name] != len(q)}
        if left:
            raise AssertionError(f"input beats not consumed: {left}")
        result.update(got=got, stalls=stalls, busy_last=busy_last, shakes=shakes)

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
    counts = [dict({name: len(q[name]) for name in q}, **n) for q, n in zip(per_job, n_recv)]
    lane_fmt = {"out": (cfg.a_bits, cfg.a_signed), "psum_out": (cfg.acc_bits, True)}
    for i, cnt in enumerate(counts):
        mine = {}
        for name, c in cnt.items():
            mine[name] = np.array(result["shakes"][name][cursor[name]:cursor[name] + c],
                                  dtype=np.int64)
            cursor[name] += c
        c0 = int(mine["cmd"][0])
        end = result["busy_last"][i]
        beats = {}
        for name, (bits, sgn) in lane_fmt.items():
            words = result["got"][name][cursor[name] - cnt[name]:cursor[name]]
            beats[name] = (np.stack([unpack_lanes(w, cfg.cols, bits, sgn) for w in words])
                           if words else np.zeros((0, cfg.cols), dtype=np.int64))
        runs.append(AmaranthRun(
            out=beats["out"], psum_out=beats["psum_out"], cycles=end - c0,
            stalls=sum(1 for c in result["stalls"] if c0 <= c <= end),
            handshakes={name: v - c0 for name, v in mine.items()}))
    return runs
