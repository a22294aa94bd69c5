"""The papers' PTQ orderings and the accuracy goals, pinned on the shipped digits models.

Every number comes from ``quant.quantize`` on the shipped FP32 digits models
(``quant/models``, never trained here) via ``quant.paper_tables.run`` with the tables'
default :class:`~qaccel.quant.paper_tables.Settings`: calibration seeds 0, 1 and 2 (three
different 256-image calibration subsets, ``digits.calib_images(seed=s)``, and
``QuantConfig(seed=s)``), AdaRound 1000 iterations per layer, Bit-split 30 epochs. These
are exactly the settings ``make paper-tables`` writes ``docs/paper-tables`` with, so the
tables show the numbers asserted here.

The rule (``paper_tables.ordering``, the same one that fills the tables' "Reproduced"
column): "A beats B" holds when the worst seed of A is better than the best seed of B by
more than the spread over seeds,

    gap = min_s A_s - max_s B_s  >  max(max_s A_s - min_s A_s, max_s B_s - min_s B_s, res),

``res`` = one test image (0.19 points) for accuracy, 0.1 dB for logit SQNR. Accuracy goals
must hold for the worst seed. On top of the rule, each ordering states a minimum gap well
below the measured one but large enough that a no-op implementation (AdaRound returning
nearest rounding, CLE doing nothing, Bit-split returning max scaling) fails.

Orderings of the tables that do not hold under the rule are not asserted; they are listed
as not reproduced in ``docs/paper-tables/measured.md`` (e.g. per-channel W4A8 beating CLE
on the MobileNet: 11.6 vs 12.0 dB here; earlier it was asserted on one seed and failed on
another machine's training run).
"""

from __future__ import annotations

import pathlib
import re

import pytest
import torch
from qaccel.quant import digits
from qaccel.quant.paper_tables import Ctx, Settings, bitsplit_configs, ordering, run

torch.set_num_threads(1)

CLE = dict(cle=True, high_bias_absorption=True)  # table 3's "+ CLE + absorbing bias" row
DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "paper-tables"


@pytest.fixture(scope="module")
def ctx():
    settings = Settings()
    assert len(settings.seeds) >= 3
    return Ctx(settings)


def fp32(ctx, name):
    return ctx.model(name)[3]


def beats(better, worse, min_gap, metric="sqnr"):
    """Assert the module's ordering rule and a gap of at least ``min_gap``."""
    o = ordering(better, worse, metric)
    assert o.ok, o.detail()
    assert o.gap > min_gap, o.detail()


# ---- accuracy goals on the digits CNN (issue 3), worst seed ------------------------------
def test_w8a8_within_half_a_point(ctx):
    c = run(ctx, "digits_cnn", w_bits=8, a_bits=8)
    assert min(c.accs) >= fp32(ctx, "digits_cnn") - 0.5, (c, fp32(ctx, "digits_cnn"))


def test_w4a8_adaround_within_1p5_points(ctx):
    c = run(ctx, "digits_cnn", w_bits=4, a_bits=8, rounding="adaround",
            iterations=ctx.settings.adaround_iterations)
    assert min(c.accs) >= fp32(ctx, "digits_cnn") - 1.5, (c, fp32(ctx, "digits_cnn"))


def test_w3a8_bitsplit_within_3_points(ctx):
    c = run(ctx, "digits_cnn", w_bits=3, a_bits=8, **bitsplit_configs(ctx)["bitsplit"])
    assert min(c.accs) >= fp32(ctx, "digits_cnn") - 3.0, (c, fp32(ctx, "digits_cnn"))


# ---- whitepaper Table 1: range setting, granularity (weights only) -----------------------
@pytest.mark.parametrize("name", ["digits_cnn", "digits_mobilenet"])
def test_table1_mse_beats_minmax_at_3_bits(ctx, name):
    mm = run(ctx, name, weight_only=True, w_bits=3, a_bits=8, weight_range="minmax")
    ms = run(ctx, name, weight_only=True, w_bits=3, a_bits=8, weight_range="mse")
    beats(ms, mm, 3.0)
    beats(ms, mm, 10.0, "acc")


def test_table1_per_channel_beats_per_tensor(ctx):
    name = "digits_mobilenet"
    pt = run(ctx, name, weight_only=True, w_bits=4, a_bits=8)
    pc = run(ctx, name, weight_only=True, w_bits=4, a_bits=8, per_channel=True)
    beats(pc, pt, 2.0)
    beats(pc, pt, 2.0, "acc")


# ---- Table 3: CLE on the depthwise-separable model ---------------------------------------
def test_table3_cle_rescues_per_tensor(ctx):
    name = "digits_mobilenet"
    orig = run(ctx, name, w_bits=4, a_bits=8)
    cle = run(ctx, name, w_bits=4, a_bits=8, **CLE)
    beats(cle, orig, 2.0)
    beats(cle, orig, 3.0, "acc")
    # ... and closes more than half of the per-tensor -> per-channel SQNR gap (per seed)
    pc = run(ctx, name, w_bits=4, a_bits=8, per_channel=True)
    mid = type(orig)(orig.accs, tuple((o + p) / 2 for o, p in zip(orig.sqnrs, pc.sqnrs)))
    beats(cle, mid, 0.5)


def test_table3_cle_is_near_lossless(ctx):
    # CLE is lossless up to the ReLU6 -> ReLU swap it needs (scaling equivariance)
    name = "digits_mobilenet"
    fp_cle = run(ctx, name, weight_only=True, w_bits=16, a_bits=16, cle=True,
                 high_bias_absorption=False)  # table 3's "+ CLE" row
    assert min(fp_cle.sqnrs) > 25.0, fp_cle
    assert min(fp_cle.accs) >= fp32(ctx, name) - 0.5, fp_cle


# ---- Table 4: bias correction where rounding is biased -----------------------------------
@pytest.mark.parametrize("method,min_gap", [("empirical", 2.0), ("analytic", 0.5)])
def test_table4_bias_correction_helps(ctx, method, min_gap):
    name = "digits_mobilenet"
    orig = run(ctx, name, w_bits=4, a_bits=8)
    bc = run(ctx, name, w_bits=4, a_bits=8, bias_correction=method)
    beats(bc, orig, min_gap)


# ---- Table 5: AdaRound vs nearest ----------------------------------------------------------
@pytest.mark.parametrize("bits,min_gap", [(4, 1.0), (3, 2.0)])
def test_table5_adaround_beats_nearest(ctx, bits, min_gap):
    name = "digits_cnn"
    near = run(ctx, name, w_bits=bits, a_bits=8)
    ada = run(ctx, name, w_bits=bits, a_bits=8, rounding="adaround",
              iterations=ctx.settings.adaround_iterations)
    beats(ada, near, min_gap)


# ---- Bit-split tables: TF-Lite max scaling vs Bit-split -----------------------------------
@pytest.mark.parametrize("bits,min_gap", [(4, 2.0), (3, 4.0)])
def test_bitsplit_beats_tflite(ctx, bits, min_gap):
    name = "digits_cnn"
    cfg = bitsplit_configs(ctx)
    tfl = run(ctx, name, weight_only=True, w_bits=bits, a_bits=8, **cfg["tflite"])
    bsp = run(ctx, name, weight_only=True, w_bits=bits, a_bits=8, **cfg["bitsplit"])
    beats(bsp, tfl, min_gap)


# ---- the numbers: shipped reference, thread count, the committed tables ------------------
def test_fp32_accuracy_is_the_shipped_reference(ctx):
    for name in ("digits_cnn", "digits_mobilenet"):
        shipped = digits.read_manifest()["models"][name]["test_accuracy"]
        assert fp32(ctx, name) == pytest.approx(shipped, abs=1e-3)


def test_cells_do_not_depend_on_the_thread_count():
    # one representative cell (AdaRound on the depthwise model: gradient reductions, CLE'd
    # convs, 8-bit activations), twice: with the torch threads left to the caller (is the
    # arithmetic itself thread-invariant?) and with paper_tables' fixed count
    # (measured: identical; unpinned, 2 threads on 2 busy cores are ~6x slower, hence the
    # fixed count in paper_tables and the few iterations here)
    cfg = dict(w_bits=4, a_bits=8, rounding="adaround", iterations=10, cle=True)
    for threads in (None, 1):
        got = []
        for n in (1, 2):
            torch.set_num_threads(n)
            try:
                c = run(Ctx(Settings(seeds=(0,), n_calib=32, threads=threads)),
                        "digits_mobilenet", **cfg)
            finally:
                torch.set_num_threads(1)
            got.append((c.accs, c.sqnrs))
        assert got[0] == got[1], (threads, got)


def _doc_row(table: str, label: str) -> list[str]:
    for line in (DOCS / f"{table}.md").read_text().splitlines():
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if cols and cols[0] == label:
            return cols[1:]
    raise AssertionError(f"{table}.md has no row {label!r}")


def test_committed_tables_show_these_numbers(ctx):
    # docs/paper-tables is generated by the code under test, with these settings: a cell
    # computed here is the cell in the committed table (else: rerun `make paper-tables`)
    name = "digits_mobilenet"
    for label, kw in (("Original model (per-tensor)", {}),
                      ("+ CLE + absorbing bias", CLE),
                      ("Per-channel quantization", dict(per_channel=True))):
        doc = _doc_row("table3", label)
        cell = run(ctx, name, w_bits=4, a_bits=8, **kw)
        # no optimisation in these cells: one test image (0.19 points) of room across CPUs
        assert cell.shown_by(doc[-1], acc_tol=0.19, sqnr_tol=0.1), (label, doc, cell.fmt())
    assert re.search(r"seeds=\(0, 1, 2\)", (DOCS / "table3.md").read_text())
