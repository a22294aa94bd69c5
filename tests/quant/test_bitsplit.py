"""Bit-split and Stitching (Wang et al. 2020): planes, initialisation, refinement, act scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qaccel.quant import bitsplit as bs

torch.set_num_threads(1)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_split_stitch_roundtrip(bits):
    qm = 2 ** (bits - 1) - 1
    q = torch.arange(-qm, qm + 1, dtype=torch.float64)
    planes = bs.split_planes(q, bits)
    assert planes.shape == (bits - 1, 2 * qm + 1)
    assert set(planes.unique().tolist()) <= {-1.0, 0.0, 1.0}
    # each plane carries the sign of q (or 0): sign(q) * bit_m(|q|)
    assert torch.all((planes == 0) | (planes == torch.sign(q)))
    assert torch.equal(bs.stitch_planes(planes), q)
    # the slides' example: 1*1 + 2*(-1) + 4*(-1) = -5
    if bits == 4:
        assert bs.split_planes(torch.tensor([-5.0]), 4)[:, 0].tolist() == [-1.0, 0.0, -1.0]


def test_split_rejects_out_of_range():
    with pytest.raises(ValueError):
        bs.split_planes(torch.tensor([4.0]), 3)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_init_is_a_fixed_point(bits):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 50, generator=g) * torch.linspace(0.1, 2, 6)[:, None]
    q, alpha = bs.init_alpha_q(w, bits)
    qm = 2 ** (bits - 1) - 1
    w64 = w.double()
    assert torch.allclose(alpha, (w64 * q).sum(1) / (q * q).sum(1), rtol=1e-9)
    assert torch.equal(q, torch.clamp(torch.round(w64 / alpha[:, None]), -qm, qm))
    # least-squares alpha beats plain max scaling in weight space
    q_max, a_max = bs.max_scale_quantize(w, bits, per_channel=True)
    err = lambda q, a: ((w64 - q.double() * a.double()[:, None]) ** 2).sum()  # noqa: E731
    assert err(q, alpha) <= err(q_max, a_max) + 1e-12


def _reference_bitsplit(A, B, w2d, bits, epochs):
    """Unvectorised per-channel reference of the refinement (loops over c, m, n)."""
    qm = 2 ** (bits - 1) - 1
    q0, alpha0 = bs.init_alpha_q(torch.as_tensor(w2d), bits)
    C, K = w2d.shape
    out_q = np.zeros((C, K))
    out_a = np.zeros(C)
    for c in range(C):
        Ac = A if A.ndim == 2 else A[c]
        b = B[:, c]
        planes = [((np.sign(q0[c].numpy()) * ((np.abs(q0[c].numpy()).astype(int) >> m) & 1))
                   .astype(float)) for m in range(bits - 1)]
        a = float(alpha0[c])

        def stitch(ps):
            return sum((2.0 ** m) * p for m, p in enumerate(ps))

        for _ in range(epochs):
            q = stitch(planes)
            den = q @ Ac @ q
            a = (q @ b) / den if den > 1e-12 else a
            for m in range(bits - 1):
                r = stitch(planes) - (2.0 ** m) * planes[m]
                bm = b - a * Ac @ r
                am = a * 2.0 ** m
                p = planes[m]
                for n in range(K):
                    g = 2.0 * (am * (Ac[n] @ p - Ac[n, n] * p[n]) - bm[n])
                    p[n] = -np.sign(g) if abs(g) > am * Ac[n, n] else 0.0
        q = stitch(planes)
        den = q @ Ac @ q
        a = (q @ b) / den if den > 1e-12 else a
        out_q[c], out_a[c] = np.clip(np.rint(q), -qm, qm), a
    return out_q, out_a


@pytest.mark.parametrize("depthwise", [False, True])
def test_vectorised_matches_per_channel_reference(depthwise):
    rng = np.random.default_rng(0)
    C, K, P, bits = 5, 9, 200, 4
    w = rng.normal(size=(C, K))
    if depthwise:
        X = np.maximum(rng.normal(size=(C, P, K)), 0)
        A = np.einsum("cpk,cpj->ckj", X, X)
        Y = np.einsum("cpk,ck->pc", X, w)
        B = np.einsum("cpk,pc->kc", X, Y + rng.normal(size=Y.shape) * 0.1)
    else:
        X = np.maximum(rng.normal(size=(P, K)), 0)
        A = X.T @ X
        B = X.T @ (X @ w.T + rng.normal(size=(P, C)) * 0.1)
    q, a = bs.bitsplit_gram(torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(w),
                            bits, epochs=5)
    q_ref, a_ref = _reference_bitsplit(A, B, w, bits, epochs=5)
    np.testing.assert_array_equal(q.numpy(), q_ref)
    np.testing.assert_allclose(a.numpy(), a_ref, rtol=1e-9)


def _real_layers():
    from qaccel.quant import adaround as ar
    from qaccel.quant import digits

    out = []
    x = digits.calib_images(256)
    for name, idx in (("digits_cnn", 3), ("digits_mobilenet", 3), ("digits_mobilenet", 12)):
        model, _, _ = digits.get_model(name)
        layer = model[idx]
        inp, _ = ar.collect_io(model, layer, [x])
        out.append((f"{name}[{idx}]", layer, inp))
    return out


@pytest.fixture(scope="module")
def real_layers():
    return _real_layers()


@pytest.mark.parametrize("bits", [3, 4])
def test_bitsplit_beats_max_scaling_in_output_space(real_layers, bits):
    for name, layer, inp in real_layers:
        X, Y = bs.layer_patches(layer, inp, max_rows=4000)
        q, alpha = bs.bitsplit_layer(layer.weight, X, Y, bits, epochs=30)
        qm = 2 ** (bits - 1) - 1
        assert q.shape == layer.weight.shape and q.dtype == torch.int32
        assert int(q.abs().max()) <= qm and torch.all(alpha > 0)
        e_bs = bs.output_error(X, Y, q, alpha)
        e_tfl = bs.output_error(X, Y, *bs.max_scale_quantize(layer.weight, bits))
        e_tfl_pc = bs.output_error(X, Y, *bs.max_scale_quantize(layer.weight, bits,
                                                               per_channel=True))
        q0, a0 = bs.init_alpha_q(layer.weight.reshape(layer.weight.shape[0], -1), bits)
        e_init = bs.output_error(X, Y, q0.reshape(q.shape), a0)
        assert e_bs < 0.5 * e_tfl, (name, e_bs, e_tfl)
        assert e_bs < 0.8 * e_tfl_pc, (name, e_bs, e_tfl_pc)
        assert e_bs < e_init, (name, e_bs, e_init)  # the refinement itself helps


def test_refinement_never_increases_objective(real_layers):
    _, layer, inp = real_layers[0]
    X, Y = bs.layer_patches(layer, inp, max_rows=3000)
    errs = [bs.output_error(X, Y, *bs.bitsplit_layer(layer.weight, X, Y, 3, epochs=e))
            for e in (0, 1, 3, 10)]
    assert all(a >= b - 1e-12 for a, b in zip(errs, errs[1:])), errs


def test_depthwise_uses_per_channel_patches(real_layers):
    _, layer, inp = real_layers[1]
    assert layer.groups == layer.in_channels > 1
    X, Y = bs.layer_patches(layer, inp, max_rows=2000)
    C = layer.out_channels
    assert X.shape == (C, 2000, 9) and Y.shape == (2000, C)
    ref = torch.nn.functional.conv2d(inp, layer.weight.detach(), None, layer.stride, layer.padding,
                                     layer.dilation, layer.groups)
    assert float(Y.abs().max()) <= float(ref.abs().max()) + 1e-5
    # each channel solved alone as a dense one-channel problem gives the same answer
    q, a = bs.bitsplit_layer(layer.weight, X, Y, 3, epochs=5)
    for c in (0, C - 1):
        qc, ac = bs.bitsplit_layer(layer.weight[c:c + 1], X[c], Y[:, c:c + 1], 3, epochs=5)
        assert torch.equal(qc[0], q[c]) and float(ac[0]) == pytest.approx(float(a[c]))


def test_zero_channel_is_guarded():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 12, generator=g)
    w[1] = 0.0
    X = torch.rand(300, 12, generator=g)
    q, a = bs.bitsplit_layer(w, X, X @ w.T, 3, epochs=3)
    assert torch.isfinite(a).all() and torch.all(q[1] == 0)


def test_act_scale_least_squares():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(20000, generator=g)) ** 1.5  # long-tailed, like ReLU outputs
    for bits in (4, 8):
        alpha = bs.bitsplit_act_scale(x, bits)
        top = 2 ** bits - 1
        pos = x[x > 0].double()
        q = torch.clamp(torch.round(pos / alpha), 0, top)
        assert alpha == pytest.approx(float((pos * q).sum() / (q * q).sum()), rel=1e-6)

        def mse(a, pos=pos, top=top):
            return float(((pos - a * torch.clamp(torch.round(pos / a), 0, top)) ** 2).mean())

        assert mse(alpha) < mse(float(pos.max()) / top)
        assert alpha < float(pos.max()) / top  # clips the tail
    assert bs.bitsplit_act_scale(-torch.ones(10), 8) == 1.0


def test_pipeline_call_form_and_per_tensor(real_layers):
    """``bitsplit_layer(module, weight_scale, inputs, target, w_bits=...)`` as quant.pipeline
    calls it: per-channel for a (C,) scale, one shared alpha for a scalar scale."""
    _, layer, inp = real_layers[0]
    C = layer.out_channels
    q_pc, a_pc = bs.bitsplit_layer(layer, torch.ones(C), inp, None, w_bits=3,
                                   iterations=10, seed=0)
    X, Y = bs.layer_patches(layer, inp, seed=0)
    q_ref, a_ref = bs.bitsplit_layer(layer.weight, X, Y, 3, epochs=10)
    assert torch.equal(q_pc, q_ref) and torch.allclose(a_pc, a_ref)
    q_pt, a_pt = bs.bitsplit_layer(layer, torch.tensor(0.1), inp, None, w_bits=3,
                                   iterations=10, seed=0)
    assert torch.all(a_pt == a_pt[0]) and int(q_pt.abs().max()) <= 3
    e_pt = bs.output_error(X, Y, q_pt, a_pt)
    assert e_pt < 0.5 * bs.output_error(X, Y, *bs.max_scale_quantize(layer.weight, 3))
