"""One quantized GEMM job for the accelerator, validated against an :class:`ArrayConfig`.

``Y[T x N] = requant(X[T x K] @ W[K x N] + bias)`` with the SPEC's arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arith import int_range, output_bounds, wrap
from .config import ArrayConfig
from .validate import check_bool, check_int, fail

__all__ = ["GemmJob", "random_job", "split_k", "merge_k", "spill_chain"]


def _as_int_array(name: str, value, ndim: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer)
                                   or np.issubdtype(arr.dtype, np.bool_)):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) \
                and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise fail("GemmJob", name, "an integer array", None, shown=f"dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.unsignedinteger) and arr.size \
            and int(arr.max()) > np.iinfo(np.int64).max:
        raise fail("GemmJob", name, "within int64", int(arr.max()))
    if arr.ndim != ndim:
        raise fail("GemmJob", name, f"{ndim}-D", None, shown=f"shape {arr.shape}")
    return arr.astype(np.int64)


def _check_range(name: str, arr: np.ndarray, lo: int, hi: int, what: str) -> None:
    if arr.size and (arr.min() < lo or arr.max() > hi):
        bad = arr.min() if arr.min() < lo else arr.max()
        raise fail("GemmJob", name, f"in [{lo}, {hi}]", int(bad), what)


def _check_shape(name: str, arr: np.ndarray, shape: tuple, why: str = "") -> None:
    if arr.shape != shape:
        raise fail("GemmJob", name, f"of shape {shape}", arr.shape, why)


@dataclass(frozen=True, eq=False)
class GemmJob:
    """A quantized GEMM: activations ``x[T, K]``, weights ``w[K, N]``, ``bias[N]``
    (already holding the zero-point term), requantizer ``m``/``s`` (``[N]`` per channel,
    scalars per tensor), output zero-point ``z_y`` and fused ``relu``.

    K-split chains: ``accumulate`` starts every sum from the accumulator bank (what the
    previous job of the chain left there) instead of ``bias``; ``emit = False`` keeps the
    final sums in the bank and sends no output. A *chained* job (either flag) must fit the
    bank whole, ``ceil(N / cols) * T <= acc_depth``: output ``(t, n)`` of n-tile ``nt`` lives
    in entry ``nt * T + t``. :func:`split_k` cuts a job into such a chain.

Partial-sum spill (chains whose sums do not fit the bank pass them through the host at
``acc_bits``): ``psum`` (``[T, N]``, each in ``cfg.acc_range``) makes the job *load*: every
output's first K pass starts from ``psum[t, n]`` instead of ``bias[n]`` (``bias`` is then
don't-care); ``load`` and ``accumulate`` exclude each other. ``raw`` (requires ``emit``)
makes the final sums ``wrap(start + x @ w, acc_bits)`` the job's outputs, not requantized
(``m, s, z_y, relu`` don't-care). Neither flag makes a job chained.

    Build it with :meth:`create`, which validates every field against the configuration.
    """

    x: np.ndarray
    w: np.ndarray
    bias: np.ndarray
    m: np.ndarray
    s: np.ndarray
    z_y: int
    relu: bool
    accumulate: bool = False
    emit: bool = True
    psum: np.ndarray | None = None
    raw: bool = False

    @property
    def load(self) -> bool:
        """Starts every sum from ``psum`` (the host's partial sums) instead of ``bias``."""
        return self.psum is not None

    @property
    def chained(self) -> bool:
        """Keeps or resumes partial sums in the accumulator bank (K-split chain)."""
        return self.accumulate or not self.emit

    @property
    def T(self) -> int:
        return self.x.shape[0]

    @property
    def K(self) -> int:
        return self.x.shape[1]

    @property
    def N(self) -> int:
        return self.w.shape[1]

    @classmethod
    def create(cls, cfg: ArrayConfig, x, w, bias, m, s, z_y: int = 0,
               relu: bool = False, accumulate: bool = False, emit: bool = True,
               psum=None, raw: bool = False) -> GemmJob:
        """Validate and freeze a job; raises ``ValueError`` naming the field and range."""
        x = _as_int_array("x", x, 2)
        w = _as_int_array("w", w, 2)
        bias = _as_int_array("bias", bias, 1)
        T, K = x.shape
        K2, N = w.shape
        for name, v in (("T", T), ("K", K), ("N", N)):
            check_int("GemmJob", name, v, 1, cfg.max_dim, why=f"dim_bits={cfg.dim_bits}")
        _check_shape("w", w, (K, N), f"K = {K} rows to match x of shape {x.shape}")
        _check_shape("bias", bias, (N,))
        _check_range("x", x, *cfg.a_range,
                     f"{'signed' if cfg.a_signed else 'unsigned'} {cfg.a_bits}-bit activations")
        _check_range("w", w, *cfg.w_range, f"signed {cfg.w_bits}-bit weights")
        _check_range("bias", bias, *cfg.acc_range, f"{cfg.acc_bits}-bit accumulator")
        m_shape = (N,) if cfg.per_channel else ()
        kind = "per-channel" if cfg.per_channel else "per-tensor"
        m_arr = np.asarray(m)
        s_arr = np.asarray(s)
        if not cfg.per_channel:    # a one-element vector is a per-tensor scalar too
            m_arr = m_arr.reshape(()) if m_arr.shape == (1,) else m_arr
            s_arr = s_arr.reshape(()) if s_arr.shape == (1,) else s_arr
        for name, arr in (("m", m_arr), ("s", s_arr)):
            _check_shape(name, arr, m_shape, f"{kind} requantization")
        m_arr = _as_int_array("m", m_arr.reshape(-1), 1).reshape(m_shape)
        s_arr = _as_int_array("s", s_arr.reshape(-1), 1).reshape(m_shape)
        _check_range("m", m_arr, *cfg.mult_range, f"unsigned {cfg.mult_bits}-bit multiplier")
        _check_range("s", s_arr, 0, 63, "shift")
        z_y = check_int("GemmJob", "z_y", z_y, *int_range(cfg.a_bits, cfg.a_signed),
                        why="output type")
        relu = check_bool("GemmJob", "relu", relu)
        accumulate = check_bool("GemmJob", "accumulate", accumulate)
        emit = check_bool("GemmJob", "emit", emit)
        raw = check_bool("GemmJob", "raw", raw)
        if raw and not emit:
            raise fail("GemmJob", "raw", "False without emit", raw,
                       "raw sums are the emitted outputs: raw requires emit=True")
        if psum is not None:
            if accumulate:
                raise fail("GemmJob", "psum", "None in an accumulate job", None,
                           "load (psum given) and accumulate both set the starting sums",
                           shown="an array")
            psum = _as_int_array("psum", psum, 2)
            _check_shape("psum", psum, (T, N), "starting sums [T, N]")
            _check_range("psum", psum, *cfg.acc_range, f"{cfg.acc_bits}-bit accumulator")
            psum.setflags(write=False)
        if accumulate or not emit:
            entries = -(-N // cfg.cols) * T
            if entries > cfg.acc_depth:
                raise fail("GemmJob", "T", f"at most acc_depth / ceil(N / cols) = "
                           f"{cfg.acc_depth // -(-N // cfg.cols)}", T,
                           f"a chained job (accumulate or not emit) keeps all "
                           f"ceil(N / cols) * T = {entries} sums in the {cfg.acc_depth}-entry "
                           f"accumulator bank")
        for arr in (x, w, bias, m_arr, s_arr):
            arr.setflags(write=False)
        return cls(x, w, bias, m_arr, s_arr, z_y, relu, accumulate, emit, psum, raw)

    def for_config(self, cfg: ArrayConfig) -> GemmJob:
        """This job validated for the ``cfg`` machine (e.g. one of an integer network's
        layer GEMMs, from :func:`sim.executor.layer_gemms`, for the cycle model or the RTL).

        A per-tensor ``(M, S)`` runs on a per-channel machine as the same value on every
        channel; per-channel values run on a per-tensor machine only if they are all equal.
        """
        m, s = np.asarray(self.m), np.asarray(self.s)
        if cfg.per_channel:
            m, s = np.broadcast_to(m, (self.N,)), np.broadcast_to(s, (self.N,))
        elif m.ndim:
            for name, arr in (("m", m), ("s", s)):
                if arr.size and not np.all(arr == arr.flat[0]):
                    raise fail("GemmJob", name, "one value for every channel", arr.tolist(),
                               "a per-tensor machine: ArrayConfig.per_channel=False")
            m, s = m.reshape(-1)[:1], s.reshape(-1)[:1]
        return GemmJob.create(cfg, self.x, self.w, self.bias, m, s, z_y=self.z_y,
                              relu=self.relu, accumulate=self.accumulate, emit=self.emit,
                              psum=self.psum, raw=self.raw)

    def bounds(self, cfg: ArrayConfig) -> tuple[int, int]:
        """The requantizer clamp ``(lo, hi)`` for this job."""
        return output_bounds(cfg.a_bits, cfg.a_signed, self.z_y, self.relu)

    def m_per_channel(self) -> np.ndarray:
        return np.broadcast_to(self.m, (self.N,))

    def s_per_channel(self) -> np.ndarray:
        return np.broadcast_to(self.s, (self.N,))


def split_k(cfg: ArrayConfig, job: GemmJob, k_tile: int) -> list[GemmJob]:
    """``job`` as a K-split chain: one job per ``k_tile`` rows of ``w`` (the last may be
    shorter), the first starting from ``bias``, the others accumulating, only the last
    emitting. Run back to back on one machine they give ``job``'s outputs exactly (wrapping
    sums are modular). ``k_tile >= K`` returns ``[job]``; ``job`` must be unchained and
    fit the bank (``ceil(N / cols) * T <= acc_depth``) when it is split. A loading job's
    ``psum`` goes to the first job of the chain, ``raw`` to the last."""
    k_tile = check_int("split_k", "k_tile", k_tile, 1)
    if job.chained:
        raise fail("split_k", "job", "an unchained job (accumulate=False, emit=True)", None,
                   shown="a chained job")
    if k_tile >= job.K:
        return [job]
    starts = range(0, job.K, k_tile)
    return [GemmJob.create(cfg, job.x[:, k0:k0 + k_tile], job.w[k0:k0 + k_tile], job.bias,
                           job.m, job.s, z_y=job.z_y, relu=job.relu, accumulate=k0 > 0,
                           emit=k0 + k_tile >= job.K, psum=job.psum if k0 == 0 else None,
                           raw=job.raw and k0 + k_tile >= job.K) for k0 in starts]


def spill_chain(cfg: ArrayConfig, job: GemmJob, k_tile: int, run, owner: str = "spill_chain"
                ) -> list[tuple[GemmJob, object]]:
    """Run ``job`` as a partial-sum spill chain on ``run(cfg, sub_job) -> result`` (the
    sums in ``result.y``): one job per ``k_tile`` rows of ``w`` (the last may be shorter),
    with ``bias, m, s, z_y, relu`` of ``job``; the first loads ``job.psum`` (or starts from
    ``bias``), each later one loads the sums the job before it returned; every job but the
    last is ``raw``, the last keeps ``job.raw`` -- so the last result is ``job``'s.
    Returns ``(sub_job, result)`` pairs in chain order; ``ValueError`` naming ``owner``'s
    ``k_tile`` unless it is an integer ``>= 1`` (``>= K``: the one job)."""
    k_tile = check_int(owner, "k_tile", k_tile, 1)
    out, psum = [], job.psum
    for k0 in range(0, job.K, k_tile):
        last = k0 + k_tile >= job.K
        sub = GemmJob.create(cfg, job.x[:, k0:k0 + k_tile], job.w[k0:k0 + k_tile], job.bias,
                             job.m, job.s, z_y=job.z_y, relu=job.relu, psum=psum,
                             raw=job.raw or not last)
        res = run(cfg, sub)
        out.append((sub, res))
        psum = res.y
    return out


def merge_k(cfg: ArrayConfig, chain) -> GemmJob:
    """The single job a K-split chain computes (inverse of :func:`split_k`): ``x`` and
    ``w`` concatenated along K, ``bias`` and ``psum`` of the first job, ``m, s, z_y, relu,
    raw`` of the last. ``ValueError`` if ``chain`` does not start from bias and end
    emitting, with only accumulating jobs between."""
    chain = list(chain)
    if not chain:
        raise fail("merge_k", "chain", "at least one job", 0)
    flags = [(j.accumulate, j.emit) for j in chain]
    want = [(i > 0, i == len(chain) - 1) for i in range(len(chain))]
    if flags != want:
        raise fail("merge_k", "chain", f"(accumulate, emit) flags {want}", flags)
    last = chain[-1]
    return GemmJob.create(cfg, np.concatenate([j.x for j in chain], axis=1),
                          np.concatenate([j.w for j in chain], axis=0), chain[0].bias,
                          last.m, last.s, z_y=last.z_y, relu=last.relu, psum=chain[0].psum,
                          raw=last.raw)


def random_job(cfg: ArrayConfig, T: int, K: int, N: int, rng: np.random.Generator,
               *, extreme: bool = False, relu: bool | None = None) -> GemmJob:
    """A random valid job. ``extreme`` draws operands from the range ends, so the
    accumulator saturates its wrap and the requantizer hits both clamps."""
    alo, ahi = cfg.a_range
    wlo, whi = cfg.w_range
    if extreme:
        x = rng.choice(np.array([alo, ahi, alo + 1 if alo + 1 <= ahi else alo]), size=(T, K))
        w = rng.choice(np.array([wlo, whi, 0]), size=(K, N))
    else:
        x = rng.integers(alo, ahi, endpoint=True, size=(T, K))
        w = rng.integers(wlo, whi, endpoint=True, size=(K, N))
    clo, chi = cfg.acc_range
    bias_mag = min(chi, 1 << (cfg.w_bits + cfg.a_bits + 2))
    bias = rng.integers(max(clo, -bias_mag), bias_mag, endpoint=True, size=N)
    n_m = N if cfg.per_channel else 1
    m = rng.integers(0, (1 << cfg.mult_bits) - 1, endpoint=True, size=n_m)
    # shifts from the job's own accumulators: (max|acc| * M) >> S lands just around the
    # output range (+-1 bit at random), so outputs cover both clamps and the values between
    span = max(1, int(np.abs(wrap(x @ w + bias[None, :], cfg.acc_bits)).max(initial=0)))
    top = np.array([(span * max(int(mi), 1)).bit_length() for mi in m])
    s = np.clip(top - cfg.a_bits + rng.integers(-1, 2, size=n_m), 0, 63)
    if not cfg.per_channel:
        m, s = m[0], s[0]
    tmin, tmax = int_range(cfg.a_bits, cfg.a_signed)
    z_y = 0 if cfg.a_signed else int(rng.integers(tmin, tmax, endpoint=True))
    if relu is None:
        relu = bool(rng.integers(0, 2))
    return GemmJob.create(cfg, x, w, bias, m, s, z_y=z_y, relu=relu)
