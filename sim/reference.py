"""Plain numpy integer reference for one GEMM job (SPEC arithmetic, no timing)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arith import bits_for_range, requantize, wrap
from .config import ArrayConfig
from .job import GemmJob

__all__ = ["ReferenceResult", "reference_gemm"]


@dataclass(frozen=True)
class ReferenceResult:
    y: np.ndarray          # [T, N] requantized outputs
    acc: np.ndarray        # [T, N] wrapped accumulators fed to the requantizer
    acc_exact: np.ndarray  # [T, N] exact (unwrapped) bias + X @ W

    def acc_bits_needed(self) -> int:
        """Two's-complement width that holds every final exact accumulator."""
        return bits_for_range(self.acc_exact.min(), self.acc_exact.max())


def reference_gemm(cfg: ArrayConfig, job: GemmJob) -> ReferenceResult:
    """``y = clamp(z_y + ((wrap(bias + X @ W) * M + R) >> S), lo, hi)``.

    Wrapping arithmetic is modular, so the order of accumulation does not change ``acc``.
    """
    exact = job.x @ job.w + job.bias[None, :]
    acc = wrap(exact, cfg.acc_bits)
    lo, hi = job.bounds(cfg)
    y = requantize(acc, job.m_per_channel(), job.s_per_channel(), job.z_y, lo, hi)
    return ReferenceResult(y=y, acc=acc, acc_exact=exact)
