"""cocotb bench for the accelerator top (``qaccel_top``), run by :func:`qaccel.rtl_build.run_jobs`.

Structured like cocotb's ``examples/matrix_multiplier``:

* **drivers** -- one :class:`StreamDriver` per input stream (``cmd``, ``weight``, ``act``,
  ``params``, ``psum_in``): presents ``valid``/``payload``, holds them until ``ready``,
  optionally inserts random idle cycles (``valid`` low) between beats;
* **monitors** -- :class:`OutMonitor` on ``out`` and on ``psum_out``: drives ``ready``
  (random stalls on request) and records every accepted beat with its cycle;
* **model** -- :func:`sim.cycle.simulate_beats` on exactly the beats that were driven;
* **checker** -- :func:`check_job`: every output integer (``out``, or ``psum_out`` in a
  ``raw`` job), the number of beats, (for jobs without stalls) the total cycle count
  ``last busy cycle - cmd handshake`` (the last ``out`` / ``psum_out`` handshake, or where
  it would be in a job without ``emit``) and every stream's handshake cycles, and the cycle
  model's outputs against the plain numpy reference (``sim.reference``; for the last job
  of a K-split chain, the reference of the whole chain, :func:`sim.job.merge_k`; for a
  job of a spill chain, the reference of the chain so far, :func:`merge_spill`): the
  cocotb test fails on any of them, not only the pytest wrapper.

The model keeps one accumulator bank across the jobs, as the RTL does, so K-split chains
(``accumulate`` / ``emit`` jobs) run back to back exactly as on the machine. Partial-sum
spill chains (``load`` / ``raw`` jobs): a job marked ``feed`` in the run spec loads the raw
sums the RTL sent on ``psum_out`` in the previous job (the host loop), not its own ``psum``.

Parameters arrive through the environment: ``QACCEL_RUN`` names a JSON spec in the run
directory (configuration, jobs file, per-job stall probability, seed, results path).

Timing: one coroutine steps the clock. After each rising edge the drivers update their
outputs; in the ``ReadOnly`` phase of the same cycle every stream's ``valid && ready`` is
sampled, which is the handshake that completes at the next edge. Cycle numbers count rising
edges, so the ``cmd`` handshake cycle and the last ``out`` handshake cycle differ by
exactly the model's ``cycles``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from qaccel.sim import ArrayConfig, GemmJob
from qaccel.sim.cycle import new_bank, simulate_beats
from qaccel.sim.job import merge_k
from qaccel.sim.reference import reference_gemm
from qaccel.sim.schedule import tiling
from qaccel.sim.streams import (
    job_beats,
    out_beats_to_matrix,
    pack_cmd,
    pack_lanes,
    pack_params,
    scramble_dont_cares,
    unpack_lanes,
)

CLOCK_NS = 10


def _port(dut, stream: str, member: str):
    """``<stream>__<member>``: how Amaranth names the flattened interface ports."""
    for name in (f"{stream}__{member}", f"{stream}_{member}"):
        try:
            return getattr(dut, name)
        except AttributeError:
            continue
    raise AttributeError(f"DUT has no port {stream}__{member}")


class StreamDriver:
    """Drives one valid/ready input stream from a queue of packed payload integers."""

    def __init__(self, dut, name: str, rng: random.Random):
        self.name = name
        self.valid = _port(dut, name, "valid")
        self.ready = _port(dut, name, "ready")
        self.payload = _port(dut, name, "payload")
        self.rng = rng
        self.gap = 0.0
        self.queue: list[int] = []
        self.pos = 0
        self.presenting = False
        self.accepted: list[int] = []          # handshake cycle of every beat
        self._last_payload: int | None = None
        self.valid.value = 0

    def load(self, words: list[int], gap: float) -> None:
        self.queue, self.pos, self.gap = list(words), 0, gap
        self.accepted = []
        self.presenting = False

    @property
    def pending(self) -> int:
        return len(self.queue) - self.pos

    def drive(self) -> None:
        """Called right after a rising edge: decide this cycle's valid/payload."""
        if not self.presenting and self.pos < len(self.queue):
            # a beat once presented stays valid until accepted (stream rules)
            if not (self.gap and self.rng.random() < self.gap):
                self.presenting = True
                word = self.queue[self.pos]
                if word != self._last_payload:
                    self.payload.value = word
                    self._last_payload = word
        self.valid.value = 1 if self.presenting else 0

    def sample(self, cycle: int) -> None:
        """Called in ReadOnly: did the presented beat handshake in this cycle?"""
        if self.presenting and int(self.ready.value):
            self.accepted.append(cycle)
            self.pos += 1
            self.presenting = False


class OutMonitor:
    """Drives ``<name>.ready`` (random stalls with probability ``gap``) and records beats:
    ``out`` (``a_bits`` lanes) or ``psum_out`` (signed ``acc_bits`` lanes)."""

    def __init__(self, dut, cfg: ArrayConfig, rng: random.Random, name: str = "out"):
        self.cfg = cfg
        self.name = name
        self.lane_bits, self.lane_signed = ((cfg.acc_bits, True) if name == "psum_out"
                                            else (cfg.a_bits, cfg.a_signed))
        self.valid = _port(dut, name, "valid")
        self.ready = _port(dut, name, "ready")
        self.payload = _port(dut, name, "payload")
        self.rng = rng
        self.gap = 0.0
        self.beats: list[np.ndarray] = []
        self.cycles: list[int] = []
        self.ready.value = 0

    def start(self, gap: float) -> None:
        self.gap, self.beats, self.cycles = gap, [], []

    def drive(self) -> None:
        self.ready.value = 0 if (self.gap and self.rng.random() < self.gap) else 1

    def sample(self, cycle: int) -> None:
        if int(self.valid.value) and int(self.ready.value):
            word = self.payload.value.to_unsigned()
            self.beats.append(unpack_lanes(word, self.cfg.cols, self.lane_bits,
                                           self.lane_signed))
            self.cycles.append(cycle)


def merge_spill(cfg: ArrayConfig, chain: list[GemmJob]) -> GemmJob:
    """The single job a partial-sum spill chain computes: ``x`` and ``w`` concatenated
    along K, ``bias`` and ``psum`` of the first job, ``m, s, z_y, relu, raw`` of the last
    (every job after the first loads the previous one's raw sums)."""
    first, last = chain[0], chain[-1]
    return GemmJob.create(cfg, np.concatenate([j.x for j in chain], axis=1),
                          np.concatenate([j.w for j in chain], axis=0), first.bias,
                          last.m, last.s, z_y=last.z_y, relu=last.relu, psum=first.psum,
                          raw=last.raw)


def check_job(cfg: ArrayConfig, job: GemmJob, model, rtl_beats: np.ndarray, rtl_cycles,
              check_cycles: bool, chain: list[GemmJob] | None = None,
              spill: list[GemmJob] | None = None, rtl_handshakes: dict | None = None) -> dict:
    """Checker: every output integer (``rtl_beats``: the ``out`` beats, or the ``psum_out``
    beats of a ``raw`` job, against ``model.out_beats``), the beat count, (gap-free) the
    cycle count and, if ``rtl_handshakes`` (stream -> cycles after the ``cmd`` handshake)
    is given, every stream's handshake cycles against ``model.trace``; and the cycle
    model's outputs against :func:`sim.reference.reference_gemm` (of the whole K-split
    ``chain`` ending with ``job``, or of the ``spill`` chain so far, if given; a job without
    ``emit`` has none)."""
    rec: dict = {"n_out_model": int(model.out_beats.shape[0]), "n_out_rtl": int(len(rtl_beats)),
                 "model_cycles": int(model.cycles), "rtl_cycles": rtl_cycles,
                 "cycles_checked": check_cycles, "mismatches": []}
    ok_n = rec["n_out_model"] == rec["n_out_rtl"]
    if ok_n:
        diff = np.argwhere(np.asarray(rtl_beats) != model.out_beats)
        for b, lane in diff[:10].tolist():
            rec["mismatches"].append({"beat": b, "lane": lane,
                                      "rtl": int(rtl_beats[b][lane]),
                                      "model": int(model.out_beats[b, lane])})
        rec["n_mismatches"] = int(len(diff))
    else:
        rec["n_mismatches"] = None
    rec["outputs_match"] = bool(ok_n and rec["n_mismatches"] == 0)
    rec["cycles_match"] = (rtl_cycles == model.cycles) if check_cycles else None
    rec["handshakes_match"] = None
    if check_cycles and rtl_handshakes is not None and model.trace is not None:
        bad = [name for name, cyc in rtl_handshakes.items()
               if not np.array_equal(np.asarray(cyc, dtype=np.int64),
                                     getattr(model.trace, name))]
        rec["handshakes_match"] = not bad
        rec["handshakes_differ"] = bad
    if job.emit:
        whole = merge_k(cfg, chain) if chain else merge_spill(cfg, spill) if spill else job
        ref = reference_gemm(cfg, whole)
        rec["model_matches_reference"] = bool(np.array_equal(model.y, ref.y))
    else:
        rec["model_matches_reference"] = model.out_beats.shape[0] == 0
    rec["k_split"] = {"accumulate": job.accumulate, "emit": job.emit}
    rec["spill"] = {"load": job.load, "raw": job.raw, "chain_len": len(spill or [job])}
    rec["utilization"] = float(model.utilization)
    rec["overflow_events"] = int(model.overflow_events)
    # the bench passes only if RTL == cycle model *and* cycle model == numpy reference
    rec["ok"] = bool(rec["outputs_match"] and rec["cycles_match"] is not False
                     and rec["handshakes_match"] is not False
                     and rec["model_matches_reference"])
    return rec


async def _reset(dut, cycles: int = 3) -> None:
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


@cocotb.test()
async def run_jobs(dut):
    """Drive every job of the run spec back to back; check each against the cycle model."""
    spec = json.loads(pathlib.Path(os.environ["QACCEL_RUN"]).read_text())
    cfg = ArrayConfig.from_dict(spec["config"])
    from qaccel.rtl_build import load_jobs

    jobs = load_jobs(cfg, pathlib.Path(spec["jobs"]))
    gaps = spec["gaps"]
    check_model = spec.get("check_model", True)
    scramble = spec.get("scramble", [False] * len(jobs))
    feed = spec.get("feed", [False] * len(jobs))
    seed = int(spec["seed"])
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)

    drivers = {name: StreamDriver(dut, name, rng)
               for name in ("cmd", "weight", "act", "params", "psum_in")}
    monitors = {name: OutMonitor(dut, cfg, rng, name) for name in ("out", "psum_out")}
    busy = dut.busy
    bank = new_bank(cfg)            # the model's accumulator bank, carried like the RTL's
    chain: list[GemmJob] = []       # the K-split chain the current job belongs to
    spill: list[GemmJob] = []       # the partial-sum spill chain the current job belongs to
    prev_psum_out = None            # the raw sums the RTL sent in the previous job
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    await _reset(dut)

    async def clock() -> None:
        """One rising edge: drivers and monitor update their signals, then settle."""
        await RisingEdge(dut.clk)
        for d in drivers.values():
            d.drive()
        for mon in monitors.values():
            mon.drive()
        await ReadOnly()

    cycle = 0
    records = []
    t_start = time.perf_counter()
    for index, (job, gap) in enumerate(zip(jobs, gaps)):
        if feed[index]:
            # the host loop: load what the machine sent on psum_out in the previous job
            if prev_psum_out is None or not job.load or prev_psum_out.shape[0] != (
                    -(-job.N // cfg.cols)) * job.T:
                raise ValueError(f"job {index} is marked feed but the previous job sent "
                                 f"no matching psum_out beats (or it does not load)")
            job = dataclasses.replace(job, psum=out_beats_to_matrix(cfg, prev_psum_out,
                                                                    job.T, job.N))
        beats = job_beats(cfg, job)
        if scramble[index]:
            beats = scramble_dont_cares(cfg, beats, nprng)
        til = tiling(cfg, job.T, job.K, job.N)
        model = simulate_beats(cfg, beats, bank=bank, trace=True) if check_model else None
        chain = (chain if job.accumulate else []) + [job]
        spill = (spill if feed[index] else []) + [job]
        drivers["cmd"].load([pack_cmd(cfg, beats.cmd)], gap)
        drivers["weight"].load([pack_lanes(r, cfg.w_bits) for r in beats.weight], gap)
        drivers["act"].load([pack_lanes(r, cfg.a_bits) for r in beats.act], gap)
        drivers["params"].load([pack_params(cfg, beats, nt) for nt in range(til.NT)], gap)
        drivers["psum_in"].load([pack_lanes(r, cfg.acc_bits) for r in beats.psum_in], gap)
        for mon in monitors.values():
            mon.start(gap)
        sink = monitors["psum_out" if job.raw else "out"]       # the job's output stream
        other = monitors["out" if job.raw else "psum_out"]
        n_out = til.NT * job.T if job.emit else 0
        budget = (model.cycles if model else 4 * (til.passes * max(cfg.acc_depth, cfg.rows,
                                                                   cfg.cols)))
        limit = int(budget * (1 + 20 * gap)) + 200
        t0 = cycle
        error = None
        last_busy = None
        started = False
        # until the job's busy window (it rises after the cmd handshake) has closed
        while len(sink.beats) < n_out or last_busy is None or last_busy == cycle:
            await clock()
            cycle += 1
            for d in drivers.values():
                d.sample(cycle)
            for mon in monitors.values():
                mon.sample(cycle)
            started = bool(drivers["cmd"].accepted)
            if started and int(busy.value):
                last_busy = cycle
            if cycle - t0 > limit:
                error = (f"timeout after {limit} cycles: {len(sink.beats)}/{n_out} "
                         f"{sink.name} beats; "
                         + ", ".join(f"{k} {d.pending} beats pending"
                                     for k, d in drivers.items()))
                break
        # a few idle cycles: no stray output beats after the job
        extra = 0
        if error is None:
            for mon in monitors.values():
                mon.gap = 0.0
            for _ in range(4):
                await clock()
                cycle += 1
                extra += sum(int(mon.valid.value) for mon in monitors.values())
        leftover = {k: d.pending for k, d in drivers.items() if d.pending}
        if error is None and leftover:
            error = f"job finished with input beats never consumed: {leftover}"
        if error is None and extra:
            error = f"{extra} stray out/psum_out valid cycles after the last output beat"
        if error is None and other.beats:
            error = (f"{len(other.beats)} {other.name} beats in a job whose output stream is "
                     f"{sink.name}")
        cmd_cycle = drivers["cmd"].accepted[0] if drivers["cmd"].accepted else None
        rtl_cycles = (last_busy - cmd_cycle) if (last_busy is not None and cmd_cycle
                                                 is not None) else None
        if sink.cycles and rtl_cycles is not None and sink.cycles[-1] != last_busy:
            error = error or (f"busy fell in cycle {last_busy}, not with the last {sink.name} "
                              f"beat (cycle {sink.cycles[-1]})")
        rec = {"index": index, "T": job.T, "K": job.K, "N": job.N, "gaps": gap,
               "scrambled": bool(scramble[index]), "fed": bool(feed[index]),
               "rtl_cycles": rtl_cycles, "error": error}
        rtl = np.array(sink.beats, dtype=np.int64).reshape(-1, cfg.cols)
        prev_psum_out = rtl if job.raw else None
        np.save(pathlib.Path(spec["results"]).parent / f"{sink.name}_beats_{index}.npy", rtl)
        if model is not None:
            shakes = None
            if cmd_cycle is not None:
                shakes = {name: [c - cmd_cycle for c in d.accepted]
                          for name, d in drivers.items() if name != "cmd"}
                shakes.update({name: [c - cmd_cycle for c in mon.cycles]
                               for name, mon in monitors.items()})
            rec.update(check_job(cfg, job, model, rtl, rtl_cycles, check_cycles=(gap == 0),
                                 chain=chain if job.accumulate else None,
                                 spill=spill if len(spill) > 1 else None,
                                 rtl_handshakes=shakes))
        else:
            rec.update({"model_cycles": None, "outputs_match": None, "cycles_match": None,
                        "ok": error is None})
        if error:
            rec["ok"] = False
        records.append(rec)
        dut._log.info("job %d: T=%d K=%d N=%d gap=%.2f rtl_cycles=%s model_cycles=%s ok=%s %s",
                      index, job.T, job.K, job.N, gap, rtl_cycles, rec.get("model_cycles"),
                      rec["ok"], error or "")
        if error and "timeout" in error:
            break           # the machine is wedged; later jobs would only time out too
    tb_seconds = time.perf_counter() - t_start
    pathlib.Path(spec["results"]).write_text(json.dumps({"jobs": records,
                                                         "tb_seconds": tb_seconds}, indent=1))
    bad = [r for r in records if not r["ok"]]
    assert len(records) == len(jobs), f"stopped after {len(records)}/{len(jobs)} jobs"
    assert not bad, ("RTL != cycle model or cycle model != reference:\n"
                     + "\n".join(json.dumps(r) for r in bad))
