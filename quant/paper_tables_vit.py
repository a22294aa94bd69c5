"""``make paper-tables``, transformer part: the digits ViT (``quant.digits.digits_vit``,
image rows as tokens) quantized to an integer-only network, ``docs/paper-tables/vit.md``.

Every cell is the **integer network** (``quant.export`` -> ``sim.executor``: GEMMs,
activation x activation matmuls and the vector-unit LayerNorm / softmax / GELU / adds, in
integer arithmetic only) on the 539 held-out test images, over the calibration seeds of
:class:`quant.paper_tables.Settings` (same cells, rule and checks as the CNN tables,
:func:`quant.paper_tables.ordering`), plus the number of output integers where the
fake-quant model in exact mode differs from the executor (goal: 0).

Rows: FP32; W8A8 (per-channel weights; goal: within 0.5 points of FP32); W4A8 with
AdaRound (goal: within 1.5 points); W8A8 per-tensor with no 16-bit exception, and with the
``k`` activation quantizers the sensitivity report finds worst kept at 16 bits
(:func:`quant.sensitivity.a16_exceptions`, chosen on each seed's calibration data: the
whitepaper's Table 6 †), the same pair at 6-bit activations, and the exceptions with
40-bit accumulators (``QuantConfig.acc_bits``; see the table's note on residual adds).

Low-bit section (issue 9): every method of :data:`quant.paper_tables.LOWBIT_METHODS` at
W4A4 with per-channel weights, at the CNN tables' reduced budget
(:data:`quant.paper_tables.LOWBIT`), also measured on the integer network; a method that
fails on the ViT gets a row with its error message. QAT additionally at ``train_qat``'s
default learning rate (:data:`QAT_LR_LOW`).

``python -m qaccel.quant.paper_tables_vit [--quick] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from dataclasses import asdict

import numpy as np
import torch

from . import digits
from .paper_tables import (
    LOWBIT,
    LOWBIT_LABELS,
    LOWBIT_METHODS,
    Cell,
    Ctx,
    Settings,
    _checks_table,
    _md_table,
    _qat_budget,
    _threads,
    checks_dir,
    sqnr_db,
)

MODEL = "digits_vit"
#: activation quantizers kept at 16 bits by the sensitivity-guided rows
A16_K = 3
TABLE = "vit"

#: (label, QuantConfig options, 16-bit exceptions?) of every quantized row
ROWS = (
    ("W8A8 (per-channel weights)", dict(w_bits=8, a_bits=8, per_channel=True), False),
    ("W4A8 AdaRound (per-channel weights)", dict(w_bits=4, a_bits=8, per_channel=True,
                                                 rounding="adaround"), False),
    ("W8A8 per-tensor, no 16-bit exception", dict(w_bits=8, a_bits=8), False),
    (f"W8A8 per-tensor, {A16_K} activations at 16 bits (sensitivity) †",
     dict(w_bits=8, a_bits=8), True),
    ("W8A6 per-tensor, no 16-bit exception", dict(w_bits=8, a_bits=6), False),
    (f"W8A6 per-tensor, {A16_K} activations at 16 bits (sensitivity) †",
     dict(w_bits=8, a_bits=6), True),
    (f"W8A8 per-tensor, {A16_K} at 16 bits †, 40-bit accumulators",
     dict(w_bits=8, a_bits=8, acc_bits=40), True),
    (f"W8A6 per-tensor, {A16_K} at 16 bits †, 40-bit accumulators",
     dict(w_bits=8, a_bits=6, acc_bits=40), True),
)


#: the low-bit section's bit-widths (issue 9; W4A8 would be added if W4A4 collapsed)
LOWBIT_VIT_BITS = ((4, 4),)
#: QAT's extra rows: ``train_qat``'s default Adam learning rate (the CNN tables use 1e-3)
QAT_LR_LOW = 1e-4


def measure(ctx: Ctx, seed: int, cfg: dict, a16: bool = False,
            qat: dict | None = None) -> dict:
    """One calibration seed of one row (cached in ``ctx``): integer-network accuracy (%)
    and logit SQNR (dB) against FP32, exact-mode differences, the 16-bit quantizers.
    ``qat``: ``train_qat``'s arguments; the PTQ model is then trained with LSQ QAT on the
    training split first (as :func:`quant.paper_tables._measure` does)."""
    from qaccel.sim import executor

    from qaccel import quant

    from .sensitivity import a16_exceptions

    if "rounding" in cfg and cfg["rounding"] != "nearest":
        cfg = {"iterations": ctx.settings.adaround_iterations, **cfg}
    key = ("vit", seed, tuple(sorted(cfg.items())), a16, tuple(sorted((qat or {}).items())))
    if key not in ctx._cache:
        model, (x, y), ref, _ = ctx.model(MODEL)
        with _threads(ctx.settings.threads):
            calib = list(digits.calib_loader(ctx.settings.n_calib, seed=seed))
            qc = quant.QuantConfig(seed=seed, progress=False, **cfg)
            if a16:
                qc, _ = a16_exceptions(model, calib, qc, A16_K)
            if qat is None:
                qm = quant.quantize(model, calib, qc)
            else:
                from . import qat as qat_mod

                torch.manual_seed(seed)
                qm = qat_mod.prepare_qat(model, calib, qat_mod.QatConfig(quant=qc))
                x_tr, y_tr, _, _ = digits.load_split()
                tr, va = qat_mod.train_val_loaders(x_tr, y_tr, seed=seed)
                qat_mod.train_qat(qm, tr, va, progress=False, **qat)
            net = quant.export(qm, x[:1])
            y_int = executor.run(net, net.input_q.quantize(x.numpy()))
            diffs = int((quant.exact_outputs(qm, x, net=net) != y_int).sum())
        out = torch.from_numpy(net.output_q.dequantize(y_int).astype(np.float32))
        ctx._cache[key] = {
            "acc": 100.0 * float((out.argmax(1) == y).float().mean()),
            "sqnr": sqnr_db(ref, out), "diffs": diffs, "outputs": int(y_int.size),
            "a16": [o.name for o in qc.quantizer_bits if o.bits == 16]}
    return ctx._cache[key]


def cell(ctx: Ctx, cfg: dict, a16: bool = False,
         qat: dict | None = None) -> tuple[Cell, list[dict]]:
    """The row's :class:`Cell` over ``ctx.settings.seeds`` and the per-seed records."""
    got = [measure(ctx, s, cfg, a16, qat) for s in ctx.settings.seeds]
    return Cell(tuple(g["acc"] for g in got), tuple(g["sqnr"] for g in got)), got


def lowbit_rows() -> list[tuple[str, str, dict]]:
    """``(method, label, train_qat arguments or {})`` of the low-bit section: the CNN
    tables' methods and budget, then QAT at :data:`QAT_LR_LOW`."""
    rows = [(m, LOWBIT_LABELS[m], _qat_budget() if m.startswith("qat") else {})
            for m in LOWBIT_METHODS]
    rows += [(m, f"{LOWBIT_LABELS[m]}, Adam lr {QAT_LR_LOW:g}",
              {**_qat_budget(), "lr": QAT_LR_LOW}) for m in ("qat", "qat_adaround")]
    return rows


def lowbit_cell(ctx: Ctx, method: str, w_bits: int, a_bits: int,
                qat: dict | None = None) -> tuple[Cell, list[dict]] | str:
    """One low-bit cell of the ViT (integer network, per-channel weights, first and last
    layer per ``LOWBIT.first_last_8bit``), or the error message of a method that fails."""
    if method not in LOWBIT_METHODS:
        raise ValueError(f"method must be one of {LOWBIT_METHODS}, not {method!r}")
    cfg = dict(w_bits=w_bits, a_bits=a_bits, per_channel=True,
               first_last_8bit=LOWBIT.first_last_8bit)
    if method not in ("nearest", "qat"):
        cfg.update(rounding="adaround" if method == "qat_adaround" else method,
                   iterations=LOWBIT.iterations)
    try:
        return cell(ctx, cfg, qat=qat or None)
    except Exception as e:                      # a measured result: the row says why
        return f"{type(e).__name__}: {e}"


def vit_table(ctx: Ctx) -> str:
    """The markdown of ``vit.md``; records its checks in ``ctx``."""
    fp = ctx.model(MODEL)[3]
    rows, cells = [], {}
    for label, cfg, a16 in ROWS:
        c, recs = cell(ctx, cfg, a16)
        cells[label] = (c, recs)
        diffs = sum(r["diffs"] for r in recs)
        n = sum(r["outputs"] for r in recs)
        rows.append([label, c.fmt(), f"{min(c.accs):.2f} .. {max(c.accs):.2f}",
                     f"{diffs} of {n}"])
    w8, w4, pt, pt16, a6, a616, pt40, a640 = (cells[label][0] for label, _, _ in ROWS)
    tag = "digits ViT"
    ctx.at_least(tag, "W8A8 integer network within 0.5 points of FP32", w8, fp - 0.5)
    ctx.at_least(tag, "W4A8 AdaRound integer network within 1.5 points of FP32", w4,
                 fp - 1.5)
    ctx.check(tag, "exact mode == executor: 0 differing outputs in every cell",
              all(r["diffs"] == 0 for _, recs in cells.values() for r in recs),
              f"{sum(r['diffs'] for _, recs in cells.values() for r in recs)} differing")
    for bits, no, yes, yes40 in ((8, pt, pt16, pt40), (6, a6, a616, a640)):
        ctx.order(tag, f"W8A{bits} per-tensor: 16-bit exceptions beat none (SQNR)", yes, no)
        ctx.order(tag, f"W8A{bits} per-tensor: 16-bit exceptions beat none (accuracy)", yes,
                  no, "acc")
        ctx.order(tag, f"W8A{bits} per-tensor: 16-bit exceptions with 40-bit accumulators "
                  "beat none (SQNR)", yes40, no)
    picks: dict[tuple[str, ...], list[str]] = {}         # quantizers -> the rows
    for i, (_, recs) in enumerate(cells.values()):
        if recs[0]["a16"]:
            picks.setdefault(tuple(recs[0]["a16"]), []).append(f"row {i + 2}")
    s = ctx.settings
    parts = [
        "# Digits ViT -- integer-only transformer (whitepaper sec. 2.4 / 3.6-3.7, Table 6 †)",
        "",
        f"`quant.digits.digits_vit`: 8 image rows as tokens, width 32, 4 heads, 2 pre-LN "
        f"blocks (GELU FFN), shipped FP32 weights: **{fp:.2f} %** on the 539 held-out "
        "images. Every cell is the integer network (`quant.export` -> `sim.executor`: "
        "Linear and attention GEMMs, I-BERT-style integer LayerNorm / softmax / GELU and "
        "residual adds on the vector unit), not the fake-quant model.",
        "",
        f"Cells: top-1 accuracy (%) / logit SQNR vs FP32 (dB), mean over calibration seeds "
        f"{list(s.seeds)} ({s.n_calib} training images each); MSE ranges; AdaRound "
        f"{s.adaround_iterations} iterations per layer. 'Exact-mode diffs': output integers "
        "where the fake-quant model in exact mode differs from the executor, over all "
        "seeds.",
        "",
        _md_table(["Configuration", "Accuracy / SQNR", "Accuracy range over seeds",
                   "Exact-mode diffs"], [["FP32", f"{fp:.2f} / inf", "", ""]] + rows),
        "",
        f"† The {A16_K} activation quantizers with the lowest network-output SQNR when "
        "switched on alone (`quant.sensitivity.a16_exceptions` on each seed's calibration "
        "images; `qaccel quantize --a16 auto:3`) kept at 16 bits. Seed "
        f"{s.seeds[0]} picked: "
        + "; ".join(f"{', '.join(f'`{n}`' for n in names)} ({', '.join(labels)})"
                    for names, labels in picks.items()) + ".",
        "",
        f"Measured: without an exception W8A8 per-tensor loses {fp - pt.acc:.2f} points "
        f"(mean; {fp - min(pt.accs):.2f} worst seed) and W8A6 {fp - a6.acc:.2f}; with the "
        f"16-bit exceptions {fp - pt16.acc:.2f} and {fp - a616.acc:.2f} points; the logit "
        f"SQNR changes by {pt16.sqnr - pt.sqnr:+.1f} and {a616.sqnr - a6.sqnr:+.1f} dB with "
        f"32-bit accumulators, {pt40.sqnr - pt.sqnr:+.1f} and {a640.sqnr - a6.sqnr:+.1f} dB "
        "with 40-bit ones. Why the accumulator matters: a residual add is one requantizer "
        "with a shared shift for both inputs, and its multipliers get `acc_bits - 16 - 3` "
        "bits when an input is 16-bit (13 bits at `acc_bits = 32`), so a 16-bit input whose "
        "scale is ~2^10 smaller than the output's is rescaled with a few-bit multiplier; the "
        "fake-quant model (float32 mode) does not see this loss, the integer network and "
        "the exact mode do (both identically). The digits ViT has no BERT-like outliers in "
        "its residual stream, so the per-tensor drop the whitepaper's † repairs is small "
        "here; the checks below say whether a recovery exceeds the seed spread.",
    ]
    return "\n".join(parts)


def lowbit_section(ctx: Ctx) -> str:
    """The low-bit section of ``vit.md`` (issue 9); records its checks in ``ctx``."""
    fl = "yes" if LOWBIT.first_last_8bit else "no"
    cols = [f"W{w}A{a}" for w, a in LOWBIT_VIT_BITS]
    rows, res = [], {}
    for method, label, qat in lowbit_rows():
        got = [lowbit_cell(ctx, method, w, a, qat) for w, a in LOWBIT_VIT_BITS]
        res[label] = dict(zip(LOWBIT_VIT_BITS, got))
        for bits, g in zip(cols, got):
            if isinstance(g, str):
                rows.append([label, fl, bits, f"fails: {g}", "", ""])
            else:
                c, recs = g
                rows.append([label, fl, bits, c.fmt(), f"{min(c.accs):.2f} .. {max(c.accs):.2f}",
                             f"{sum(r['diffs'] for r in recs)} of "
                             f"{sum(r['outputs'] for r in recs)}"])
    tag = "digits ViT low-bit"
    ok = [g for per in res.values() for g in per.values() if not isinstance(g, str)]
    ctx.check(tag, "exact mode == executor: 0 differing outputs in every low-bit cell",
              all(r["diffs"] == 0 for _, recs in ok for r in recs),
              f"{sum(r['diffs'] for _, recs in ok for r in recs)} differing")
    chain = [LOWBIT_LABELS[m] for m in ("nwq", "qdrop", "brecq", "adaround", "nearest")]
    qats = [label for m, label, _ in lowbit_rows() if m.startswith("qat")]
    for bits in LOWBIT_VIT_BITS:
        name = f"W{bits[0]}A{bits[1]}"
        pairs = list(zip(chain, chain[1:]))
        ptq = [m for m in chain[:-1] if not isinstance(res[m][bits], str)]
        if ptq:
            best = max(ptq, key=lambda m: res[m][bits][0].acc)
            pairs += [(q, best) for q in qats]
        for better, worse in pairs:
            claim = f"{name}: {better} beats {worse} (accuracy)"
            b, w = res[better][bits], res[worse][bits]
            if isinstance(b, str) or isinstance(w, str):
                ctx.check(tag, claim, False, "no result: "
                          + (f"{better} fails" if isinstance(b, str) else f"{worse} fails"))
            else:
                ctx.order(tag, claim, b[0], w[0], "acc")
    lb = LOWBIT
    return "\n".join([
        "## Low-bit: the reconstruction family and QAT on the ViT (issue 9)", "",
        "Same methods and **reduced budget** as `lowbit.md` (`paper_tables.LowBitSettings`, "
        f"{lb}): per-channel weights (MSE range), MSE activation ranges, first and last "
        f"layer at 8 bits ({fl}); {lb.iterations} reconstruction iterations per unit "
        "(per layer for AdaRound, per block for BRECQ and "
        "QDrop, the whole network for NWQ; papers 10000-20000); QAT (LSQ step sizes, "
        f"static BN folding -- the ViT has no BN) for at most {lb.qat_epochs} epochs, "
        f"cosine, early stopping after {lb.qat_patience} epochs, at the CNN tables' Adam "
        f"lr {lb.qat_lr:g} and at `train_qat`'s default {QAT_LR_LOW:g}. Unlike "
        "`lowbit.md` (fake-quant model), every cell here is the integer network; "
        "mean over the calibration seeds above. W4A4 does not collapse, so W4A8 is not "
        "measured here (W4A8 AdaRound: table above).", "",
        _md_table(["Method", "first/last 8-bit", "Bits", "Accuracy / SQNR",
                   "Accuracy range over seeds", "Exact-mode diffs"], rows), "",
        "A 'fails' cell is the error the method raised on the ViT (a measured result)."
        + (f" QAT at lr {lb.qat_lr:g} (diagnosed on seed 0): Adam moves each LSQ step size "
           "by up to ~lr per iteration, while the ViT's per-channel weight steps are ~2e-3, "
           "so some of the embedding's collapse to the 1e-8 floor and that channel's bias "
           "(bias / (s_in s_w)) overflows the 32-bit accumulator at export."
           if any(isinstance(g, str) for g in res[LOWBIT_LABELS["qat"]].values()) else ""),
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qaccel.quant.paper_tables_vit",
                                description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="one seed, 300 AdaRound iterations (default: seeds 0-2, 1000)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/paper-tables"),
                   help="directory for vit.md (default: docs/paper-tables)")
    args = p.parse_args(argv)
    settings = Settings(adaround_iterations=300, seeds=(0,)) if args.quick else Settings()
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out: {str(args.out)!r} exists and is not a directory")
    ctx = Ctx(settings)
    t0, c0 = time.perf_counter(), time.process_time()
    print(f"[paper-tables] {TABLE} ...", flush=True)
    text = vit_table(ctx)
    c1 = time.process_time()
    print(f"[paper-tables] {TABLE} low-bit ...", flush=True)
    text += "\n\n" + lowbit_section(ctx)
    text += (f"\n\nLow-bit section: {time.process_time() - c1:.0f} s CPU "
             f"(torch threads: {settings.threads}).")
    text += "\n\n## Checks\n\n" + _checks_table(ctx.checks) + "\n"
    text += (f"\n_Generated by `python -m qaccel.quant.paper_tables_vit` "
             f"({time.process_time() - c0:.0f} s CPU, {time.perf_counter() - t0:.0f} s wall "
             f"on a shared machine; settings: {settings})._\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{TABLE}.md").write_text(text)
    (checks_dir() / f"{TABLE}.json").write_text(json.dumps(
        {"settings": asdict(settings), "checks": [asdict(c) for c in ctx.checks]}, indent=1))
    print(f"[paper-tables] {sum(c.ok for c in ctx.checks)}/{len(ctx.checks)} checks -> "
          f"{args.out / f'{TABLE}.md'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
