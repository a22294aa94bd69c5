"""The one numpy integer reference for a GEMM job (SPEC arithmetic, no timing).

:func:`reference_gemm` runs a :class:`sim.job.GemmJob` as the ``cfg`` machine would;
:func:`run_reference` is the same arithmetic with an explicit accumulator width and output
clamp, which the integer-network executor (:mod:`sim.executor`) uses for every layer GEMM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arith import bits_for_range, requantize, wrap
from .config import ArrayConfig
from .job import GemmJob, spill_chain

__all__ = ["ReferenceResult", "reference_gemm", "reference_spill_chain", "run_reference"]


@dataclass(frozen=True)
class ReferenceResult:
    y: np.ndarray          # [T, N] requantized outputs (a raw job: the wrapped sums, = acc)
    acc: np.ndarray        # [T, N] wrapped accumulators fed to the requantizer
    acc_exact: np.ndarray  # [T, N] exact (unwrapped) start + X @ W (start: bias, or psum of
                           # a load job)

    def acc_bits_needed(self) -> int:
        """Two's-complement width that holds every final exact accumulator."""
        return bits_for_range(self.acc_exact.min(), self.acc_exact.max())

    @property
    def overflows(self) -> int:
        """Final accumulators that wrapped (``acc != acc_exact``)."""
        return int(np.count_nonzero(self.acc != self.acc_exact))


def run_reference(job: GemmJob, acc_bits: int, lo: int, hi: int) -> ReferenceResult:
    """``y = clamp(z_y + ((wrap(start + X @ W, acc_bits) * M + R) >> S), lo, hi)`` with
    ``start = bias`` (broadcast over T), or ``psum`` in a load job (``job.load``); a raw
    job (``job.raw``) returns ``y = wrap(start + X @ W, acc_bits)`` (``m, s, lo, hi``
    unused).

    Wrapping arithmetic is modular, so the order of accumulation does not change ``acc``.
    """
    start = job.psum if job.load else job.bias[None, :]
    exact = job.x @ job.w + start
    acc = wrap(exact, acc_bits)
    if job.raw:
        y = acc.copy()
    else:
        y = requantize(acc, job.m_per_channel(), job.s_per_channel(), job.z_y, lo, hi)
    return ReferenceResult(y=y, acc=acc, acc_exact=exact)


def reference_gemm(cfg: ArrayConfig, job: GemmJob) -> ReferenceResult:
    """``job`` on the ``cfg`` machine: ``cfg.acc_bits`` accumulators, ``cfg``'s output type."""
    return run_reference(job, cfg.acc_bits, *job.bounds(cfg))


def reference_spill_chain(cfg: ArrayConfig, job: GemmJob, k_tile: int) -> list[GemmJob]:
    """The jobs of ``job`` cut along K into a partial-sum spill chain, each job's starting
    sums taken from the numpy reference of the job before it.

    Job i has rows ``i * k_tile ..`` of ``w`` (columns of ``x``; the last may be shorter),
    ``bias, m, s, z_y, relu`` of ``job``; it *loads* the raw sums
    ``reference_gemm(cfg, job_{i-1}).y`` of the previous job (the first loads ``job.psum``,
    or starts from ``bias`` if ``job`` does not load); every job but the last is ``raw``,
    the last keeps ``job.raw``. So the last job's reference output is ``job``'s. A bench
    that feeds the machine's own ``psum_out`` back instead uses only the jobs' operands.

    Parameters
    ----------
    cfg : ArrayConfig
        The machine (its ``acc_bits`` wrap the sums passed along).
    job : GemmJob
        The job to cut.
    k_tile : int
        Reduction rows per job, ``>= 1`` (``>= K``: the one job).

    Returns
    -------
    list of GemmJob
        The chain, in order.

    Raises
    ------
    ValueError
        If ``k_tile`` is not an integer ``>= 1``.
    """
    return [sub for sub, _ in spill_chain(cfg, job, k_tile, reference_gemm,
                                          "reference_spill_chain")]
