"""The accelerator's documented transaction order: a job as the beats of each stream.

Streams (all ``amaranth.lib.stream`` style valid/ready; lanes are little-endian packed,
lane 0 in the least significant bits):

``cmd``     one beat per job: ``T, K, N, z_y, relu, accumulate, emit, load, raw`` (+ ``m, s``
            in per-tensor builds).
``weight``  ``cols`` lanes of ``w_bits`` (signed): for nt, for tt, for kt, for r in rows:
            ``W[kt*rows + r, nt*cols : nt*cols + cols]``. Lanes/rows past K or N are
            don't-care (the RTL masks them); :func:`job_beats` sends zeros.
``act``     ``rows`` lanes of ``a_bits``: for nt, for tt, for kt, for t in the T-tile:
            ``X[tt*D + t, kt*rows : kt*rows + rows]``. Lanes past K are don't-care.
``params``  one beat per n-tile: ``bias`` (``cols`` x ``acc_bits`` signed) and, per-channel,
            ``m`` (``cols`` x ``mult_bits``) and ``s`` (``cols`` x 6). Lanes past N: don't-care;
            ``bias`` is don't-care in an ``accumulate`` or ``load`` job, ``m, s`` in one
            without ``emit`` or with ``raw``.
``psum_in`` ``cols`` lanes of ``acc_bits`` (signed), only in a ``load`` job: for nt, for t in
            0..T-1: ``PSUM[t, nt*cols : nt*cols + cols]`` (the starting sums); lanes past N are
            don't-care (:func:`job_beats` sends 0). Beat ``(nt, t)`` is consumed in the
            accumulate cycle of output vector ``(nt, t)``'s first K pass.
``out``     ``cols`` lanes of ``a_bits``: for nt, for t in 0..T-1:
            ``Y[t, nt*cols : nt*cols + cols]``; lanes past N are 0. No beats without ``emit``
            or with ``raw``.
``psum_out`` ``cols`` lanes of ``acc_bits`` (signed), only in a ``raw`` job, instead of
            ``out``, in the same order and cycles: the final sums
            ``wrap(start + X @ W, acc_bits)``; lanes past N are 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .config import ArrayConfig
from .job import GemmJob
from .schedule import tiling

__all__ = ["JobBeats", "job_beats", "out_beats_to_matrix", "matrix_to_beats", "pack_lanes",
           "unpack_lanes", "cmd_fields", "pack_cmd", "params_fields", "pack_params",
           "pack_psum", "unpack_psum", "scramble_dont_cares"]


@dataclass(frozen=True)
class JobBeats:
    """Every beat of one job, per stream (rows in stream order, one row a beat's lanes)."""

    cmd: dict                 # T, K, N, z_y, relu, accumulate, emit, load, raw (+ m, s
                              # per-tensor)
    weight: np.ndarray        # [n_weight_beats, cols]
    act: np.ndarray           # [n_act_beats, rows]
    bias: np.ndarray          # [NT, cols]
    m: np.ndarray | None      # [NT, cols] per-channel, else None
    s: np.ndarray | None      # [NT, cols] per-channel, else None
    out: np.ndarray           # [NT * T, cols] expected outputs ([0, cols] without emit or
                              # with raw)
    psum_in: np.ndarray       # [NT * T, cols] starting sums of a load job, else [0, cols]
    psum_out: np.ndarray      # [NT * T, cols] expected raw sums of a raw job, else [0, cols]


def _pad(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=np.int64)
    out[: a.shape[0], : a.shape[1]] = a
    return out


def job_beats(cfg: ArrayConfig, job: GemmJob, y: np.ndarray | None = None) -> JobBeats:
    """All beats of ``job`` in stream order. ``y`` ([T, N]) fills the expected ``out``."""
    til = tiling(cfg, job.T, job.K, job.N)
    R, C, D = cfg.rows, cfg.cols, cfg.acc_depth
    Kp, Np = til.KT * R, til.NT * C
    Tp = til.TT * D
    w = _pad(job.w, (Kp, Np))
    x = _pad(job.x, (Tp, Kp))
    # weight: [NT, TT, KT, R, C]
    wt = w.reshape(til.KT, R, til.NT, C).transpose(2, 0, 1, 3)        # [NT, KT, R, C]
    weight = np.broadcast_to(wt[:, None], (til.NT, til.TT, til.KT, R, C))
    # act: for nt, tt, kt, t<L(tt)
    xt = x.reshape(til.TT, D, til.KT, R).transpose(0, 2, 1, 3)        # [TT, KT, D, R]
    act_rows = []
    for tt in range(til.TT):
        L = til.tile_len(tt)
        act_rows.append(xt[tt, :, :L, :].reshape(-1, R))              # [KT*L, R]
    act_one = np.concatenate(act_rows, axis=0)
    act = np.tile(act_one, (til.NT, 1))
    bias = _pad(job.bias[None, :], (1, Np)).reshape(til.NT, C)
    cmd = {"T": job.T, "K": job.K, "N": job.N, "z_y": job.z_y, "relu": job.relu,
           "accumulate": job.accumulate, "emit": job.emit, "load": job.load, "raw": job.raw}
    if cfg.per_channel:
        m = _pad(job.m[None, :], (1, Np)).reshape(til.NT, C)
        s = _pad(job.s[None, :], (1, Np)).reshape(til.NT, C)
    else:
        m = s = None
        cmd["m"], cmd["s"] = int(job.m), int(job.s)
    n_vec = til.NT * job.T
    out = np.zeros((n_vec if job.emit and not job.raw else 0, C), dtype=np.int64)
    psum_out = np.zeros((n_vec if job.raw else 0, C), dtype=np.int64)
    if y is not None and job.emit:
        expected = matrix_to_beats(cfg, y)
        if job.raw:
            psum_out = expected
        else:
            out = expected
    psum_in = (matrix_to_beats(cfg, job.psum) if job.load
               else np.zeros((0, C), dtype=np.int64))
    return JobBeats(cmd=cmd, weight=weight.reshape(-1, C).copy(), act=act, bias=bias, m=m, s=s,
                    out=out, psum_in=psum_in, psum_out=psum_out)


def matrix_to_beats(cfg: ArrayConfig, mat) -> np.ndarray:
    """``[T, N]`` -> ``[NT * T, cols]`` beats in the ``out`` / ``psum_in`` / ``psum_out``
    order (for nt, for t), lanes past N 0. Inverse: :func:`out_beats_to_matrix`."""
    mat = np.asarray(mat, dtype=np.int64)
    if mat.ndim != 2:
        raise ValueError(f"expected a [T, N] matrix, got shape {mat.shape}")
    T, N = mat.shape
    NT = -(-N // cfg.cols)
    return (_pad(mat, (T, NT * cfg.cols)).reshape(T, NT, cfg.cols).transpose(1, 0, 2)
            .reshape(-1, cfg.cols))


def out_beats_to_matrix(cfg: ArrayConfig, beats: np.ndarray, T: int, N: int) -> np.ndarray:
    """Inverse of the ``out`` order (also ``psum_in`` / ``psum_out``): ``[NT * T, cols]``
    beats -> ``Y[T, N]``."""
    beats = np.asarray(beats, dtype=np.int64)
    NT = -(-N // cfg.cols)
    if beats.shape != (NT * T, cfg.cols):
        raise ValueError(f"expected {(NT * T, cfg.cols)} output beats, got {beats.shape}")
    return beats.reshape(NT, T, cfg.cols).transpose(1, 0, 2).reshape(T, NT * cfg.cols)[:, :N]


def pack_lanes(values, bits: int) -> int:
    """Pack integer lanes (lane 0 least significant) into one unsigned integer."""
    mask = (1 << bits) - 1
    word = 0
    for i, v in enumerate(np.asarray(values).ravel().tolist()):
        word |= (int(v) & mask) << (i * bits)
    return word


def unpack_lanes(word: int, lanes: int, bits: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`pack_lanes`."""
    mask = (1 << bits) - 1
    out = np.empty(lanes, dtype=np.int64)
    for i in range(lanes):
        v = (int(word) >> (i * bits)) & mask
        if signed and v >> (bits - 1):
            v -= 1 << bits
        out[i] = v
    return out


# ---- payload bit layouts (the RTL's StructLayouts must match these, LSB first) ------------

def cmd_fields(cfg: ArrayConfig) -> list[tuple[str, int, bool]]:
    """``cmd`` payload fields ``(name, bits, signed)``, least significant first."""
    fields = [("T", cfg.dim_bits, False), ("K", cfg.dim_bits, False), ("N", cfg.dim_bits, False),
              ("z_y", cfg.a_bits, cfg.a_signed), ("relu", 1, False), ("accumulate", 1, False),
              ("emit", 1, False), ("load", 1, False), ("raw", 1, False)]
    if not cfg.per_channel:
        fields += [("m", cfg.mult_bits, False), ("s", 6, False)]
    return fields


def pack_cmd(cfg: ArrayConfig, cmd: dict) -> int:
    """Pack a ``JobBeats.cmd`` dict into the ``cmd`` payload integer."""
    word, shift = 0, 0
    for name, bits, _signed in cmd_fields(cfg):
        word |= (int(cmd[name]) & ((1 << bits) - 1)) << shift
        shift += bits
    return word


def params_fields(cfg: ArrayConfig) -> list[tuple[str, int, bool]]:
    """``params`` payload arrays ``(name, lane_bits, signed)``, each ``cols`` lanes,
    least significant first."""
    fields = [("bias", cfg.acc_bits, True)]
    if cfg.per_channel:
        fields += [("m", cfg.mult_bits, False), ("s", 6, False)]
    return fields


def pack_params(cfg: ArrayConfig, beats: JobBeats, nt: int) -> int:
    """Pack the ``params`` beat of n-tile ``nt``."""
    arrays = {"bias": beats.bias, "m": beats.m, "s": beats.s}
    word, shift = 0, 0
    for name, bits, _signed in params_fields(cfg):
        word |= pack_lanes(arrays[name][nt], bits) << shift
        shift += bits * cfg.cols
    return word


def pack_psum(cfg: ArrayConfig, beat) -> int:
    """Pack one ``psum_in`` / ``psum_out`` beat (``cols`` signed ``acc_bits`` lanes)."""
    beat = np.asarray(beat)
    if beat.shape != (cfg.cols,):
        raise ValueError(f"a psum beat has {cfg.cols} lanes, got shape {beat.shape}")
    return pack_lanes(beat, cfg.acc_bits)


def unpack_psum(cfg: ArrayConfig, word: int) -> np.ndarray:
    """Inverse of :func:`pack_psum`: ``cols`` lanes, sign-extended from ``acc_bits``."""
    return unpack_lanes(word, cfg.cols, cfg.acc_bits, True)


# ---- don't-care lanes and fields --------------------------------------------------------

def scramble_dont_cares(cfg: ArrayConfig, beats: JobBeats,
                        rng: np.random.Generator) -> JobBeats:
    """``beats`` with every don't-care lane and field filled with random in-range values:
    the machine (RTL or model) must mask or ignore them.

    Scrambled: ``act`` lanes past K; ``weight`` rows past K and lanes past N; ``params``
    lanes (``bias``, per-channel ``m, s``) past N; ``psum_in`` lanes past N; all of
    ``bias`` in a ``load`` job; in a ``raw`` job all of ``m, s`` (per-channel lanes or the
    per-tensor ``cmd`` fields) and ``z_y``, and ``relu`` inverted.

    Parameters
    ----------
    cfg : ArrayConfig
        The machine the beats are for.
    beats : JobBeats
        One job's beats, e.g. from :func:`job_beats`.
    rng : numpy.random.Generator
        Source of the random values.

    Returns
    -------
    JobBeats
        A copy with the don't-cares replaced; the beats that matter are unchanged.
    """
    T, K, N = (int(beats.cmd[k]) for k in ("T", "K", "N"))
    til = tiling(cfg, T, K, N)
    R, C = cfg.rows, cfg.cols
    kt_act = np.concatenate([np.full(til.tile_len(tt), kt) for _nt in range(til.NT)
                             for tt in range(til.TT) for kt in range(til.KT)])
    dc_act = kt_act[:, None] * R + np.arange(R)[None, :] >= K
    coords = [(nt, kt) for nt in range(til.NT) for _tt in range(til.TT) for kt in range(til.KT)]
    nt_w = np.repeat([c[0] for c in coords], R)
    kt_w = np.repeat([c[1] for c in coords], R)
    row_w = np.tile(np.arange(R), len(coords))
    dc_w = (kt_w * R + row_w >= K)[:, None] | (nt_w[:, None] * C + np.arange(C)[None, :] >= N)
    dc_p = np.arange(til.NT)[:, None] * C + np.arange(C)[None, :] >= N

    def fill(arr, mask, lo, hi):
        arr = np.array(arr, dtype=np.int64)
        arr[mask] = rng.integers(lo, hi, endpoint=True, size=int(mask.sum()))
        return arr

    load, raw = bool(beats.cmd["load"]), bool(beats.cmd["raw"])
    every = np.ones_like(dc_p)
    changes = {"act": fill(beats.act, dc_act, *cfg.a_range),
               "weight": fill(beats.weight, dc_w, *cfg.w_range),
               "bias": fill(beats.bias, every if load else dc_p, *cfg.acc_range)}
    if cfg.per_channel:
        changes["m"] = fill(beats.m, every if raw else dc_p, *cfg.mult_range)
        changes["s"] = fill(beats.s, every if raw else dc_p, 0, 63)
    if load:
        dc_in = np.repeat(dc_p, T, axis=0)           # beat nt*T + t has n-tile nt's lanes
        changes["psum_in"] = fill(beats.psum_in, dc_in, *cfg.acc_range)
    if raw:
        cmd = dict(beats.cmd, relu=not beats.cmd["relu"],
                   z_y=int(rng.integers(*cfg.a_range, endpoint=True)))
        if not cfg.per_channel:
            cmd.update(m=int(rng.integers(*cfg.mult_range, endpoint=True)),
                       s=int(rng.integers(0, 63, endpoint=True)))
        changes["cmd"] = cmd
    return replace(beats, **changes)
