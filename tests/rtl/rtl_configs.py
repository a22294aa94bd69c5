"""The array configurations and job mixes the cocotb benches run (shared by the RTL tests;
kept here). Job shapes are chosen so that every config has partial tiles in T, K
and N, a job smaller than one tile in every dimension, one with exact tile multiples, and
extreme operands, and two configs run a K-split chain (``k_tile``: the job cut along K into
jobs that keep their partial sums in the accumulator bank) and a partial-sum spill chain
(``spill``: cut along K into jobs that pass their raw sums through the host, ``psum_out``
of one job fed back as ``psum_in`` of the next; T > acc_depth, so the bank could not hold
them), while the whole suite stays within a few minutes on two cores."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from qaccel.sim import ArrayConfig, GemmJob, random_job
from qaccel.sim.job import split_k
from qaccel.sim.reference import reference_spill_chain


@dataclass(frozen=True)
class JobSpec:
    T: int
    K: int
    N: int
    extreme: bool = False
    scramble: bool = False       # random values in every don't-care input lane
    relu: bool | None = None     # None: random
    k_tile: int = 0              # > 0: run as a K-split chain of ceil(K / k_tile) jobs
    spill: int = 0               # > 0: run as a spill chain of ceil(K / spill) load/raw jobs
    load: bool = False           # the (first) job loads random starting sums (psum_in)
    raw: bool = False            # the (last) job sends its raw sums (psum_out)

    @property
    def n_jobs(self) -> int:
        tile = self.k_tile or self.spill
        return -(-self.K // tile) if tile else 1


@dataclass(frozen=True)
class BenchConfig:
    name: str
    cfg: ArrayConfig
    jobs: tuple[JobSpec, ...]          # gap-free: outputs and cycle count checked
    stall_job: JobSpec                 # run with random valid/ready gaps: outputs checked
    seed: int
    stall_chain: JobSpec | None = None  # a spill chain run with gaps too


CONFIGS: dict[str, BenchConfig] = {b.name: b for b in [
    BenchConfig(
        "4x4_w8a8_pt",
        ArrayConfig(rows=4, cols=4, w_bits=8, a_bits=8, per_channel=False, acc_depth=8),
        (JobSpec(19, 11, 9), JobSpec(3, 2, 3, relu=True), JobSpec(16, 8, 8, relu=False),
         JobSpec(13, 10, 7, extreme=True, scramble=True), JobSpec(9, 5, 6, scramble=True),
         JobSpec(4, 11, 7, extreme=True, k_tile=4),
         JobSpec(19, 11, 9, extreme=True, scramble=True, spill=4),
         JobSpec(5, 6, 3, scramble=True, load=True, raw=True)),
        JobSpec(11, 7, 6, scramble=True), seed=41,
        stall_chain=JobSpec(10, 9, 6, scramble=True, spill=4, load=True)),
    BenchConfig(
        "8x8_w4a8_pc",
        ArrayConfig(rows=8, cols=8, w_bits=4, a_bits=8, per_channel=True, acc_depth=16),
        (JobSpec(37, 19, 13), JobSpec(5, 3, 2, relu=True), JobSpec(16, 16, 8, relu=False),
         JobSpec(20, 17, 11, extreme=True, scramble=True), JobSpec(5, 19, 13, k_tile=8),
         JobSpec(21, 19, 13, scramble=True, spill=8, load=True)),
        JobSpec(18, 10, 9, scramble=True), seed=42,
        stall_chain=JobSpec(18, 17, 11, scramble=True, spill=8, raw=True)),
    BenchConfig(
        "3x5_w2a4u",
        ArrayConfig(rows=3, cols=5, w_bits=2, a_bits=4, a_signed=False, per_channel=True,
                    mult_bits=10, acc_depth=7),
        (JobSpec(16, 7, 12), JobSpec(2, 2, 3, relu=True), JobSpec(14, 6, 10, relu=False),
         JobSpec(15, 8, 11, extreme=True, scramble=True), JobSpec(9, 4, 6, extreme=True)),
        JobSpec(10, 5, 7, scramble=True), seed=43),
    BenchConfig(
        "16x16_w8a8_acc16",
        ArrayConfig(rows=16, cols=16, w_bits=8, a_bits=8, a_signed=True, acc_bits=16,
                    mult_bits=16, per_channel=False, acc_depth=24),
        (JobSpec(30, 37, 23), JobSpec(5, 9, 3, relu=True),
         JobSpec(26, 40, 20, extreme=True, scramble=True)),
        JobSpec(12, 20, 18, scramble=True), seed=44),
]}


def seed_for(bench: BenchConfig) -> int:
    """``QACCEL_SEED`` (if set) shifts every config's seed, for fresh random jobs."""
    return bench.seed + int(os.environ.get("QACCEL_SEED", "0"))


def make_jobs(bench: BenchConfig, specs, seed: int) -> list[GemmJob]:
    """One random job per spec; a ``k_tile`` spec gives its K-split chain, a ``spill`` spec
    its spill chain (:func:`sim.reference.reference_spill_chain`); ``load`` draws random
    starting sums."""
    rng = np.random.default_rng(seed)
    cfg = bench.cfg
    jobs = []
    for s in specs:
        job = random_job(cfg, s.T, s.K, s.N, rng, extreme=s.extreme, relu=s.relu)
        if s.load or s.raw:
            # starting sums of a bias's size, so that requantized outputs do not all clamp
            mag = min(cfg.acc_range[1], 1 << (cfg.w_bits + cfg.a_bits + 2))
            psum = rng.integers(-mag, mag, endpoint=True, size=(s.T, s.N)) if s.load else None
            job = GemmJob.create(cfg, job.x, job.w, job.bias, job.m, job.s, z_y=job.z_y,
                                 relu=job.relu, psum=psum, raw=s.raw)
        if s.k_tile:
            jobs += split_k(cfg, job, s.k_tile)
        elif s.spill:
            jobs += reference_spill_chain(cfg, job, s.spill)
        else:
            jobs.append(job)
    return jobs


def feed_flags(specs) -> list[bool]:
    """``feed`` per job of :func:`make_jobs`: every job of a spill chain after the first
    loads the raw sums the RTL sent in the job before."""
    return [bool(s.spill) and i > 0 for s in specs for i in range(s.n_jobs)]


def scramble_flags(specs) -> list[bool]:
    """``scramble`` per job of :func:`make_jobs`."""
    return [s.scramble for s in specs for _ in range(s.n_jobs)]
