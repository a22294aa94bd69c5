"""The accelerator's pass schedule: the timing contract shared by RTL, cycle model and
analytic model.

Tiling. ``NT = ceil(N / cols)``, ``TT = ceil(T / acc_depth)``, ``KT = ceil(K / rows)``.
A *pass* streams one T-tile of activations through one (K-tile, N-tile) of weights.
Passes run in the order ``for nt: for tt: for kt`` (K innermost, so a T-tile's
accumulators finish before the next T-tile starts). ``L(tt) = min(D, T - tt * D)``.
An *n-group* is all passes with the same ``nt``; it uses one bias / ``(M, S)`` vector.

Timing (all streams always valid / ready; cycle 0 is the ``cmd`` handshake):

* ``s_0 = 1`` and ``s_{p+1} = s_p + max(L_p, rows, cols)``.
* activation beat ``t`` of pass ``p`` is accepted at cycle ``s_p + t`` (``0 <= t < L_p``);
* weight row ``r`` of pass ``p`` is accepted at cycle ``s_p + r`` (``0 <= r < rows``);
  it lands in the shadow register of PE row ``r`` just before that row's first product;
* the ``params`` beat of n-group ``nt`` is accepted with its first activation beat;
* PE ``(r, c)`` multiplies activation ``(p, t)`` during cycle ``s_p + t + r + c + 1``;
* output beat ``t`` of a T-tile is emitted at cycle ``s_p + t + rows + cols + 3`` where
  ``p`` is that T-tile's last K pass;
* the job's cycle count is the cycle of the last output beat.

K-split chains (``GemmJob.accumulate`` / ``emit``): the timing is the same. A job without
``emit`` sends no output beats; it ends in the cycle its last output beat would have been
sent (so ``gemm_cycles`` holds for every job). A chained job keeps all its sums in the
bank (``NT * T <= acc_depth``, hence ``TT = 1``): output ``(nt, t)`` uses entry
``nt * T + t``; an unchained job reuses entries ``0 .. L-1`` for every T-tile.

Spilled chains (``GemmJob.psum`` / ``raw``): the timing is the same too. A ``load`` job's
``psum_in`` beat of output ``(nt, t)`` is accepted in the accumulate cycle of that
vector's first K pass (``s_p + t + rows + cols``, ``p`` the T-tile's first K pass); a
``raw`` job's ``psum_out`` beat replaces the output beat, in its cycle.

``max(L, rows, cols)``: one weight row loads per cycle (``rows``), a shadow row frees only
after the previous pass's first activation crossed all ``cols`` PEs of it, and the pass
itself takes ``L`` cycles. With ``acc_depth >= max(rows, cols)`` the array never idles
between passes; only the fill/drain ``rows + cols + 3`` is exposed once per job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import ArrayConfig
from .validate import check_int

__all__ = ["PIPELINE_TAIL", "Tiling", "tiling", "pass_starts", "beat_cycles",
           "gemm_cycles", "params_fifo_depth"]

#: cycles from a PE-column bottom to the output beat: accumulate, multiply, shift/clamp.
PIPELINE_TAIL = 3


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def params_fifo_depth(cfg: ArrayConfig) -> int:
    """Entries of the parameter FIFO, in the RTL and the cycle model:
    ``ceil((rows + cols + 1) / max(rows, cols)) + 1``.

    A ``params`` beat is pushed with the first activation beat of its n-group and popped
    when the accumulate stage sees the group's last vector; with this schedule the n-groups
    in flight never exceed this bound (hw/README.md; the cycle model checks it every push).
    """
    return _ceil_div(cfg.rows + cfg.cols + 1, max(cfg.rows, cfg.cols)) + 1


@dataclass(frozen=True)
class Tiling:
    T: int
    K: int
    N: int
    NT: int
    TT: int
    KT: int
    rows: int
    cols: int
    depth: int

    @property
    def passes(self) -> int:
        return self.NT * self.TT * self.KT

    def tile_len(self, tt: int) -> int:
        return min(self.depth, self.T - tt * self.depth)

    def k_len(self, kt: int) -> int:
        return min(self.rows, self.K - kt * self.rows)

    def n_len(self, nt: int) -> int:
        return min(self.cols, self.N - nt * self.cols)

    def pass_index(self, nt: int, tt: int, kt: int) -> int:
        return (nt * self.TT + tt) * self.KT + kt

    def pass_coords(self) -> np.ndarray:
        """``[passes, 3]`` array of ``(nt, tt, kt)`` in execution order."""
        nt, tt, kt = np.meshgrid(np.arange(self.NT), np.arange(self.TT), np.arange(self.KT),
                                 indexing="ij")
        return np.stack([nt.ravel(), tt.ravel(), kt.ravel()], axis=1)

    def pass_lengths(self) -> np.ndarray:
        """``L_p`` for every pass in execution order."""
        lens = np.minimum(self.depth, self.T - np.arange(self.TT) * self.depth)
        return np.tile(np.repeat(lens, self.KT), self.NT)


def tiling(cfg: ArrayConfig, T: int, K: int, N: int) -> Tiling:
    T, K, N = (check_int("GEMM", name, v, 1) for name, v in (("T", T), ("K", K), ("N", N)))
    return Tiling(T=T, K=K, N=N, NT=_ceil_div(N, cfg.cols),
                  TT=_ceil_div(T, cfg.acc_depth), KT=_ceil_div(K, cfg.rows),
                  rows=cfg.rows, cols=cfg.cols, depth=cfg.acc_depth)


def pass_starts(cfg: ArrayConfig, til: Tiling) -> np.ndarray:
    """``s_p`` for every pass (int64), per the recurrence in the module docstring."""
    periods = np.maximum(til.pass_lengths(), max(cfg.rows, cfg.cols))
    starts = np.empty(til.passes, dtype=np.int64)
    starts[0] = 1
    np.cumsum(periods[:-1], out=starts[1:])
    starts[1:] += 1
    return starts


def beat_cycles(cfg: ArrayConfig, T: int, K: int, N: int, emit: bool = True
                ) -> dict[str, np.ndarray]:
    """Handshake cycle of every beat of every stream (no stalls), per the module docstring:
    ``{"cmd", "act", "weight", "params", "out"}`` -> int64 arrays in stream order (``out``
    empty for a job without ``emit``)."""
    til = tiling(cfg, T, K, N)
    starts = pass_starts(cfg, til)
    lens = til.pass_lengths()
    coords = til.pass_coords()
    # act: s_p + t for t < L_p, pass by pass
    first_beat = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    act = first_beat + np.arange(lens.sum())
    weight = (starts[:, None] + np.arange(cfg.rows)[None, :]).ravel()
    params = starts[(coords[:, 1] == 0) & (coords[:, 2] == 0)]
    last_k = coords[:, 2] == til.KT - 1
    out = act[np.repeat(last_k, lens)] + cfg.rows + cfg.cols + PIPELINE_TAIL
    if not emit:
        out = out[:0]
    return {"cmd": np.zeros(1, dtype=np.int64), "act": act, "weight": weight,
            "params": params, "out": out}


def gemm_cycles(cfg: ArrayConfig, T: int, K: int, N: int) -> int:
    """Total cycles of one GEMM job, closed form (no per-pass arrays)."""
    til = tiling(cfg, T, K, N)
    span = max(cfg.rows, cfg.cols)
    full = max(cfg.acc_depth, span)
    last_len = til.tile_len(til.TT - 1)
    last = max(last_len, span)
    per_group = (til.TT - 1) * full + last          # one nt's passes for a single kt
    total_periods = til.NT * til.KT * per_group
    # s_last = 1 + sum of all periods but the last; last beat at s_last + L_last - 1 + tail
    return total_periods - last + last_len + cfg.rows + cfg.cols + PIPELINE_TAIL
