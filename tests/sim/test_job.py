"""GemmJob.create validation and random_job."""

from __future__ import annotations

import numpy as np
import pytest
from qaccel.sim.config import ArrayConfig
from qaccel.sim.job import GemmJob, merge_k, random_job, split_k

PT = ArrayConfig(rows=4, cols=4, w_bits=4, a_bits=8, acc_bits=20, mult_bits=12)
PC = PT.replace(per_channel=True)
SIGNED = PT.replace(a_signed=True)


def make(cfg=PT, **over):
    T, K, N = 3, 5, 2
    args = {"x": np.zeros((T, K), int), "w": np.zeros((K, N), int), "bias": np.zeros(N, int),
            "m": np.ones(N, int) if cfg.per_channel else 1,
            "s": np.zeros(N, int) if cfg.per_channel else 0, "z_y": 0, "relu": False}
    args.update(over)
    return GemmJob.create(cfg, **args)


def test_valid_job_and_shapes():
    job = make()
    assert (job.T, job.K, job.N) == (3, 5, 2)
    assert job.x.dtype == np.int64 and not job.x.flags.writeable
    assert job.m.shape == () and job.m_per_channel().shape == (2,)
    assert make(PC).m.shape == (2,)


def test_inputs_are_not_frozen_in_place():
    x = np.zeros((3, 5), dtype=np.int64)
    make(x=x)
    assert x.flags.writeable


@pytest.mark.parametrize(("field", "value", "msg"), [
    ("x", np.full((3, 5), 256), r"GemmJob\.x must be in \[0, 255\] "
                                r"\(unsigned 8-bit activations\), not 256"),
    ("x", np.full((3, 5), -1), r"GemmJob\.x must be in \[0, 255\] .*not -1"),
    ("w", np.full((5, 2), 8), r"GemmJob\.w must be in \[-8, 7\] "
                              r"\(signed 4-bit weights\), not 8"),
    ("w", np.full((5, 2), -9), r"GemmJob\.w must be in \[-8, 7\] .*not -9"),
    ("bias", np.array([0, 1 << 19]), r"GemmJob\.bias must be in \[-524288, 524287\] "
                                     r"\(20-bit accumulator\), not 524288"),
    ("m", 4096, r"GemmJob\.m must be in \[0, 4095\] \(unsigned 12-bit multiplier\), "
                r"not 4096"),
    ("m", -1, r"GemmJob\.m must be in \[0, 4095\] .*not -1"),
    ("s", 64, r"GemmJob\.s must be in \[0, 63\] \(shift\), not 64"),
    ("s", -1, r"GemmJob\.s must be in \[0, 63\] \(shift\), not -1"),
    ("z_y", 256, r"GemmJob\.z_y must be in \[0, 255\] \(output type\), not 256"),
    ("z_y", -1, r"GemmJob\.z_y must be in \[0, 255\] .*not -1"),
    ("z_y", 1.0, r"GemmJob\.z_y must be an integer in \[0, 255\] .*not 1\.0"),
    ("relu", 1, r"GemmJob\.relu must be a bool, not 1"),
])
def test_values_out_of_range_are_rejected(field, value, msg):
    with pytest.raises(ValueError, match=msg):
        make(**{field: value})


def test_signed_activation_range():
    make(SIGNED, x=np.full((3, 5), -128), z_y=-128)
    with pytest.raises(ValueError, match=r"GemmJob\.x must be in \[-128, 127\] "
                                         r"\(signed 8-bit activations\), not 128"):
        make(SIGNED, x=np.full((3, 5), 128))


def test_range_ends_are_accepted():
    make(x=np.full((3, 5), 255), w=np.full((5, 2), -8), bias=np.array([-(1 << 19), (1 << 19) - 1]),
         m=4095, s=63, z_y=255, relu=True)
    make(x=np.zeros((3, 5)), w=np.full((5, 2), 7), m=0, s=0)


@pytest.mark.parametrize(("over", "msg"), [
    ({"x": np.zeros((3, 4), int)}, r"GemmJob\.w must be of shape \(4, 2\) \(K = 4 rows to match "
                                   r"x of shape \(3, 4\)\), not \(5, 2\)"),
    ({"bias": np.zeros(3, int)}, r"GemmJob\.bias must be of shape \(2,\), not \(3,\)"),
    ({"bias": np.zeros((1, 2), int)}, r"GemmJob\.bias must be 1-D, not shape \(1, 2\)"),
    ({"x": np.zeros(5, int)}, r"GemmJob\.x must be 2-D, not shape \(5,\)"),
    ({"w": np.zeros((5, 2, 1), int)}, r"GemmJob\.w must be 2-D, not shape \(5, 2, 1\)"),
    ({"m": np.ones(2, int)}, r"GemmJob\.m must be of shape \(\) \(per-tensor requantization\), "
                             r"not \(2,\)"),
    ({"s": np.zeros(2, int)}, r"GemmJob\.s must be of shape \(\) \(per-tensor requantization\), "
                              r"not \(2,\)"),
    ({"m": 1, "s": np.zeros(2, int)}, r"GemmJob\.s must be of shape \(\)"),
    ({"m": np.ones(1, int), "s": np.zeros(2, int)}, r"GemmJob\.s must be of shape \(\)"),
])
def test_mismatched_shapes_are_rejected(over, msg):
    with pytest.raises(ValueError, match=msg):
        make(**over)


@pytest.mark.parametrize(("over", "msg"), [
    ({"m": 1}, r"GemmJob\.m must be of shape \(2,\) \(per-channel requantization\), not \(\)"),
    ({"s": np.zeros(3, int)}, r"GemmJob\.s must be of shape \(2,\) \(per-channel "
                              r"requantization\), not \(3,\)"),
    ({"m": np.ones((2, 1), int)}, r"GemmJob\.m must be of shape \(2,\) .*not \(2, 1\)"),
])
def test_per_channel_shapes(over, msg):
    with pytest.raises(ValueError, match=msg):
        make(PC, **over)


def test_per_tensor_accepts_one_element_vectors_independently():
    for m, s in ((np.array([3]), 2), (3, np.array([2])), (np.array([3]), np.array([2]))):
        job = make(m=m, s=s)
        assert (job.m.shape, job.s.shape, int(job.m), int(job.s)) == ((), (), 3, 2)


@pytest.mark.parametrize(("dims", "name", "value"), [((0, 5, 2), "T", 0), ((3, 0, 2), "K", 0),
                                                     ((3, 5, 0), "N", 0)])
def test_empty_dimensions_are_rejected(dims, name, value):
    T, K, N = dims
    with pytest.raises(ValueError, match=rf"GemmJob\.{name} must be in \[1, 65535\] "
                                         rf"\(dim_bits=16\), not {value}"):
        make(x=np.zeros((T, K), int), w=np.zeros((K, N), int), bias=np.zeros(N, int))


def test_dimensions_above_dim_bits_are_rejected():
    cfg = PT.replace(dim_bits=4)
    with pytest.raises(ValueError, match=r"GemmJob\.T must be in \[1, 15\] \(dim_bits=4\), not 16"):
        make(cfg, x=np.zeros((16, 5), int))


@pytest.mark.parametrize("bad", [np.full((3, 5), 0.5), np.full((3, 5), np.nan),
                                 np.array([["a"] * 5] * 3), np.full((3, 5), None)])
def test_non_integer_values_are_rejected(bad):
    with pytest.raises(ValueError, match=r"GemmJob\.x must be an integer array, not dtype"):
        make(x=bad)


def test_integral_floats_are_accepted():
    job = make(x=np.full((3, 5), 7.0), m=3.0)
    assert job.x.dtype == np.int64 and int(job.x[0, 0]) == 7 and int(job.m) == 3


def test_huge_unsigned_values_are_not_wrapped_into_range():
    x = np.zeros((3, 5), dtype=np.uint64)
    x[0, 0] = np.uint64(1 << 63)
    with pytest.raises(ValueError, match=rf"GemmJob\.x must be within int64, not {1 << 63}"):
        make(x=x)


@pytest.mark.parametrize("cfg", [PT, PC, SIGNED, ArrayConfig(rows=3, cols=5, w_bits=2, a_bits=4)])
@pytest.mark.parametrize("extreme", [False, True])
def test_random_job_is_valid_and_in_range(cfg, extreme):
    rng = np.random.default_rng(11)
    job = random_job(cfg, 7, 9, 6, rng, extreme=extreme)
    assert (job.T, job.K, job.N) == (7, 9, 6)
    # re-creating validates every field against cfg
    GemmJob.create(cfg, job.x, job.w, job.bias, job.m, job.s, job.z_y, job.relu)
    if extreme:
        assert set(np.unique(job.w)) <= {*cfg.w_range, 0}
    if cfg.a_signed:
        assert job.z_y == 0


def test_random_job_is_reproducible_and_relu_forced():
    a = random_job(PC, 4, 4, 4, np.random.default_rng(5), relu=True)
    b = random_job(PC, 4, 4, 4, np.random.default_rng(5), relu=True)
    assert a.relu and b.relu
    for f in ("x", "w", "bias", "m", "s"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_chained_job_must_fit_the_bank():
    """A chained job keeps ceil(N / cols) * T sums in the acc_depth-entry bank."""
    cfg = PT.replace(acc_depth=5)
    x, w = np.zeros((3, 5), int), np.zeros((5, 6), int)
    args = {"x": x, "w": w, "bias": np.zeros(6, int), "m": 1, "s": 0}
    GemmJob.create(cfg, **args)                      # unchained: T-tiles reuse entries
    with pytest.raises(ValueError, match=r"GemmJob\.T must be at most acc_depth / "
                       r"ceil\(N / cols\) = 2 .*6 <= .*not 3|GemmJob\.T must be at most"):
        GemmJob.create(cfg, **args, emit=False)
    with pytest.raises(ValueError, match=r"GemmJob\.accumulate must be a bool, not 1"):
        GemmJob.create(cfg, **args, accumulate=1)
    job = GemmJob.create(cfg, x[:2], w, args["bias"], 1, 0, accumulate=True)
    assert job.chained and job.for_config(cfg).accumulate


def test_split_k_and_merge_k_round_trip():
    cfg = PC.replace(acc_depth=16)
    job = random_job(cfg, 4, 11, 6, np.random.default_rng(3))
    chain = split_k(cfg, job, 4)
    assert [(j.K, j.accumulate, j.emit) for j in chain] == [(4, False, False), (4, True, False),
                                                             (3, True, True)]
    back = merge_k(cfg, chain)
    for f in ("x", "w", "bias", "m", "s"):
        assert np.array_equal(getattr(back, f), getattr(job, f))
    assert split_k(cfg, job, 11) == [job]
    with pytest.raises(ValueError, match=r"merge_k\.chain must be \(accumulate, emit\) flags"):
        merge_k(cfg, chain[1:])
    with pytest.raises(ValueError, match=r"split_k\.job must be an unchained job"):
        split_k(cfg, chain[0], 2)


def test_psum_and_raw_validation_names_the_field():
    """Load (psum given): [T, N] sums within acc_range, never with accumulate; raw needs
    emit. Every refusal names the field."""
    psum = np.zeros((3, 2), int)
    job = make(psum=psum, raw=True)
    assert job.load and job.raw and not job.chained
    assert job.psum.dtype == np.int64 and not job.psum.flags.writeable and psum.flags.writeable
    assert not make().load and not make().raw
    lo, hi = PT.acc_range
    assert make(psum=np.array([[lo, hi]] * 3)).psum.tolist() == [[lo, hi]] * 3
    with pytest.raises(ValueError, match=r"GemmJob\.psum must be of shape \(3, 2\) "
                                         r"\(starting sums \[T, N\]\), not \(2, 3\)"):
        make(psum=np.zeros((2, 3), int))
    with pytest.raises(ValueError, match=r"GemmJob\.psum must be 2-D"):
        make(psum=np.zeros(6, int))
    with pytest.raises(ValueError, match=rf"GemmJob\.psum must be in \[{lo}, {hi}\] "
                                         r"\(20-bit accumulator\), not 524288"):
        make(psum=np.full((3, 2), hi + 1))
    with pytest.raises(ValueError, match=rf"GemmJob\.psum must be in \[{lo}, {hi}\] .*not "
                                         rf"{lo - 1}"):
        make(psum=np.full((3, 2), lo - 1))
    with pytest.raises(ValueError, match=r"GemmJob\.psum must be an integer array"):
        make(psum=np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match=r"GemmJob\.psum must be None in an accumulate job "
                                         r"\(load \(psum given\) and accumulate both set the "
                                         r"starting sums\), not an array"):
        make(psum=psum, accumulate=True)
    with pytest.raises(ValueError, match=r"GemmJob\.raw must be False without emit \(raw sums "
                                         r"are the emitted outputs: raw requires emit=True\), "
                                         r"not True"):
        make(raw=True, emit=False)
    with pytest.raises(ValueError, match=r"GemmJob\.raw must be a bool, not 1"):
        make(raw=1)
    # load without emit keeps its final sums in the bank: a chained job, bank-checked
    assert make(psum=psum, emit=False).chained
    # for_config keeps both
    again = job.for_config(PC)
    assert again.raw and np.array_equal(again.psum, psum)


def test_split_k_carries_psum_to_the_first_job_and_raw_to_the_last():
    cfg = PC.replace(acc_depth=16)
    rng = np.random.default_rng(8)
    base = random_job(cfg, 4, 11, 6, rng)
    psum = rng.integers(-1000, 1000, size=(4, 6))
    job = GemmJob.create(cfg, base.x, base.w, base.bias, base.m, base.s, psum=psum, raw=True)
    chain = split_k(cfg, job, 4)
    assert [(j.load, j.accumulate, j.emit, j.raw) for j in chain] == [
        (True, False, False, False), (False, True, False, False), (False, True, True, True)]
    assert np.array_equal(chain[0].psum, psum)
    back = merge_k(cfg, chain)
    assert back.raw and np.array_equal(back.psum, psum)
    for f in ("x", "w", "bias", "m", "s"):
        assert np.array_equal(getattr(back, f), getattr(job, f))
