"""``qaccel quantize`` and ``qaccel sensitivity``: post-training quantization of the digits
reference models (``quant.digits``) to an integer network, and the Figure 9 per-layer
sensitivity report."""

from __future__ import annotations

import argparse
import pathlib


def add_quant_options(p: argparse.ArgumentParser, model_help: str | None = None) -> None:
    """``--model`` and the :class:`QuantConfig` options (shared with ``qaccel run``)."""
    from qaccel.quant.config import ACT_RANGES, BIAS_CORRECTIONS, ROUNDINGS, WEIGHT_RANGES

    p.add_argument("--model", default="digits_cnn",
                   help=model_help or "reference model: digits_cnn | digits_mobilenet "
                                      "(default digits_cnn)")
    g = p.add_argument_group("quantization (quant.QuantConfig)")
    g.add_argument("--w-bits", type=int, default=8, help="weight bits (default 8)")
    g.add_argument("--a-bits", type=int, default=8, help="activation bits (default 8)")
    scal = g.add_mutually_exclusive_group()
    scal.add_argument("--per-channel", dest="per_channel", action="store_true", default=False,
                      help="per-output-channel weight scales and (M, S)")
    scal.add_argument("--per-tensor", dest="per_channel", action="store_false",
                      help="one weight scale per layer (default)")
    g.add_argument("--weight-range", choices=WEIGHT_RANGES, default="mse")
    g.add_argument("--act-range", choices=ACT_RANGES, default="mse")
    g.add_argument("--rounding", choices=ROUNDINGS, default="nearest")
    g.add_argument("--cle", action="store_true", help="cross-layer equalization (+ bias "
                   "absorption)")
    g.add_argument("--bias-correction", choices=BIAS_CORRECTIONS, default="none")
    g.add_argument("--iterations", type=int, default=2000,
                   help="AdaRound / Bit-split iterations per layer (default 2000)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--mult-bits", type=int, default=16, help="requantizer multiplier bits")
    g.add_argument("--acc-bits", type=int, default=32, help="accumulator bits")
    g.add_argument("--calib", type=int, default=256, help="calibration images (default 256)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize", help="quantize a digits model and write its integer network",
        description="Post-training quantization (whitepaper Figure 8 pipeline) of a digits "
                    "reference model; exports the integer network (.npz + JSON manifest) "
                    "and checks it against the fake-quantized model on the test split.")
    add_quant_options(p)
    p.add_argument("-o", "--output", required=True, type=pathlib.Path, metavar="NET.npz",
                   help="integer network file to write")
    p.set_defaults(func=run_quantize)
    s = sub.add_parser(
        "sensitivity", help="per-layer quantization sensitivity report (Figure 9)",
        description="Switch each quantizer on alone at the target bit-widths and report "
                    "tensor SQNR, network-output SQNR and test accuracy (markdown + PNG).")
    add_quant_options(s)
    s.add_argument("-o", "--output", required=True, type=pathlib.Path, metavar="REPORT.md",
                   help="markdown report to write")
    s.add_argument("--plot", type=pathlib.Path, default=None, metavar="PLOT.png",
                   help="bar chart (default: next to the report, .png)")
    s.set_defaults(func=run_sensitivity)


def quant_config(args):
    from qaccel.quant import QuantConfig

    return QuantConfig(w_bits=args.w_bits, a_bits=args.a_bits, per_channel=args.per_channel,
                       weight_range=args.weight_range, act_range=args.act_range,
                       rounding=args.rounding, cle=args.cle,
                       bias_correction=args.bias_correction, iterations=args.iterations,
                       seed=args.seed, mult_bits=args.mult_bits, acc_bits=args.acc_bits)


def _load(args):
    import torch

    from qaccel.flow import load_model

    torch.set_num_threads(1)
    if args.calib < 1:
        raise ValueError(f"--calib must be >= 1, not {args.calib}")
    if ":" in args.model or args.model.endswith(".npz"):
        raise ValueError(f"--model: {args.model!r} is not a shipped model (qaccel run takes "
                         f"module:factory and .npz)")
    try:
        m = load_model(args.model, n_calib=args.calib)
    except ValueError as exc:
        raise ValueError(f"--model: {exc}") from None
    return m.model, m.calib, m.test_set


def run_quantize(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from qaccel import flow

    cfg = quant_config(args)                 # ValueError -> "qaccel: error: ..." (exit 2)
    model, calib, (x_te, y_te) = _load(args)
    qm, net = flow.quantize_model(model, calib, cfg)      # cached in the workspace
    path = net.save(args.output)
    fp_acc = flow.float_accuracy(model, (x_te, y_te))
    fq_acc = flow.float_accuracy(qm, (x_te, y_te))
    int_acc, y_int = flow.integer_accuracy(net, (x_te, y_te))
    with torch.no_grad():
        want = np.rint(qm(x_te).numpy() / net.output_q.scale) + net.output_q.zero_point
    diff = np.abs(y_int - want)
    print(f"{args.model} W{cfg.w_bits}A{cfg.a_bits} "
          f"{'per-channel' if cfg.per_channel else 'per-tensor'} rounding={cfg.rounding} "
          f"cle={cfg.cle} bias_correction={cfg.bias_correction}")
    print(f"  accuracy: FP32 {fp_acc:.2f}%  fake-quant {fq_acc:.2f}%  "
          f"integer network {int_acc:.2f}%  ({len(y_te)} test images)")
    print(f"  integer vs fake-quant logits: {100 * float((diff > 0).mean()):.3f}% off by "
          f"one LSB, max |diff| {int(diff.max())}")
    print(f"wrote {path} ({len(net.layers)} layers)")
    return 0


def run_sensitivity(args: argparse.Namespace) -> int:
    from qaccel.quant import digits
    from qaccel.quant.sensitivity import sensitivity_report

    cfg = quant_config(args)
    model, calib, test_set = _load(args)
    rep = sensitivity_report(model, calib, cfg, eval_data=[test_set[0]],
                             metric=lambda m: digits.evaluate(m, test_set),
                             metric_name="test accuracy (%)")
    out: pathlib.Path = args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# Quantization sensitivity: {args.model} W{cfg.w_bits}A{cfg.a_bits}\n\n"
                   + rep.to_markdown())
    png = rep.plot(args.plot if args.plot is not None else out.with_suffix(".png"))
    worst = ", ".join(f"{r.name} ({r.output_sqnr:.1f} dB)" for r in rep.worst(3))
    print(f"most sensitive: {worst}")
    print(f"wrote {out} and {png}")
    return 0
