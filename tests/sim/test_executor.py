"""sim.executor: integer layers against direct (loop) implementations of the SPEC."""

import math
from fractions import Fraction

import numpy as np
import pytest
from qaccel.sim import executor
from qaccel.sim.arith import quantize_multiplier
from qaccel.sim.config import ArrayConfig
from qaccel.sim.network import IntLayer, IntNetwork, QParams
from qaccel.sim.reference import reference_gemm
from test_network import _token_net, small_net


def _requant(acc, m, s, zy, lo, hi):
    """Python-int version of the SPEC requantizer (independent of sim.arith)."""
    r = (1 << (s - 1)) if s > 0 else 0
    return min(max(zy + ((acc * m + r) >> s), lo), hi)


def _direct_conv(x, layer, acc_bits):
    """Loop-nest conv: padding = z_x, per output channel requant, wrap to acc_bits."""
    B, C, H, W = x.shape
    w = layer.weight
    N, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), g = layer.stride, layer.padding, layer.groups
    zx = layer.in_q[0].zero_point
    xp = np.full((B, C, H + 2 * ph, W + 2 * pw), zx, dtype=np.int64)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    lo = layer.out_q.zero_point if layer.relu else layer.out_q.range[0]
    hi = layer.out_q.range[1]
    y = np.zeros((B, N, Ho, Wo), dtype=np.int64)
    half = 1 << (acc_bits - 1)
    for b in range(B):
        for n in range(N):
            grp = n // (N // g)
            m = int(layer.m[n if layer.per_channel else 0])
            s = int(layer.s[n if layer.per_channel else 0])
            for i in range(Ho):
                for j in range(Wo):
                    patch = xp[b, grp * cg:(grp + 1) * cg, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    acc = int(layer.bias[n]) + int((patch * w[n]).sum())
                    acc = ((acc + half) % (1 << acc_bits)) - half
                    y[b, n, i, j] = _requant(acc, m, s, layer.out_q.zero_point, lo, hi)
    return y


@pytest.mark.parametrize("per_channel", [False, True])
def test_conv_and_depthwise_match_direct_loops(per_channel):
    rng = np.random.default_rng(1)
    net = small_net(per_channel, rng)
    x = rng.integers(0, 256, size=(2, 2, 6, 6))
    res = executor.run(net, x, trace=True)
    y0 = _direct_conv(x, net.layers[0], net.acc_bits)
    assert np.array_equal(res.outputs[0], y0)
    assert np.array_equal(res.outputs[1], _direct_conv(y0, net.layers[1], net.acc_bits))
    # global average pool and linear
    gap = net.layers[2]
    acc = (res.outputs[1] - gap.in_q[0].zero_point).sum(axis=(2, 3))
    want = np.vectorize(lambda a: _requant(int(a), int(gap.m[0]), int(gap.s[0]),
                                           gap.out_q.zero_point, 0, 255))(acc)
    assert np.array_equal(res.outputs[2], want)
    fc = net.layers[3]
    acc = res.outputs[2] @ fc.weight.T + fc.bias
    want = np.vectorize(lambda a: _requant(int(a), int(fc.m[0]), int(fc.s[0]),
                                           fc.out_q.zero_point, 0, 255))(acc)
    assert np.array_equal(res.output, want)
    assert res.output.shape == (2, 3) and res.overflows == [0, 0, 0, 0]


def test_padding_uses_input_zero_point():
    """An all-z_x input equals real zero: with zero bias every output is exactly z_y,
    which only holds if the padded border is z_x too."""
    q_in, q_out = QParams(0.1, 77, 8, False), QParams(0.1, 40, 8, False)
    w = np.ones((1, 1, 3, 3), dtype=np.int64)
    m, s = quantize_multiplier(0.5, 16)
    layer = IntLayer("c", "conv2d", (-1,), (q_in,), q_out, weight=w,
                     bias=-77 * w.reshape(1, -1).sum(1), m=m, s=s, padding=1)
    net = IntNetwork((layer,), q_in, (1, 4, 4))
    y = executor.run(net, np.full((1, 1, 4, 4), 77))
    assert np.all(y == 40)


def test_layer_gemms_are_accelerator_jobs():
    rng = np.random.default_rng(3)
    net = small_net(True, rng)
    x = rng.integers(0, 256, size=(1, 2, 6, 6))
    cfg = ArrayConfig(w_bits=4, a_bits=8, per_channel=True, acc_bits=32, mult_bits=16)
    gemms = executor.layer_gemms(net, net.layers[0], x)
    assert len(gemms) == 1 and gemms[0].x.shape == (36, 18) and gemms[0].w.shape == (18, 4)
    y = reference_gemm(cfg, gemms[0].for_config(cfg)).y
    y_layer, _ = executor.run_layer(net, net.layers[0], [x])
    assert np.array_equal(y_layer, y.reshape(1, 6, 6, 4).transpose(0, 3, 1, 2))
    # the same job, per channel, on a per-channel machine
    assert np.array_equal(gemms[0].for_config(cfg).m, net.layers[0].m)
    # depthwise: one GEMM per group with K = 9, N = 1
    dw = executor.layer_gemms(net, net.layers[1], y_layer)
    assert len(dw) == 4 and all(g.w.shape == (9, 1) for g in dw)
    y_dw, _ = executor.run_layer(net, net.layers[1], [y_layer])
    got = np.concatenate([reference_gemm(cfg, g.for_config(cfg)).y for g in dw], axis=1)
    assert np.array_equal(got.reshape(1, 3, 3, 4).transpose(0, 3, 1, 2), y_dw)


def test_per_tensor_gemm_runs_on_either_machine():
    """A per-tensor layer GEMM is a scalar (M, S) job; a per-channel machine runs it with
    that value on every channel, a per-tensor machine as is; per-channel values that differ
    are refused by a per-tensor machine."""
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, size=(1, 2, 6, 6))
    pt_net, pc_net = small_net(False, rng), small_net(True, np.random.default_rng(6))
    job = executor.layer_gemms(pt_net, pt_net.layers[0], x)[0]
    assert job.m.shape == ()
    cfg = ArrayConfig(w_bits=4, a_bits=8, acc_bits=32, mult_bits=16)
    want, _ = executor.run_layer(pt_net, pt_net.layers[0], [x])
    for c in (cfg, cfg.replace(per_channel=True)):
        y = reference_gemm(c, job.for_config(c)).y
        assert np.array_equal(y.reshape(1, 6, 6, 4).transpose(0, 3, 1, 2), want)
    pc_job = executor.layer_gemms(pc_net, pc_net.layers[0], x)[0]
    assert len(set(pc_job.m.tolist())) > 1
    with pytest.raises(ValueError, match=r"GemmJob\.m must be one value for every channel"):
        pc_job.for_config(cfg)


def test_maxpool_add_relu_flatten_avgpool():
    rng = np.random.default_rng(4)
    qa, qb, qy = QParams(0.1, 5, 8, False), QParams(0.07, 0, 8, False), QParams(0.2, 3, 8, False)
    ra, rb = qa.scale / qy.scale, qb.scale / qy.scale
    S = 16
    M = np.array([round(ra * 2**S), round(rb * 2**S)])
    layers = (
        IntLayer("relu", "relu", (-1,), (qa,), qa),
        IntLayer("pool", "maxpool2d", (0,), (qa,), qa, kernel=2, stride=2),
        IntLayer("id", "avgpool2d", (-1,), (qa,), qb, kernel=2, stride=2,
                 m=np.array(quantize_multiplier(qa.scale / (4 * qb.scale), 16)[0]),
                 s=np.array(quantize_multiplier(qa.scale / (4 * qb.scale), 16)[1])),
        IntLayer("add", "add", (1, 2), (qa, qb), qy, relu=True, m=M, s=np.array([S])),
        IntLayer("flat", "flatten", (3,), (qy,), qy),
    )
    net = IntNetwork(layers, qa, (3, 4, 4))
    x = rng.integers(0, 256, size=(2, 3, 4, 4))
    res = executor.run(net, x, trace=True)
    xr = np.maximum(x, 5)
    assert np.array_equal(res.outputs[0], xr)
    mp = xr.reshape(2, 3, 2, 2, 2, 2).max(axis=(3, 5))
    assert np.array_equal(res.outputs[1], mp)
    real_avg = qa.scale * (x.reshape(2, 3, 2, 2, 2, 2) - 5).mean(axis=(3, 5))
    real_avg = np.clip(real_avg, 0, 255 * qb.scale)      # output range of qb
    assert np.abs(qb.dequantize(res.outputs[2]) - real_avg).max() <= qb.scale * 0.5 + 1e-9
    real_sum = qa.dequantize(mp) + qb.dequantize(res.outputs[2])
    want = np.clip(np.floor(real_sum / qy.scale + 0.5) + 3, 3, 255)
    assert np.abs(res.outputs[3] - want).max() <= 1
    assert np.mean(res.outputs[3] != want) < 0.05
    assert res.output.shape == (2, 12)


def test_run_validates_input():
    net = small_net()
    with pytest.raises(ValueError, match=r"executor\.run\.x_int must be an integer array, "
                                         r"not dtype float64"):
        executor.run(net, np.zeros((1, 2, 6, 6)))
    with pytest.raises(ValueError, match=r"x_int must be of shape \[B, 2, 6, 6\], not shape "
                                         r"\(1, 2, 5, 6\)"):
        executor.run(net, np.zeros((1, 2, 5, 6), dtype=np.int64))
    with pytest.raises(ValueError, match=r"x_int must be in \[0, 255\] \(the network's input "
                                         r"type\), not 256"):
        executor.run(net, np.full((1, 2, 6, 6), 256))


def test_overflow_is_counted_and_wraps():
    q = QParams(1.0, 0, 8, False)
    w = np.full((1, 64), 127, dtype=np.int64)
    layer = IntLayer("fc", "linear", (-1,), (q,), QParams(1.0, 0, 8, True), weight=w,
                     bias=np.zeros(1, np.int64), m=np.array([1]), s=np.array([0]))
    net = IntNetwork((layer,), q, (64,), acc_bits=16, mult_bits=16)
    res = executor.run(net, np.full((1, 64), 255), trace=True)
    exact = 255 * 127 * 64
    wrapped = ((exact + 2**15) % 2**16) - 2**15
    assert res.overflows == [1]
    assert res.output[0, 0] == min(max(wrapped, -128), 127)


@pytest.mark.parametrize("per_channel", [False, True])
def test_network_gemms_on_the_cycle_model(per_channel):
    """Every conv/linear GEMM of a network run on sim.cycle gives the executor's output."""
    from qaccel.sim.cycle import simulate

    rng = np.random.default_rng(5)
    net = small_net(per_channel, rng)
    cfg = ArrayConfig(rows=4, cols=4, w_bits=4, a_bits=8, per_channel=per_channel,
                      acc_bits=32, mult_bits=16)
    x = rng.integers(0, 256, size=(2, 2, 6, 6))
    calls = []

    def on_cycle_model(job):
        res = simulate(cfg, job)
        calls.append(res.cycles)
        return res.y

    y_cycle = executor.run(net, x, gemm_fn=on_cycle_model)
    assert np.array_equal(y_cycle, executor.run(net, x))
    assert len(calls) == 1 + 4 + 1 and min(calls) > 0      # conv, 4 depthwise groups, fc


@pytest.mark.parametrize(("bad", "msg"), [
    (lambda y: y.astype(np.float64), r"layer 'conv' GEMM 0: gemm_fn must return integers, "
                                     r"got dtype float64"),
    (lambda y: y + 0.5, r"must return integers, got dtype float64"),
    (lambda y: y[:-1], r"layer 'conv' GEMM 0: gemm_fn returned shape \(71, 4\), expected "
                       r"\(72, 4\)"),
    (lambda y: y + 256, r"layer 'conv' GEMM 0: gemm_fn outputs must be in \[0, 255\] \(the "
                        r"layer's output type\), not \d+"),
    (lambda y: None, r"must return integers, got dtype object"),
])
def test_gemm_fn_result_is_checked(bad, msg):
    """A gemm_fn result that is not [T, N] integers in the output range is an error, never
    truncated or wrapped into range."""
    net = small_net()
    x = np.random.default_rng(7).integers(0, 256, size=(2, 2, 6, 6))
    with pytest.raises(ValueError, match=msg):
        executor.run(net, x, gemm_fn=lambda job: bad(reference_gemm_for(net, job)))


def reference_gemm_for(net, job):
    """The job's output as the executor computes it (network acc_bits, 8-bit unsigned)."""
    from qaccel.sim.reference import run_reference

    return run_reference(job, net.acc_bits, 0, 255).y


def test_i_mean_is_the_requantizer_rounding_divided_by_the_count():
    """``floor((acc M + n R) / (n 2^S))``: for n = 1 the requantizer; exact .5 ties round
    up (as add-R-and-shift does); masked positions do not count."""
    from qaccel.sim.arith import requantize
    from qaccel.sim.vector import i_mean
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, size=(6, 5, 3))
    m, s = 23000, 15
    np.testing.assert_array_equal(i_mean(q[:, :1], m, s),
                                  requantize(q[:, 0], m, s, 0, -(1 << 30), 1 << 30))
    mask = rng.integers(0, 2, size=(6, 5))
    mask[:, 0] = 1
    want = np.empty((6, 3), dtype=np.int64)
    for b in range(6):
        n = int(mask[b].sum())
        acc = (q[b] * mask[b][:, None]).sum(0)
        exact = [Fraction(int(a) * m, n * 2 ** s) for a in acc]
        want[b] = [math.floor(v + Fraction(1, 2)) for v in exact]        # ties up
    np.testing.assert_array_equal(i_mean(q, m, s, axis=1, mask=mask), want)
    ties = i_mean(np.array([[1, 2]]), 2, 1, axis=1)                    # M / 2^S = 1: 3 / 2
    assert ties.tolist() == [2]
    assert i_mean(np.array([[-1, -2]]), 2, 1, axis=1).tolist() == [-1]      # -1.5 -> -1


def test_token_network_lookups_lengths_and_inputs():
    net = _token_net()
    word, pos = net.layers[0], net.layers[1]
    rng = np.random.default_rng(2)
    for seq in (3, 9):
        ids = rng.integers(0, 30, size=(4, seq))
        mask = (np.arange(seq)[None] < rng.integers(1, seq + 1, size=(4, 1))).astype(int)
        res = executor.run(net, (ids, mask), trace=True)
        np.testing.assert_array_equal(res.outputs[0], word.table[ids])
        np.testing.assert_array_equal(res.outputs[1], np.broadcast_to(pos.table[:seq],
                                                                      (4, seq, 4)))
        np.testing.assert_array_equal(
            executor.run(net, {"input_ids": ids, "attention_mask": mask}), res.output)
        ids2 = np.where(mask == 1, ids, 0)                          # padding does not count
        np.testing.assert_array_equal(executor.run(net, (ids2, mask)), res.output)
    costs = executor.vector_costs(net, (ids, mask))
    assert [k for _, k, _ in costs] == ["embedding", "position_embedding", "add", "mean"]
    with pytest.raises(ValueError, match=r"x_int\['attention_mask'\] must be a mask array"):
        executor.run(net, (ids,))
    with pytest.raises(ValueError, match="the same B and S for every input"):
        executor.run(net, (ids, mask[:, :-1]))
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        executor.run(net, (ids, mask * 2))
    with pytest.raises(ValueError, match="sequence length 17 exceeds the 16 positions"):
        executor.run(net, (np.zeros((1, 17), int), np.ones((1, 17), int)))
    x = executor.sample_inputs(net, batch=2, seq=5)
    assert executor.run(net, x).shape == (2, 4)
