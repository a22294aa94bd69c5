"""The papers' PTQ orderings and the accuracy goals, pinned on the digits models.

Every number comes from ``quant.quantize`` on the trained digits models (fixed calibration
subset, seed 0) via ``quant.paper_tables.run``, which measures top-1 accuracy (%) and the
SQNR (dB) of the logits against FP32 on the held-out split. The digits models saturate in
accuracy at 8 (and often 6) bits, so the orderings are asserted on the SQNR, with margins
well inside the measured gaps (``make paper-tables`` has the full tables) but large enough
that a no-op implementation (e.g. AdaRound returning nearest rounding, CLE doing nothing,
Bit-split returning max scaling) fails. Iterations are reduced against the tables to keep
this file to a few CPU-minutes.
"""

from __future__ import annotations

import pytest
import torch
from qaccel.quant import digits
from qaccel.quant.paper_tables import Ctx, Settings, run

torch.set_num_threads(1)

ADA_IT = 1000
BS_EPOCHS = 30


@pytest.fixture(scope="module")
def ctx():
    return Ctx(Settings(seeds=(0,)))


def fp32(ctx, name):
    return ctx.model(name)[3]


# ---- accuracy goals on the digits CNN (issue 3) ------------------------------------------
def test_w8a8_within_half_a_point(ctx):
    c = run(ctx, "digits_cnn", w_bits=8, a_bits=8)
    assert c.acc >= fp32(ctx, "digits_cnn") - 0.5, (c.acc, fp32(ctx, "digits_cnn"))


def test_w4a8_adaround_within_1p5_points(ctx):
    c = run(ctx, "digits_cnn", w_bits=4, a_bits=8, rounding="adaround", iterations=ADA_IT)
    assert c.acc >= fp32(ctx, "digits_cnn") - 1.5, (c.acc, fp32(ctx, "digits_cnn"))


def test_w3a8_bitsplit_within_3_points(ctx):
    c = run(ctx, "digits_cnn", w_bits=3, a_bits=8, rounding="bitsplit", per_channel=True,
            iterations=BS_EPOCHS)
    assert c.acc >= fp32(ctx, "digits_cnn") - 3.0, (c.acc, fp32(ctx, "digits_cnn"))


# ---- whitepaper Table 1: range setting, granularity (weights only) -----------------------
def test_table1_mse_beats_minmax_at_low_bits(ctx):
    for name in ("digits_cnn", "digits_mobilenet"):
        mm = run(ctx, name, weight_only=True, w_bits=3, a_bits=8, weight_range="minmax")
        ms = run(ctx, name, weight_only=True, w_bits=3, a_bits=8, weight_range="mse")
        assert ms.sqnr > mm.sqnr + 3.0, (name, ms, mm)
        assert ms.acc > mm.acc + 10.0, (name, ms, mm)


def test_table1_per_channel_beats_per_tensor(ctx):
    name = "digits_mobilenet"
    pt = run(ctx, name, weight_only=True, w_bits=4, a_bits=8)
    pc = run(ctx, name, weight_only=True, w_bits=4, a_bits=8, per_channel=True)
    assert pc.sqnr > pt.sqnr + 2.0, (pc, pt)
    assert pc.acc > pt.acc, (pc, pt)


# ---- Table 3: CLE on the depthwise-separable model ---------------------------------------
def test_table3_cle_rescues_per_tensor(ctx):
    name = "digits_mobilenet"
    orig = run(ctx, name, w_bits=4, a_bits=8)
    cle = run(ctx, name, w_bits=4, a_bits=8, cle=True)
    pc = run(ctx, name, w_bits=4, a_bits=8, per_channel=True)
    # measured (seed 0): SQNR 9.9 vs 8.8 dB, accuracy 95.9 vs 92.2 %; per-channel 14.4 dB
    assert cle.sqnr > orig.sqnr + 0.5, (cle, orig)
    assert cle.acc > orig.acc + 1.5, (cle, orig)
    assert pc.sqnr > cle.sqnr  # CLE only partly closes the gap on this model
    # CLE is lossless up to the ReLU6 -> ReLU swap it needs (scaling equivariance):
    # measured 36.8 dB logit SQNR at W16A16, same accuracy
    fp_cle = run(ctx, name, weight_only=True, w_bits=16, a_bits=16, cle=True)
    assert fp_cle.sqnr > 25.0 and abs(fp_cle.acc - fp32(ctx, name)) <= 0.5, fp_cle


# ---- Table 4: bias correction where rounding is biased -----------------------------------
@pytest.mark.parametrize("method", ["empirical", "analytic"])
def test_table4_bias_correction_helps(ctx, method):
    name = "digits_mobilenet"
    orig = run(ctx, name, w_bits=4, a_bits=8)
    bc = run(ctx, name, w_bits=4, a_bits=8, bias_correction=method)
    assert bc.sqnr > orig.sqnr + 0.5, (method, bc, orig)


# ---- Table 5: AdaRound vs nearest ----------------------------------------------------------
@pytest.mark.parametrize("bits,margin", [(4, 1.0), (3, 2.0)])
def test_table5_adaround_beats_nearest(ctx, bits, margin):
    name = "digits_cnn"
    near = run(ctx, name, w_bits=bits, a_bits=8)
    ada = run(ctx, name, w_bits=bits, a_bits=8, rounding="adaround", iterations=ADA_IT)
    assert ada.sqnr > near.sqnr + margin, (ada, near)
    assert ada.acc >= near.acc, (ada, near)


# ---- Bit-split tables: TF-Lite max scaling vs Bit-split -----------------------------------
@pytest.mark.parametrize("bits,margin", [(4, 2.0), (3, 4.0)])
def test_bitsplit_beats_tflite(ctx, bits, margin):
    name = "digits_cnn"
    tfl = run(ctx, name, weight_only=True, w_bits=bits, a_bits=8, weight_range="minmax",
              act_range="minmax")
    bsp = run(ctx, name, weight_only=True, w_bits=bits, a_bits=8, rounding="bitsplit",
              per_channel=True, iterations=BS_EPOCHS, act_range="mse")
    assert bsp.sqnr > tfl.sqnr + margin, (bsp, tfl)
    assert bsp.acc >= tfl.acc, (bsp, tfl)


def test_fp32_accuracy_is_the_reference(ctx):
    # sanity: the reference the goals are measured against is the trained model
    model, _, test = digits.get_model("digits_cnn")
    assert fp32(ctx, "digits_cnn") == digits.evaluate(model, test) > 97.0
