"""``make paper-tables``: the papers' PTQ orderings, measured on the digits models.

Writes markdown tables to ``--out`` (default ``docs/paper-tables`` relative to the current
directory; one file per table plus ``measured.md`` with every ordering check and whether it
reproduced), and each table's checks as JSON to the workspace
(``<workdir>/paper-tables/<table>.json``, :mod:`qaccel.workspace`):

- ``table1.md`` -- whitepaper Table 1: weight range setting (min-max vs MSE, per tensor vs
  per channel), weights quantized, activations in FP32;
- ``table3.md`` -- Table 3: CLE (+ high-bias absorption) vs per-tensor / per-channel on
  the depthwise-separable model;
- ``table4.md`` -- Table 4: bias correction (empirical, analytic; with CLE);
- ``table5.md`` -- Table 5: AdaRound vs rounding-to-nearest at 4 bits and below;
- ``bitsplit.md`` -- Wang et al. 2020 Tables: TF-Lite-style max scaling vs Bit-split from 8
  down to 2 bits, weight-only and with 8-bit activations;
- ``lowbit.md`` -- issue 9: the reconstruction family (nearest, AdaRound, BRECQ, QDrop,
  NWQ) and QAT (LSQ from the nearest and from the AdaRound PTQ start) at W2A4 / W3A3 /
  W4A4, per-channel weights, first and last layer at 8 bits
  (``QuantConfig.first_last_8bit``), at a reduced budget (:class:`LowBitSettings`, stated
  in the table);
- ``qat.md`` -- whitepaper sec. 4: the BN-folding variants of QAT (Table 7 of the stored
  text, "Table 9" in issue 9: static folding, running statistics, BN kept in the
  per-channel scale) and the standard QAT pipeline's bit-width trends (Table 10: W8A8,
  W4A8, W4A4, per-tensor and per-channel), with :class:`LowBitSettings`' QAT budget.

Every number comes from ``quant.quantize`` (the whitepaper Figure 8 pipeline) on the
shipped trained digits models (``quant.digits``), evaluated on the held-out split (539
images, so one image is 0.19 points). Because these models are small and the task is easy,
many configurations sit at FP32 accuracy; every cell therefore also reports the SQNR (dB)
of the logits against the FP32 model on the test set, ``10 log10(sum z^2 / sum (z - z^)^2)``,
which is far more sensitive, and the ordering checks say which metric they use.

Calibration seeds: every cell is measured once per calibration seed (``Settings.seeds``,
default 0, 1, 2): seed ``s`` calibrates on 256 training images drawn with seed ``s``
(``digits.calib_images``) and passes ``QuantConfig(seed=s)``. A cell shows the mean.

The ordering rule (:func:`ordering`), used by the tables and by
``tests/quant/test_paper_orderings.py`` alike: "A beats B" is **reproduced** when the worst
seed of A is better than the best seed of B by more than the spread over seeds,

    gap = min_s A_s - max_s B_s  >  max(spread(A), spread(B), resolution),

where ``spread = max_s - min_s`` and the resolution is one test image (0.19 points) for
accuracy and 0.1 dB for SQNR. A threshold ("within 0.5 points of FP32") must hold for the
worst seed. Orderings that fail the rule are reported as not reproduced.

Quantization runs with a fixed torch thread count (``Settings.threads``, default 1), so the
numbers do not depend on the caller's ``torch.set_num_threads``.

``python -m qaccel.quant.paper_tables [--quick] [--only table1,table5,...] [--out DIR]``.
The default settings are the ones the tests use (AdaRound 1000 iterations per layer,
Bit-split 30 epochs, seeds 0-2); ``--quick`` uses fewer iterations and one seed, for a
fast look.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import pathlib
import time
from dataclasses import asdict, dataclass, field

import torch

from . import digits

MODELS = ("digits_cnn", "digits_mobilenet")
#: the resolution of each metric below which a gap is not counted (see :func:`ordering`)
RESOLUTION = {"acc": 100.0 / 539, "sqnr": 0.1}


@dataclass(frozen=True)
class Settings:
    """What every table cell is computed with.

    Parameters
    ----------
    adaround_iterations : int
        AdaRound iterations per layer (the paper uses 10000).
    bitsplit_epochs : int
        Bit-split epochs per layer.
    seeds : tuple of int
        Calibration seeds: the calibration subset and ``QuantConfig.seed``.
    n_calib : int
        Calibration images per seed.
    threads : int or None
        torch threads while quantizing and evaluating (``None``: leave the caller's).
    """

    adaround_iterations: int = 1000
    bitsplit_epochs: int = 30
    seeds: tuple[int, ...] = (0, 1, 2)
    n_calib: int = 256
    threads: int | None = 1

    def __post_init__(self):
        for f in ("adaround_iterations", "bitsplit_epochs", "n_calib"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Settings.{f} must be an integer >= 1, not {v!r}")
        seeds = tuple(self.seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                            for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"Settings.seeds must be distinct integers >= 0, not {self.seeds!r}")
        object.__setattr__(self, "seeds", seeds)
        if self.threads is not None and (isinstance(self.threads, bool)
                                         or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"Settings.threads must be None or an integer >= 1, "
                             f"not {self.threads!r}")


@dataclass(frozen=True)
class Cell:
    """One configuration measured over calibration seeds: per-seed accuracy (%) and logit
    SQNR (dB); ``acc`` / ``sqnr`` are the means."""

    accs: tuple[float, ...]
    sqnrs: tuple[float, ...]

    def values(self, metric: str) -> tuple[float, ...]:
        return {"acc": self.accs, "sqnr": self.sqnrs}[metric]

    @property
    def acc(self) -> float:
        return sum(self.accs) / len(self.accs)

    @property
    def sqnr(self) -> float:
        return sum(self.sqnrs) / len(self.sqnrs)

    def spread(self, metric: str) -> float:
        v = self.values(metric)
        return max(v) - min(v)

    def fmt(self) -> str:
        return f"{self.acc:.2f} / {self.sqnr:.1f}"

    def shown_by(self, text: str, acc_tol: float, sqnr_tol: float) -> bool:
        """Whether a table cell ``text`` (``fmt()``'s form) shows this cell: equal within
        the printed precision plus ``acc_tol`` points / ``sqnr_tol`` dB, the room another
        CPU's float rounding needs (on the machine that wrote the table it is equal)."""
        acc, sqnr = (float(v) for v in text.split("/"))
        return (abs(acc - self.acc) <= 0.005 + acc_tol
                and abs(sqnr - self.sqnr) <= 0.05 + sqnr_tol)


@dataclass(frozen=True)
class Ordering:
    """The result of :func:`ordering`: is ``better`` ahead of ``worse`` beyond the seeds'
    spread?"""

    metric: str
    best_of_worse: float
    worst_of_better: float
    gap: float
    required: float

    @property
    def ok(self) -> bool:
        return self.gap > self.required

    def detail(self) -> str:
        unit = " dB" if self.metric == "sqnr" else " %"
        return (f"{self.metric}: worst seed {self.worst_of_better:.2f} vs best seed "
                f"{self.best_of_worse:.2f}{unit}, gap {self.gap:+.2f} vs spread "
                f"{self.required:.2f}")


def ordering(better: Cell, worse: Cell, metric: str = "sqnr") -> Ordering:
    """The module's ordering rule: ``gap = min(better) - max(worse)`` over seeds must exceed
    ``max(spread(better), spread(worse), RESOLUTION[metric])``."""
    if metric not in RESOLUTION:
        raise ValueError(f"metric must be one of {sorted(RESOLUTION)}, not {metric!r}")
    b, w = better.values(metric), worse.values(metric)
    required = max(better.spread(metric), worse.spread(metric), RESOLUTION[metric])
    return Ordering(metric, max(w), min(b), min(b) - max(w), required)


@dataclass
class Check:
    table: str
    claim: str
    ok: bool
    detail: str


@dataclass
class Ctx:
    settings: Settings
    checks: list[Check] = field(default_factory=list)
    _models: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict)

    def model(self, name):
        if name not in self._models:
            model, _, test = digits.get_model(name)
            with torch.no_grad():
                ref = model(test[0])
            self._models[name] = (model, test, ref, digits.evaluate(model, test))
        return self._models[name]

    def check(self, table: str, claim: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(table, claim, bool(ok), detail))
        print(f"  [{'yes' if ok else 'NO '}] {table}: {claim} ({detail})", flush=True)

    def order(self, table: str, claim: str, better: Cell, worse: Cell,
              metric: str = "sqnr") -> Ordering:
        """Record the check "``better`` beats ``worse``" under :func:`ordering`."""
        o = ordering(better, worse, metric)
        other = "acc" if metric == "sqnr" else "sqnr"
        self.check(table, claim, o.ok, f"{o.detail()}; mean {other} "
                   f"{getattr(better, other):.2f} vs {getattr(worse, other):.2f}")
        return o

    def not_worse(self, table: str, claim: str, cell: Cell, other: Cell,
                  metric: str = "acc") -> Ordering:
        """Record the check "``cell`` is on par with or better than ``other``": holds
        unless ``other`` beats ``cell`` under :func:`ordering`."""
        o = ordering(other, cell, metric)
        self.check(table, claim, not o.ok, f"reverse ordering {o.detail()}; mean "
                   f"{getattr(cell, metric):.2f} vs {getattr(other, metric):.2f}")
        return o

    def at_least(self, table: str, claim: str, cell: Cell, bound: float,
                 metric: str = "acc") -> None:
        """Record the check "every seed of ``cell`` reaches ``bound``"."""
        worst = min(cell.values(metric))
        self.check(table, claim, worst >= bound, f"worst seed {worst:.2f} vs bound "
                   f"{bound:.2f} ({metric})")


def sqnr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    noise = float(((ref - out) ** 2).sum())
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(float((ref ** 2).sum()) / noise)


@contextlib.contextmanager
def _threads(n: int | None):
    prev = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _measure(ctx: Ctx, name: str, seed: int, cfg: dict, qat: dict | None = None) -> dict:
    """``{"w": (acc, sqnr), "wa": (acc, sqnr)}`` of ``name`` quantized with ``cfg`` on
    calibration seed ``seed`` (cached per seed, so tables and tests share cells). With
    ``qat`` (``epochs``, ``lr``, ``patience``; optionally ``bn_folding`` for the
    ``QatConfig``), the PTQ model is the start of LSQ QAT (``quant.prepare_qat`` /
    ``train_qat``) on the training split, split into training and held-out parts with the
    same seed."""
    from qaccel.quant.modules import quant_state

    from qaccel import quant

    key = (name, seed, tuple(sorted(cfg.items())), tuple(sorted((qat or {}).items())))
    if key not in ctx._cache:
        model, test, ref, _ = ctx.model(name)
        got = {}
        with _threads(ctx.settings.threads):
            calib = list(digits.calib_loader(ctx.settings.n_calib, seed=seed))
            qc = quant.QuantConfig(seed=seed, **cfg)
            if qat is None:
                qm = quant.quantize(model, calib, qc)
            else:
                from . import qat as qat_mod

                train = dict(qat)
                qcfg = qat_mod.QatConfig(quant=qc, bn_folding=train.pop("bn_folding", "static"))
                torch.manual_seed(seed)
                qm = qat_mod.prepare_qat(model, calib, qcfg)
                x_tr, y_tr, _, _ = digits.load_split()
                tr, va = qat_mod.train_val_loaders(x_tr, y_tr, seed=seed)
                qat_mod.train_qat(qm, tr, va, progress=False, **train)
            for kind in ("w", "wa"):
                acts = False if kind == "w" else None
                with quant_state(qm, acts=acts), torch.no_grad():
                    out = qm(test[0])
                acc = 100.0 * float((out.argmax(1) == test[1]).float().mean())
                got[kind] = (acc, sqnr_db(ref, out))
        ctx._cache[key] = got
    return ctx._cache[key]


def run(ctx: Ctx, name: str, *, weight_only: bool = False, seeds=None, qat: dict | None = None,
        **cfg) -> Cell:
    """Quantize ``name`` with ``QuantConfig(**cfg)`` once per calibration seed and measure
    (accuracy %, logit SQNR dB) on the test split. ``weight_only`` evaluates with the
    activation quantizers off (activations in FP32); one quantized model serves both.
    ``qat``: train the quantized model with QAT first (see :func:`_measure`)."""
    seeds = ctx.settings.seeds if seeds is None else tuple(seeds)
    kind = "w" if weight_only else "wa"
    per_seed = [_measure(ctx, name, s, cfg, qat)[kind] for s in seeds]
    return Cell(tuple(a for a, _ in per_seed), tuple(q for _, q in per_seed))


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _fp_line(ctx: Ctx) -> str:
    return ", ".join(f"{n} {ctx.model(n)[3]:.2f}%" for n in MODELS)


def _cell_note(ctx: Ctx) -> str:
    return ("Cells: top-1 accuracy (%) / logit SQNR vs FP32 (dB), held-out digits test set "
            f"(539 images), mean over calibration seeds {list(ctx.settings.seeds)} "
            f"({ctx.settings.n_calib} images each); the ordering checks give the per-seed "
            "extremes.")


# ---- Table 1: weight range setting ------------------------------------------------------
def table1(ctx: Ctx) -> str:
    bits = (8, 6, 4, 3)
    variants = [("Min-Max", dict(weight_range="minmax")),
                ("MSE", dict(weight_range="mse")),
                ("Min-Max (per-channel)", dict(weight_range="minmax", per_channel=True)),
                ("MSE (per-channel)", dict(weight_range="mse", per_channel=True))]
    parts = ["# Whitepaper Table 1 -- weight range setting (weights quantized, activations FP32)",
             "", f"FP32: {_fp_line(ctx)}. {_cell_note(ctx)} Symmetric signed weights, BN "
             "folded, rounding to nearest (weight-only cells do not depend on the calibration "
             "data, so their spread over seeds is zero).", ""]
    res = {}
    for name in MODELS:
        rows = []
        for label, kw in variants:
            cells = [run(ctx, name, weight_only=True, w_bits=b, a_bits=8, **kw) for b in bits]
            res[(name, label)] = dict(zip(bits, cells))
            rows.append([label] + [c.fmt() for c in cells])
        parts += [f"## {name}", "", _md_table(["Range"] + [f"W{b}" for b in bits], rows), ""]
    for name in MODELS:
        for b in (4, 3):
            ctx.order("Table 1", f"{name} W{b}: MSE beats min-max (per-tensor, SQNR)",
                      res[(name, "MSE")][b], res[(name, "Min-Max")][b])
            ctx.order("Table 1", f"{name} W{b}: per-channel beats per-tensor (MSE, SQNR)",
                      res[(name, "MSE (per-channel)")][b], res[(name, "MSE")][b])
    return "\n".join(parts)


# ---- Table 3: CLE on the depthwise model -------------------------------------------------
def table3(ctx: Ctx) -> str:
    name = "digits_mobilenet"
    bits = (8, 6, 5, 4)
    variants = [("Original model (per-tensor)", dict()),
                ("+ CLE", dict(cle=True, high_bias_absorption=False)),
                ("+ CLE + absorbing bias", dict(cle=True, high_bias_absorption=True)),
                ("Per-channel quantization", dict(per_channel=True))]
    rows, res = [], {}
    for label, kw in variants:
        fp = run(ctx, name, weight_only=True, w_bits=16, a_bits=16, **kw)
        cells = [run(ctx, name, w_bits=b, a_bits=8, **kw) for b in bits]
        res[label] = dict(zip(bits, cells))
        res[label]["fp"] = fp
        rows.append([label, fp.fmt()] + [c.fmt() for c in cells])
    parts = ["# Whitepaper Table 3 -- cross-layer equalization, depthwise-separable model", "",
             f"{name}, FP32 {ctx.model(name)[3]:.2f}%. {_cell_note(ctx)} Activations 8-bit "
             "(MSE range), weights per-tensor MSE unless per-channel; the FP32-ish column is "
             "the transformed model at W16A16 (shows that CLE is (near) lossless).", "",
             _md_table(["Model", "~FP32 (W16A16)"] + [f"W{b}A8" for b in bits], rows), ""]
    orig, cle = res["Original model (per-tensor)"], res["+ CLE + absorbing bias"]
    pc = res["Per-channel quantization"]
    for b in (6, 5, 4):
        ctx.order("Table 3", f"W{b}A8: CLE + absorption beats the original per-tensor model "
                  "(SQNR)", cle[b], orig[b])
    ctx.order("Table 3", "W4A8: CLE + absorption beats the original per-tensor model "
              "(accuracy)", cle[4], orig[4], "acc")
    ctx.order("Table 3", "W4A8: per-channel beats CLE + absorption (SQNR)", pc[4], cle[4])
    half = Cell(orig[4].accs, tuple((o + p) / 2 for o, p in zip(orig[4].sqnrs, pc[4].sqnrs)))
    ctx.order("Table 3", "W4A8: CLE + absorption closes more than half the per-tensor -> "
              "per-channel SQNR gap (vs the per-seed midpoint)", cle[4], half)
    fp = ctx.model(name)[3]
    ctx.at_least("Table 3", "CLE keeps FP32 accuracy within 0.5 points (W16A16)",
                 res["+ CLE"]["fp"], fp - 0.5)
    ctx.at_least("Table 3", "CLE is near-lossless: logit SQNR >= 25 dB at W16A16",
                 res["+ CLE"]["fp"], 25.0, "sqnr")
    return "\n".join(parts)


# ---- Table 4: bias correction -----------------------------------------------------------
def table4(ctx: Ctx) -> str:
    bits = (8, 6, 4)
    variants = [("Original model", dict()),
                ("+ empirical bias correction", dict(bias_correction="empirical")),
                ("+ analytic bias correction", dict(bias_correction="analytic")),
                ("CLE + bias absorption", dict(cle=True)),
                ("CLE + bias absorption + analytic BC", dict(cle=True,
                                                             bias_correction="analytic"))]
    parts = ["# Whitepaper Table 4 -- bias correction", "",
             f"FP32: {_fp_line(ctx)}. {_cell_note(ctx)} Per-tensor weights (MSE range, "
             "rounding to nearest), 8-bit activations. The bias-shift of per-tensor rounding "
             "is largest in the depthwise layers.", ""]
    res = {}
    for name in MODELS:
        rows = []
        for label, kw in variants:
            cells = [run(ctx, name, w_bits=b, a_bits=8, **kw) for b in bits]
            res[(name, label)] = dict(zip(bits, cells))
            rows.append([label] + [c.fmt() for c in cells])
        parts += [f"## {name}", "", _md_table(["Model"] + [f"W{b}A8" for b in bits], rows), ""]
    name = "digits_mobilenet"
    orig = res[(name, "Original model")]
    for label in ("+ empirical bias correction", "+ analytic bias correction"):
        ctx.order("Table 4", f"{name} W4A8: {label.strip('+ ')} beats no correction (SQNR)",
                  res[(name, label)][4], orig[4])
    ctx.order("Table 4", f"{name} W4A8: CLE + analytic BC beats CLE alone (SQNR)",
              res[(name, "CLE + bias absorption + analytic BC")][4],
              res[(name, "CLE + bias absorption")][4])
    cnn = res[("digits_cnn", "Original model")][8]
    ctx.at_least("Goals", "digits_cnn W8A8 (per-tensor MSE, nearest) within 0.5 points of "
                 "FP32", cnn, ctx.model("digits_cnn")[3] - 0.5)
    return "\n".join(parts)


# ---- Table 5: AdaRound -----------------------------------------------------------------
def table5(ctx: Ctx) -> str:
    bits = (4, 3, 2)
    it = ctx.settings.adaround_iterations
    parts = ["# Whitepaper Table 5 -- AdaRound vs rounding-to-nearest", "",
             f"FP32: {_fp_line(ctx)}. {_cell_note(ctx)} Per-tensor weights on the MSE grid (the "
             f"same grid for both roundings), AdaRound {it} iterations per layer (paper: "
             "10000), lambda 0.01, beta 20 -> 2 cosine after 20% warm start, Adam lr 1e-3, "
             "inputs from the already-quantized preceding layers (eq. 35).", ""]
    res = {}
    for name in MODELS:
        rows = []
        for mode, label in (("weights", "W only (A FP32)"), ("a8", "A8")):
            for rounding in ("nearest", "adaround"):
                kw = dict(rounding=rounding)
                if rounding == "adaround":
                    kw["iterations"] = it
                cells = [run(ctx, name, weight_only=mode == "weights", w_bits=b, a_bits=8,
                             **kw) for b in bits]
                res[(name, mode, rounding)] = dict(zip(bits, cells))
                rows.append([f"{rounding.capitalize()}", label] + [c.fmt() for c in cells])
        parts += [f"## {name}", "", _md_table(["Rounding", "Activations"]
                                              + [f"W{b}" for b in bits], rows), ""]
    for name in MODELS:
        for b in bits:
            n, a = res[(name, "a8", "nearest")][b], res[(name, "a8", "adaround")][b]
            ctx.order("Table 5", f"{name} W{b}A8: AdaRound beats nearest (SQNR)", a, n)
            ctx.order("Table 5", f"{name} W{b}A8: AdaRound beats nearest (accuracy)", a, n,
                      "acc")
    ctx.at_least("Goals", "digits_cnn W4A8 AdaRound within 1.5 points of FP32",
                 res[("digits_cnn", "a8", "adaround")][4], ctx.model("digits_cnn")[3] - 1.5)
    return "\n".join(parts)


# ---- Bit-split tables ------------------------------------------------------------------
def bitsplit_configs(ctx: Ctx) -> dict[str, dict]:
    """The Bit-split table's configurations (the tests use the same ones)."""
    ep = ctx.settings.bitsplit_epochs
    bsc = dict(rounding="bitsplit", iterations=ep, per_channel=True, act_range="mse")
    return {"tflite": dict(weight_range="minmax", per_channel=False, act_range="minmax"),
            "bitsplit": bsc,
            "bitsplit_pt": dict(bsc, per_channel=False),
            "bitsplit_a8": dict(bsc, act_range="bitsplit")}


def bitsplit_tables(ctx: Ctx) -> str:
    bits = (8, 7, 6, 5, 4, 3, 2)
    ep = ctx.settings.bitsplit_epochs
    cfg = bitsplit_configs(ctx)
    parts = ["# Bit-split and Stitching (Wang et al. 2020) -- TF-Lite max scaling vs Bit-split",
             "", f"FP32: {_fp_line(ctx)}. {_cell_note(ctx)} TF-Lite: per-tensor "
             "`alpha = max|w| / (2^(b-1)-1)`, rounding to nearest, min-max activation ranges. "
             f"Bit-split: per output channel (the authors' code), {ep} epochs, output "
             f"reconstruction on the {ctx.settings.n_calib} calibration images; the "
             "per-tensor variant shares one alpha per layer. A8 rows for Bit-split use "
             "`act_range=\"bitsplit\"` (the least-squares unsigned scale of "
             "`bitsplit_act_scale`) for every non-negative activation tensor and min-max for "
             "signed ones (logits).", ""]
    res = {}
    for name in MODELS:
        rows = []
        for label, kw, wo in (
                ("TF-Lite", cfg["tflite"], True),
                ("Bit-split (per-channel)", cfg["bitsplit"], True),
                ("Bit-split (per-tensor)", cfg["bitsplit_pt"], True),
                ("TF-Lite (A8)", cfg["tflite"], False),
                ("Bit-split (per-channel, A8)", cfg["bitsplit_a8"], False)):
            cells = [run(ctx, name, weight_only=wo, w_bits=b, a_bits=8, **kw) for b in bits]
            res[(name, label)] = dict(zip(bits, cells))
            rows.append([label] + [c.fmt() for c in cells])
        parts += [f"## {name}", "", "Weight-only rows have FP32 activations; (A8) rows "
                  "quantize activations to 8 bits.", "",
                  _md_table(["Method"] + [f"W{b}" for b in bits], rows), ""]
    for name in MODELS:
        for b in (4, 3, 2):
            for t, s in (("TF-Lite", "Bit-split (per-channel)"),
                         ("TF-Lite (A8)", "Bit-split (per-channel, A8)")):
                ctx.order("Bit-split", f"{name} W{b}{' A8' if 'A8' in t else ''}: Bit-split "
                          "beats TF-Lite (SQNR)", res[(name, s)][b], res[(name, t)][b])
            ctx.order("Bit-split", f"{name} W{b}: Bit-split per-tensor beats TF-Lite (SQNR)",
                      res[(name, "Bit-split (per-tensor)")][b], res[(name, "TF-Lite")][b])
    w3a8 = run(ctx, "digits_cnn", w_bits=3, a_bits=8, **cfg["bitsplit"])
    ctx.at_least("Goals", "digits_cnn W3A8 Bit-split (per-channel, MSE activation ranges) "
                 "within 3 points of FP32", w3a8, ctx.model("digits_cnn")[3] - 3.0)
    return "\n".join(parts)


# ---- Low-bit table: the reconstruction family and QAT (issue 9) -------------------------
@dataclass(frozen=True)
class LowBitSettings:
    """The reduced budget of ``lowbit.md`` (a few CPU-minutes for all cells).

    Parameters
    ----------
    iterations : int
        Reconstruction iterations per unit (``QuantConfig.iterations``): per layer for
        AdaRound, per block for BRECQ / QDrop, for the whole network for NWQ (papers:
        10000-20000 per unit).
    qat_epochs, qat_lr, qat_patience : int, float, int
        QAT (``quant.train_qat``): Adam, cosine schedule, early stopping on 20 % of the
        training split held out.
    first_last_8bit : bool
        ``QuantConfig.first_last_8bit`` of every main row (as the papers do).
    """

    iterations: int = 200
    qat_epochs: int = 8
    qat_lr: float = 1e-3
    qat_patience: int = 3
    first_last_8bit: bool = True


LOWBIT = LowBitSettings()
LOWBIT_BITS = ((2, 4), (3, 3), (4, 4))
LOWBIT_METHODS = ("nearest", "adaround", "brecq", "qdrop", "nwq", "qat", "qat_adaround")
LOWBIT_LABELS = {"nearest": "Nearest", "adaround": "AdaRound", "brecq": "BRECQ",
                 "qdrop": "QDrop", "nwq": "NWQ", "qat": "QAT (LSQ, from nearest PTQ)",
                 "qat_adaround": "QAT (LSQ, from AdaRound PTQ)"}


def lowbit_cell(ctx: Ctx, name: str, method: str, w_bits: int, a_bits: int, *,
                lowbit: LowBitSettings = LOWBIT, first_last_8bit: bool | None = None) -> Cell:
    """One cell of ``lowbit.md`` (the tests call this too): ``method`` of
    :data:`LOWBIT_METHODS` on ``name`` at ``W{w_bits}A{a_bits}``, per-channel weights."""
    if method not in LOWBIT_METHODS:
        raise ValueError(f"method must be one of {LOWBIT_METHODS}, not {method!r}")
    fl = lowbit.first_last_8bit if first_last_8bit is None else first_last_8bit
    cfg = dict(w_bits=w_bits, a_bits=a_bits, per_channel=True, first_last_8bit=fl,
               progress=False)
    qat = _qat_budget(lowbit) if method.startswith("qat") else None
    if method in ("nearest", "qat"):
        return run(ctx, name, qat=qat, **cfg)
    rounding = "adaround" if method == "qat_adaround" else method
    return run(ctx, name, qat=qat, rounding=rounding, iterations=lowbit.iterations, **cfg)


def _qat_budget(lowbit: LowBitSettings = LOWBIT, **extra) -> dict:
    """``train_qat``'s arguments of the tables (plus ``extra``, e.g. ``bn_folding``)."""
    return dict(epochs=lowbit.qat_epochs, lr=lowbit.qat_lr, patience=lowbit.qat_patience,
                **extra)


def lowbit_table(ctx: Ctx) -> str:
    lb = LOWBIT
    fl = "yes" if lb.first_last_8bit else "no"
    parts = ["# Low-bit: the reconstruction family and QAT (issue 9)", "",
             f"FP32: {_fp_line(ctx)}. {_cell_note(ctx)} Per-channel weights (MSE range), "
             "activations MSE range, unsigned after ReLU. **First and last layer at 8 bits** "
             f"(`QuantConfig.first_last_8bit={lb.first_last_8bit}`, the papers' convention; "
             "column 'first/last 8-bit'); the rows marked 'no' quantize them to the table's "
             "bit-widths too.", "",
             f"**Reduced budget** (`paper_tables.LowBitSettings`, {lb}): {lb.iterations} "
             "reconstruction iterations per unit -- per layer (AdaRound), per block (BRECQ, "
             "QDrop), the whole network (NWQ) -- against the papers' 10000-20000, and QAT "
             f"for at most {lb.qat_epochs} epochs (Adam lr {lb.qat_lr:g}, cosine, early "
             f"stopping after {lb.qat_patience} epochs without a lower held-out loss; 20 % of "
             "the 1258 training images held out, split with the calibration seed) from the "
             "nearest-rounding PTQ model or from the AdaRound one (the whitepaper's PTQ "
             f"initialisation, {lb.iterations} iterations per layer), LSQ step sizes and "
             "static BN folding. Longer budgets change these numbers.", "",
             "ImageNet anchors (ResNet-18, MQBench's side-by-side benchmark, for reference "
             "only -- a different task and model): W2A4 AdaRound 62.3, BRECQ 63.6, QDrop "
             "64.5; W4A4 68.7 / 68.5 / 68.8 (%).", ""]
    cols = [f"W{w}A{a}" for w, a in LOWBIT_BITS]
    res = {}
    for name in MODELS:
        rows = []
        for m in LOWBIT_METHODS:
            cells = [lowbit_cell(ctx, name, m, w, a) for w, a in LOWBIT_BITS]
            res[(name, m)] = dict(zip(LOWBIT_BITS, cells))
            rows.append([LOWBIT_LABELS[m], fl] + [c.fmt() for c in cells])
        for m in ("nearest", "brecq"):
            cells = [lowbit_cell(ctx, name, m, w, a, first_last_8bit=not lb.first_last_8bit)
                     for w, a in LOWBIT_BITS]
            res[(name, m, "switch")] = dict(zip(LOWBIT_BITS, cells))
            rows.append([LOWBIT_LABELS[m], "no" if lb.first_last_8bit else "yes"]
                        + [c.fmt() for c in cells])
        parts += [f"## {name}", "", _md_table(["Method", "first/last 8-bit"] + cols, rows), ""]
    chain = ("nwq", "qdrop", "brecq", "adaround", "nearest")
    w2a4, w3a3, w4a4 = LOWBIT_BITS
    for name in MODELS:
        for better, worse in zip(chain, chain[1:]):
            ctx.order("Low-bit", f"{name} W2A4: {LOWBIT_LABELS[better]} beats "
                      f"{LOWBIT_LABELS[worse]} (accuracy)", res[(name, better)][w2a4],
                      res[(name, worse)][w2a4], "acc")
        for bits in (w2a4, w3a3):
            best = max(chain[:-1], key=lambda m: res[(name, m)][bits].acc)
            for q in ("qat", "qat_adaround"):
                ctx.order("Low-bit", f"{name} W{bits[0]}A{bits[1]}: {LOWBIT_LABELS[q]} beats "
                          f"the best PTQ method ({LOWBIT_LABELS[best]}, accuracy)",
                          res[(name, q)][bits], res[(name, best)][bits], "acc")
        ctx.order("Low-bit", f"{name} W2A4 nearest: first/last layer at 8 bits beats all "
                  "layers at W2A4 (accuracy)", res[(name, "nearest")][w2a4],
                  res[(name, "nearest", "switch")][w2a4], "acc")
    ctx.at_least("Low-bit", "digits_cnn W4A4 QAT within 1 point of FP32",
                 res[("digits_cnn", "qat")][w4a4], ctx.model("digits_cnn")[3] - 1.0)
    return "\n".join(parts)


# ---- QAT tables: BN folding (whitepaper Table 7) and bit-width trends (Table 10) ---------
#: (label, per_channel, bn_folding) of the BN-folding table's rows, the whitepaper's order
QAT_BN_ROWS = (("Static folding (per-tensor)", False, "static"),
               ("Running statistics, double forward (per-tensor)", False, "running"),
               ("Static folding (per-channel)", True, "static"),
               ("Running statistics, double forward (per-channel)", True, "running"),
               ("Keep BN in the per-channel scale (per-channel)", True, "per_channel"))
QAT_BN_BITS = ((4, 8), (4, 4))
QAT_TREND_BITS = ((8, 8), (4, 8), (4, 4))


def qat_cell(ctx: Ctx, name: str, w_bits: int, a_bits: int, *, per_channel: bool,
             bn_folding: str = "static", lowbit: LowBitSettings = LOWBIT) -> Cell:
    """One cell of ``qat.md`` (the tests call this too): LSQ QAT from the nearest PTQ start
    with ``lowbit``'s QAT budget, every layer at ``W{w_bits}A{a_bits}`` (no 8-bit first and
    last layer), weights per channel or per tensor, BN modelled as ``bn_folding``."""
    return run(ctx, name, qat=_qat_budget(lowbit, bn_folding=bn_folding), w_bits=w_bits,
               a_bits=a_bits, per_channel=per_channel, progress=False)


def qat_table(ctx: Ctx) -> str:
    lb = LOWBIT
    parts = ["# QAT (whitepaper sec. 4): BN folding and bit-width trends", "",
             f"FP32: {_fp_line(ctx)}. {_cell_note(ctx)} QAT as the standard pipeline of sec. "
             "4.4: LSQ step sizes and learnable activation offsets from the MSE-range, "
             f"nearest-rounding PTQ start, Adam lr {lb.qat_lr:g} (cosine), at most "
             f"{lb.qat_epochs} epochs with early stopping after {lb.qat_patience} epochs "
             "without a lower held-out loss (20 % of the 1258 training images held out, "
             "split with the calibration seed; `paper_tables.LowBitSettings`). Every layer at "
             "the column's bit-widths (no 8-bit first / last layer). The SQNR of a QAT model "
             "is low by design: training on labels moves the logits away from the FP32 "
             "model's, so the checks use accuracy.", "",
             "## BN folding during QAT (whitepaper Table 7; issue 9 calls it Table 9)", "",
             "`QatConfig.bn_folding`: `static` folds BN once into weights and bias (eq. 11-12); "
             "`running` keeps BN parameters and running statistics, updated by a float forward "
             "pass (Jacob et al.'s double forward, without their batch-statistics correction), "
             "and folds them into the weights before quantization; `per_channel` keeps BN as "
             "a per-channel factor of the weight scale (eq. 41, BN applied after the quantized "
             "weights, merged into the scale at export). Whitepaper (ResNet18 / MobileNetV2, "
             "W4A8 and W4A4): static folding on par with or better than the double forward; "
             "per-channel, keeping BN on par with or better than static folding.", ""]
    cols = [f"W{w}A{a}" for w, a in QAT_BN_BITS]
    bn = {}
    for name in MODELS:
        rows = []
        for label, pc, folding in QAT_BN_ROWS:
            cells = [qat_cell(ctx, name, w, a, per_channel=pc, bn_folding=folding)
                     for w, a in QAT_BN_BITS]
            bn[(name, folding, pc)] = dict(zip(QAT_BN_BITS, cells))
            rows.append([label] + [c.fmt() for c in cells])
        parts += [f"### {name}", "", _md_table(["BN during QAT"] + cols, rows), ""]
    parts += ["## Bit-width trends (whitepaper Table 10)", "",
              "Static BN folding. Whitepaper: W8A8 on par with FP32, W4A8 close to W8A8 "
              "(within 0.5 points for ResNets, 1.3-1.6 for MobileNetV2), W4A4 a further drop, "
              "largest for depthwise-separable models.", ""]
    cols = [f"{g} W{w}A{a}" for g in ("per-tensor", "per-channel") for w, a in QAT_TREND_BITS]
    trend, rows = {}, []
    for name in MODELS:
        cells = [qat_cell(ctx, name, w, a, per_channel=pc)
                 for pc in (False, True) for w, a in QAT_TREND_BITS]
        for pc in (False, True):
            trend[(name, pc)] = dict(zip(QAT_TREND_BITS, cells[3 * pc:3 * pc + 3]))
        rows.append([name, f"{ctx.model(name)[3]:.2f}"] + [c.fmt() for c in cells])
    parts += [_md_table(["Model", "FP32"] + cols, rows), ""]
    for name in MODELS:
        for w, a in QAT_BN_BITS:
            b = (w, a)
            ctx.not_worse("QAT BN", f"{name} W{w}A{a} per-tensor: static folding on par with "
                          "or better than running statistics (accuracy)",
                          bn[(name, "static", False)][b], bn[(name, "running", False)][b])
            ctx.not_worse("QAT BN", f"{name} W{w}A{a} per-channel: BN kept in the per-channel "
                          "scale on par with or better than static folding (accuracy)",
                          bn[(name, "per_channel", True)][b], bn[(name, "static", True)][b])
    for name in MODELS:
        fp = ctx.model(name)[3]
        for pc in (False, True):
            g = "per-channel" if pc else "per-tensor"
            t = trend[(name, pc)]
            ctx.at_least("QAT trends", f"{name} {g}: W8A8 within 0.5 points of FP32",
                         t[(8, 8)], fp - 0.5)
            ctx.at_least("QAT trends", f"{name} {g}: W4A8 within 1 point of W8A8 (mean)",
                         t[(4, 8)], t[(8, 8)].acc - 1.0)
            ctx.order("QAT trends", f"{name} {g}: W4A8 beats W4A4 (accuracy)", t[(4, 8)],
                      t[(4, 4)], "acc")
    return "\n".join(parts)


TABLES = {"table1": table1, "table3": table3, "table4": table4, "table5": table5,
          "bitsplit": bitsplit_tables, "lowbit": lowbit_table, "qat": qat_table}


def checks_dir() -> pathlib.Path:
    """Where each table's checks are kept between runs: ``<workdir>/paper-tables``."""
    from qaccel import workspace

    return workspace.current().dir("paper-tables")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qaccel.quant.paper_tables", description=__doc__
                                .split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="one seed, 300 AdaRound iterations, 10 Bit-split epochs (a fast look; "
                        "default: the tests' settings, seeds 0-2)")
    p.add_argument("--only", default="", help="comma-separated subset of " + ",".join(TABLES)
                   + " (default: all)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/paper-tables"),
                   help="directory for the markdown tables (default: docs/paper-tables, "
                        "relative to the current directory)")
    args = p.parse_args(argv)
    settings = Settings()
    if args.quick:
        settings = Settings(adaround_iterations=300, bitsplit_epochs=10, seeds=(0,))
    chosen = [t for t in args.only.split(",") if t] or list(TABLES)
    for t in chosen:
        if t not in TABLES:
            p.error(f"--only: unknown table {t!r}; choose from {', '.join(TABLES)}")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out: {str(args.out)!r} exists and is not a directory")
    ctx = Ctx(settings)
    args.out.mkdir(parents=True, exist_ok=True)
    store = checks_dir()
    for name in MODELS:
        print(f"[paper-tables] {name}: FP32 {ctx.model(name)[3]:.2f}%", flush=True)
    for t in chosen:
        t0, c0 = time.perf_counter(), time.process_time()
        n0 = len(ctx.checks)
        print(f"[paper-tables] {t} ...", flush=True)
        text = TABLES[t](ctx)
        mine = ctx.checks[n0:]
        text += "\n## Ordering checks\n\n" + _checks_table(mine) + "\n"
        text += (f"\n_Generated by `python -m qaccel.quant.paper_tables` "
                 f"({time.process_time() - c0:.0f} s CPU, {time.perf_counter() - t0:.0f} s "
                 f"wall on a shared machine; settings: {settings} -- the settings "
                 "`tests/quant/test_paper_orderings.py` uses)._\n")
        (args.out / f"{t}.md").write_text(text)
        (store / f"{t}.json").write_text(json.dumps(
            {"settings": asdict(settings), "checks": [asdict(c) for c in mine]}, indent=1))
    write_summary(args.out, settings)
    return 0


def _checks_table(checks: list[Check]) -> str:
    lines = ["| Table | Claim | Reproduced | Measured |", "|---|---|---|---|"]
    lines += [f"| {c.table} | {c.claim} | {'yes' if c.ok else '**no**'} | {c.detail} |"
              for c in checks]
    return "\n".join(lines)


def _checks_from_doc(doc: pathlib.Path, settings: Settings) -> list[Check]:
    """The ordering checks of a table file generated earlier with ``settings`` (its own
    "Ordering checks" section, written by :func:`main`), for a workspace without that
    table's JSON (e.g. after ``--only``); ``[]`` if there is none."""
    if not doc.is_file():
        return []
    text = doc.read_text()
    if f"settings: {settings}" not in text or "\n## Ordering checks\n" not in text:
        return []
    rows = text.split("\n## Ordering checks\n", 1)[1].splitlines()
    checks = []
    for line in rows:
        cols = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cols) == 4 and cols[2] in ("yes", "**no**"):
            checks.append(Check(cols[0], cols[1], cols[2] == "yes", cols[3]))
    return checks


def write_summary(out: pathlib.Path, settings: Settings) -> None:
    """``measured.md``: the ordering checks of every table generated so far with
    ``settings`` (the per-table results are kept in ``<workdir>/paper-tables/<table>.json``;
    tables generated with other settings are left out and named)."""
    checks, have, other = [], [], []
    for t in TABLES:
        f = checks_dir() / f"{t}.json"
        if not f.exists():
            doc = _checks_from_doc(out / f"{t}.md", settings)
            if doc:
                have.append(t)
                checks += doc
            continue
        data = json.loads(f.read_text())
        if not isinstance(data, dict) or data.get("settings") != json.loads(
                json.dumps(asdict(settings))):
            other.append(t)
            continue
        have.append(t)
        checks += [Check(**c) for c in data["checks"]]
    ok = sum(c.ok for c in checks)
    lines = ["# Ordering checks (measured)", "",
             "Each row is computed from the tables by `quant.paper_tables` with the rule of "
             "its docstring (the worst calibration seed of the better configuration beats "
             "the best seed of the worse one by more than the spread over seeds); 'no' means "
             "the ordering is **not reproduced** on the digits models.", "",
             _checks_table(checks), "",
             f"{ok} of {len(checks)} checks reproduced (tables: {', '.join(have)}; "
             f"settings: {settings})."]
    if other:
        lines.append(f"Not included (generated with other settings): {', '.join(other)}.")
    (out / "measured.md").write_text("\n".join(lines) + "\n")
    print(f"[paper-tables] {ok}/{len(checks)} orderings reproduced -> {out}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
