"""Stream transaction order and payload bit layouts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qaccel.sim.config import ArrayConfig
from qaccel.sim.job import GemmJob, random_job
from qaccel.sim.reference import reference_gemm
from qaccel.sim.schedule import tiling
from qaccel.sim.streams import (
    cmd_fields,
    job_beats,
    matrix_to_beats,
    out_beats_to_matrix,
    pack_cmd,
    pack_lanes,
    pack_params,
    pack_psum,
    params_fields,
    unpack_lanes,
    unpack_psum,
)


@st.composite
def cases(draw):
    cfg = ArrayConfig(rows=draw(st.integers(2, 7)), cols=draw(st.integers(2, 7)),
                      acc_depth=draw(st.integers(1, 9)), per_channel=draw(st.booleans()),
                      a_signed=draw(st.booleans()))
    T, K, N = (draw(st.integers(1, 25)) for _ in range(3))
    return cfg, random_job(cfg, T, K, N, np.random.default_rng(draw(st.integers(0, 2**31))))


@given(cases())
@settings(max_examples=80, deadline=None)
def test_beats_follow_documented_order(case):
    cfg, job = case
    R, C = cfg.rows, cfg.cols
    til = tiling(cfg, job.T, job.K, job.N)
    beats = job_beats(cfg, job)
    weight, act = [], []
    for nt, tt, kt in til.pass_coords().tolist():
        for r in range(R):
            k = kt * R + r
            weight.append([int(job.w[k, nt * C + c]) if k < job.K and nt * C + c < job.N
                           else 0 for c in range(C)])
        for t in range(til.tile_len(tt)):
            row = tt * cfg.acc_depth + t
            act.append([int(job.x[row, kt * R + r]) if kt * R + r < job.K else 0
                        for r in range(R)])
    assert beats.weight.tolist() == weight
    assert beats.act.tolist() == act
    for nt in range(til.NT):
        lanes = range(nt * C, nt * C + C)
        assert beats.bias[nt].tolist() == [int(job.bias[n]) if n < job.N else 0 for n in lanes]
        if cfg.per_channel:
            assert beats.m[nt].tolist() == [int(job.m[n]) if n < job.N else 0 for n in lanes]
            assert beats.s[nt].tolist() == [int(job.s[n]) if n < job.N else 0 for n in lanes]
    if cfg.per_channel:
        assert "m" not in beats.cmd
    else:
        assert beats.m is None and (beats.cmd["m"], beats.cmd["s"]) == (int(job.m), int(job.s))
    assert {k: beats.cmd[k] for k in ("T", "K", "N", "z_y", "relu", "load", "raw")} == \
        {"T": job.T, "K": job.K, "N": job.N, "z_y": job.z_y, "relu": job.relu,
         "load": False, "raw": False}
    assert beats.psum_in.shape == beats.psum_out.shape == (0, C)


@given(cases())
@settings(max_examples=80, deadline=None)
def test_out_beats_round_trip(case):
    cfg, job = case
    y = reference_gemm(cfg, job).y
    out = job_beats(cfg, job, y).out
    til = tiling(cfg, job.T, job.K, job.N)
    assert out.shape == (til.NT * job.T, cfg.cols)
    # order: for nt, for t; lanes past N are 0
    for nt in range(til.NT):
        for t in (0, job.T - 1):
            n0, n1 = nt * cfg.cols, min(job.N, nt * cfg.cols + cfg.cols)
            beat = out[nt * job.T + t]
            assert beat[: n1 - n0].tolist() == y[t, n0:n1].tolist()
            assert not beat[n1 - n0:].any()
    np.testing.assert_array_equal(out_beats_to_matrix(cfg, out, job.T, job.N), y)


def test_out_beats_to_matrix_checks_shape():
    cfg = ArrayConfig(rows=2, cols=4)
    with pytest.raises(ValueError, match=r"expected \(6, 4\) output beats, got \(5, 4\)"):
        out_beats_to_matrix(cfg, np.zeros((5, 4)), 3, 5)


def test_expected_out_is_zero_without_y():
    cfg = ArrayConfig(rows=2, cols=2)
    beats = job_beats(cfg, random_job(cfg, 3, 3, 3, np.random.default_rng(0)))
    assert beats.out.shape == (6, 2) and not beats.out.any()


@given(st.lists(st.integers(-(1 << 20), (1 << 20) - 1), min_size=1, max_size=9),
       st.integers(2, 21), st.booleans())
@settings(max_examples=200, deadline=None)
def test_pack_unpack_lanes(values, bits, signed):
    word = pack_lanes(values, bits)
    assert 0 <= word < 1 << (bits * len(values))
    for i, v in enumerate(values):
        assert (word >> (i * bits)) & ((1 << bits) - 1) == v & ((1 << bits) - 1)
    back = unpack_lanes(word, len(values), bits, signed)
    mod = 1 << bits
    for v, b in zip(values, back.tolist()):
        assert (v - b) % mod == 0
        assert (-(mod >> 1) <= b < mod >> 1) if signed else (0 <= b < mod)


def field_values(word: int, fields) -> dict[str, int]:
    """Slice a payload word into its fields, LSB first, with sign extension."""
    out, shift = {}, 0
    for name, bits, signed in fields:
        v = (word >> shift) & ((1 << bits) - 1)
        out[name] = v - (1 << bits) if signed and v >> (bits - 1) else v
        shift += bits
    assert word >> shift == 0
    return out


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("a_signed", [False, True])
def test_cmd_layout(per_channel, a_signed):
    cfg = ArrayConfig(rows=3, cols=5, a_bits=6, a_signed=a_signed, mult_bits=11,
                      per_channel=per_channel, dim_bits=10)
    names = [f[0] for f in cmd_fields(cfg)]
    assert names == ["T", "K", "N", "z_y", "relu", "accumulate", "emit", "load", "raw"] + (
        [] if per_channel else ["m", "s"])
    widths = {f[0]: f[1] for f in cmd_fields(cfg)}
    assert widths["T"] == widths["K"] == widths["N"] == 10 and widths["z_y"] == 6
    assert widths.get("m", 11) == 11 and widths.get("s", 6) == 6
    cmd = {"T": 1023, "K": 5, "N": 700, "z_y": -32 if a_signed else 63, "relu": True,
           "accumulate": True, "emit": False, "load": False, "raw": True, "m": 2047, "s": 63}
    word = pack_cmd(cfg, cmd)
    got = field_values(word, cmd_fields(cfg))
    assert got == {k: cmd[k] for k in names}
    # the first three fields sit at fixed offsets: T at 0, K at dim_bits, N at 2 * dim_bits
    assert word & 1023 == 1023 and (word >> 10) & 1023 == 5 and (word >> 20) & 1023 == 700
    # load, raw: the two bits right after emit (30 + z_y + relu + accumulate + emit)
    flags = word >> (30 + 6 + 3)
    assert flags & 3 == 0b10
    assert (pack_cmd(cfg, {**cmd, "load": True, "raw": False}) >> 39) & 3 == 0b01


@pytest.mark.parametrize("per_channel", [False, True])
def test_params_layout(per_channel):
    cfg = ArrayConfig(rows=2, cols=3, w_bits=4, a_bits=4, acc_bits=12, mult_bits=7,
                      per_channel=per_channel)
    rng = np.random.default_rng(2)
    job = random_job(cfg, 2, 2, 5, rng)                # N = 5: two n-tiles, the last partial
    beats = job_beats(cfg, job)
    fields = params_fields(cfg)
    assert [f[0] for f in fields] == ["bias"] + (["m", "s"] if per_channel else [])
    total_bits = sum(bits * cfg.cols for _n, bits, _s in fields)
    for nt in range(2):
        word = pack_params(cfg, beats, nt)
        assert 0 <= word < 1 << total_bits
        shift = 0
        for name, bits, signed in fields:
            lanes = unpack_lanes(word >> shift, cfg.cols, bits, signed)
            np.testing.assert_array_equal(lanes, getattr(beats, name)[nt], err_msg=name)
            shift += bits * cfg.cols
    # bias lane 0 of n-tile 1 is channel 3, in the word's least significant acc_bits
    low = pack_params(cfg, beats, 1) & ((1 << cfg.acc_bits) - 1)
    assert low == int(job.bias[3]) & ((1 << cfg.acc_bits) - 1)


def with_psum(cfg, job, rng, raw):
    """``job`` as a load job (random starting sums over the whole accumulator range)."""
    psum = rng.integers(*cfg.acc_range, endpoint=True, size=(job.T, job.N))
    return GemmJob.create(cfg, job.x, job.w, job.bias, job.m, job.s, job.z_y, job.relu,
                          psum=psum, raw=raw)


@given(cases(), st.booleans(), st.integers(0, 2**31))
@settings(max_examples=80, deadline=None)
def test_psum_beats_follow_documented_order(case, raw, seed):
    """psum_in: for nt, for t: PSUM[t, nt*cols : nt*cols + cols], lanes past N 0; a raw job's
    expected psum_out holds the reference sums in the same order and no out beats."""
    cfg, job = case
    C = cfg.cols
    job = with_psum(cfg, job, np.random.default_rng(seed), raw)
    y = reference_gemm(cfg, job).y
    beats = job_beats(cfg, job, y)
    assert beats.cmd["load"] is True and beats.cmd["raw"] is raw
    til = tiling(cfg, job.T, job.K, job.N)
    want = [[int(job.psum[t, n]) if n < job.N else 0 for n in range(nt * C, nt * C + C)]
            for nt in range(til.NT) for t in range(job.T)]
    assert beats.psum_in.tolist() == want
    np.testing.assert_array_equal(out_beats_to_matrix(cfg, beats.psum_in, job.T, job.N),
                                  job.psum)
    if raw:
        assert beats.out.shape == (0, C)
        assert beats.psum_out.shape == (til.NT * job.T, C)
        np.testing.assert_array_equal(out_beats_to_matrix(cfg, beats.psum_out, job.T, job.N),
                                      y)
        np.testing.assert_array_equal(beats.psum_out, matrix_to_beats(cfg, y))
    else:
        assert beats.psum_out.shape == (0, C)
        np.testing.assert_array_equal(beats.out, matrix_to_beats(cfg, y))
    # every psum beat survives packing at acc_bits, lane 0 in the least significant bits
    for beat in np.concatenate([beats.psum_in, beats.psum_out]):
        word = pack_psum(cfg, beat)
        assert 0 <= word < 1 << (cfg.acc_bits * C)
        assert word & ((1 << cfg.acc_bits) - 1) == int(beat[0]) & ((1 << cfg.acc_bits) - 1)
        np.testing.assert_array_equal(unpack_psum(cfg, word), beat)


def test_psum_beat_helpers_check_shapes():
    cfg = ArrayConfig(rows=2, cols=3)
    with pytest.raises(ValueError, match=r"a psum beat has 3 lanes, got shape \(2,\)"):
        pack_psum(cfg, [1, 2])
    with pytest.raises(ValueError, match=r"expected a \[T, N\] matrix, got shape \(4,\)"):
        matrix_to_beats(cfg, np.zeros(4))
    # the most negative accumulator value round-trips through the sign extension
    lo, hi = cfg.acc_range
    np.testing.assert_array_equal(unpack_psum(cfg, pack_psum(cfg, [lo, hi, -1])), [lo, hi, -1])
