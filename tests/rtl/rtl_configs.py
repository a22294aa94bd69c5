"""The array configurations and job mixes the cocotb benches run (shared by the RTL tests;
kept here). Job shapes are chosen so that every config has partial tiles in T, K
and N, a job smaller than one tile in every dimension, one with exact tile multiples, and
extreme operands, and two configs run a K-split chain (``k_tile``: the job cut along K into
jobs that keep their partial sums in the accumulator bank), while the whole suite stays
within a few minutes on two cores."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from qaccel.sim import ArrayConfig, GemmJob, random_job
from qaccel.sim.job import split_k


@dataclass(frozen=True)
class JobSpec:
    T: int
    K: int
    N: int
    extreme: bool = False
    scramble: bool = False       # random values in every don't-care input lane
    relu: bool | None = None     # None: random
    k_tile: int = 0              # > 0: run as a K-split chain of ceil(K / k_tile) jobs

    @property
    def n_jobs(self) -> int:
        return -(-self.K // self.k_tile) if self.k_tile else 1


@dataclass(frozen=True)
class BenchConfig:
    name: str
    cfg: ArrayConfig
    jobs: tuple[JobSpec, ...]          # gap-free: outputs and cycle count checked
    stall_job: JobSpec                 # run with random valid/ready gaps: outputs checked
    seed: int


CONFIGS: dict[str, BenchConfig] = {b.name: b for b in [
    BenchConfig(
        "4x4_w8a8_pt",
        ArrayConfig(rows=4, cols=4, w_bits=8, a_bits=8, per_channel=False, acc_depth=8),
        (JobSpec(19, 11, 9), JobSpec(3, 2, 3, relu=True), JobSpec(16, 8, 8, relu=False),
         JobSpec(13, 10, 7, extreme=True, scramble=True), JobSpec(9, 5, 6, scramble=True),
         JobSpec(4, 11, 7, extreme=True, k_tile=4)),
        JobSpec(11, 7, 6, scramble=True), seed=41),
    BenchConfig(
        "8x8_w4a8_pc",
        ArrayConfig(rows=8, cols=8, w_bits=4, a_bits=8, per_channel=True, acc_depth=16),
        (JobSpec(37, 19, 13), JobSpec(5, 3, 2, relu=True), JobSpec(16, 16, 8, relu=False),
         JobSpec(20, 17, 11, extreme=True, scramble=True), JobSpec(5, 19, 13, k_tile=8)),
        JobSpec(18, 10, 9, scramble=True), seed=42),
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
    """One random job per spec; a ``k_tile`` spec gives its K-split chain."""
    rng = np.random.default_rng(seed)
    jobs = []
    for s in specs:
        job = random_job(bench.cfg, s.T, s.K, s.N, rng, extreme=s.extreme, relu=s.relu)
        jobs += split_k(bench.cfg, job, s.k_tile) if s.k_tile else [job]
    return jobs


def scramble_flags(specs) -> list[bool]:
    """``scramble`` per job of :func:`make_jobs`."""
    return [s.scramble for s in specs for _ in range(s.n_jobs)]
