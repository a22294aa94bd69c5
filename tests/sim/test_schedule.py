"""Pass schedule: tiling, pass order, starts recurrence and the gemm_cycles closed form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from qaccel.sim.config import ArrayConfig
from qaccel.sim.schedule import PIPELINE_TAIL, beat_cycles, gemm_cycles, pass_starts, tiling


def ceil_div(a, b):
    return -(-a // b)


def beats_by_recurrence(cfg: ArrayConfig, T: int, K: int, N: int) -> dict[str, list[int]]:
    """Walk every pass with the recurrence of the module docstring, in plain Python, and
    record the handshake cycle of every beat."""
    R, C, D = cfg.rows, cfg.cols, cfg.acc_depth
    beats = {"cmd": [0], "act": [], "weight": [], "params": [], "out": []}
    start = 1
    for _nt in range(ceil_div(N, C)):
        for tt in range(ceil_div(T, D)):
            L = min(D, T - tt * D)
            for kt in range(ceil_div(K, R)):
                if tt == 0 and kt == 0:
                    beats["params"].append(start)
                beats["act"] += [start + t for t in range(L)]
                beats["weight"] += [start + r for r in range(R)]
                if kt == ceil_div(K, R) - 1:
                    beats["out"] += [start + t + R + C + PIPELINE_TAIL for t in range(L)]
                start += max(L, R, C)
    return beats


def cycles_by_recurrence(cfg: ArrayConfig, T: int, K: int, N: int) -> int:
    return beats_by_recurrence(cfg, T, K, N)["out"][-1]


dims = st.integers(1, 300)


@given(st.integers(2, 40), st.integers(2, 40), st.integers(1, 80), dims, dims, dims)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
def test_closed_form_matches_recurrence(rows, cols, depth, T, K, N):
    cfg = ArrayConfig(rows=rows, cols=cols, acc_depth=depth)
    assume(tiling(cfg, T, K, N).passes <= 5000)      # the plain-Python walk stays quick
    assert gemm_cycles(cfg, T, K, N) == cycles_by_recurrence(cfg, T, K, N)


@given(st.integers(2, 12), st.integers(2, 12), st.integers(1, 20), st.integers(1, 60),
       st.integers(1, 60), st.integers(1, 60))
@settings(max_examples=200, deadline=None)
def test_beat_cycles_match_recurrence(rows, cols, depth, T, K, N):
    cfg = ArrayConfig(rows=rows, cols=cols, acc_depth=depth)
    got = beat_cycles(cfg, T, K, N)
    want = beats_by_recurrence(cfg, T, K, N)
    assert set(got) == set(want)
    for stream, cycles in want.items():
        np.testing.assert_array_equal(got[stream], cycles, err_msg=stream)
    til = tiling(cfg, T, K, N)
    assert len(got["out"]) == til.NT * T and len(got["params"]) == til.NT
    # a job without emit: the same beats in, no beats out
    quiet = beat_cycles(cfg, T, K, N, emit=False)
    assert quiet["out"].size == 0
    for stream in ("cmd", "act", "weight", "params"):
        np.testing.assert_array_equal(quiet[stream], got[stream], err_msg=stream)


@given(st.integers(2, 12), st.integers(2, 12), st.integers(1, 20), dims, dims, dims)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
def test_tiling_and_pass_arrays(rows, cols, depth, T, K, N):
    cfg = ArrayConfig(rows=rows, cols=cols, acc_depth=depth)
    til = tiling(cfg, T, K, N)
    assume(til.passes <= 5000)
    assert (til.NT, til.TT, til.KT) == (ceil_div(N, cols), ceil_div(T, depth), ceil_div(K, rows))
    # tile lengths cover each dimension exactly once, partial tile last
    assert sum(til.tile_len(t) for t in range(til.TT)) == T
    assert sum(til.k_len(k) for k in range(til.KT)) == K
    assert sum(til.n_len(n) for n in range(til.NT)) == N
    assert all(til.tile_len(t) == depth for t in range(til.TT - 1))
    # pass order: nt outermost, kt innermost; pass_index inverts it
    coords = til.pass_coords()
    assert coords.shape == (til.passes, 3)
    expect = [(n, t, k) for n in range(til.NT) for t in range(til.TT) for k in range(til.KT)]
    assert [tuple(c) for c in coords.tolist()] == expect
    assert [til.pass_index(*c) for c in expect] == list(range(til.passes))
    lens = til.pass_lengths()
    assert lens.tolist() == [til.tile_len(t) for (_n, t, _k) in expect]
    starts = pass_starts(cfg, til)
    assert starts.dtype == np.int64 and starts[0] == 1
    assert np.all(np.diff(starts) == np.maximum(lens[:-1], max(rows, cols)))


def test_full_array_has_no_bubbles():
    """acc_depth >= max(R, C), full tiles: only the fill/drain R + C + 3 is exposed."""
    cfg = ArrayConfig(rows=4, cols=6, acc_depth=16)
    T, K, N = 48, 8, 12
    passes = (N // 6) * (T // 16) * (K // 4)
    assert gemm_cycles(cfg, T, K, N) == passes * 16 + 4 + 6 + PIPELINE_TAIL


def test_short_tiles_are_padded_to_array_span():
    cfg = ArrayConfig(rows=5, cols=3, acc_depth=2)
    # one pass of length 1 still takes max(1, 5, 3) = 5 cycles before the next starts
    assert gemm_cycles(cfg, 1, 5, 3) == 1 + 5 + 3 + PIPELINE_TAIL
    assert gemm_cycles(cfg, 1, 10, 3) == 5 + 1 + 5 + 3 + PIPELINE_TAIL


@pytest.mark.parametrize(("T", "K", "N", "name"), [(0, 1, 1, "T"), (1, -2, 1, "K"),
                                                    (1, 1, 1.5, "N"), (1, 1, None, "N")])
def test_tiling_rejects_bad_dimensions(T, K, N, name):
    with pytest.raises(ValueError, match=rf"GEMM\.{name} must be (an integer )?>= 1, not "):
        gemm_cycles(ArrayConfig(), T, K, N)
