"""``qaccel quantize`` and ``qaccel sensitivity``: post-training quantization of the digits
reference models (``quant.digits``) to an integer network, and the Figure 9 per-layer
sensitivity report.

Every option is checked when the arguments are parsed (exit status 2 naming the option,
before any work): bit-widths and counts against their ranges, output paths against
``qaccel.commands.options.output_file``."""

from __future__ import annotations

import argparse
import pathlib
import re

from qaccel.commands.options import int_range, output_file

_PROGRESS = {"auto": "auto", "on": True, "off": False}


def _calib_count(value: str) -> int:
    """argparse ``type=`` for ``--calib``: 1 .. the number of training images."""
    from qaccel.quant import digits

    return int_range(1, len(digits.load_split()[0]))(value)


def _layer_bits(value: str):
    """argparse ``type=`` for ``--layer-bits NAME:W:A`` (``W`` or ``A`` may be ``-``)."""
    from qaccel.quant import LayerOverride

    parts = value.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise argparse.ArgumentTypeError(f"expected NAME:W_BITS:A_BITS, not {value!r}")
    name, w, a = parts
    try:
        bits = [None if v == "-" else int(v) for v in (w, a)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bits of {value!r} must be integers or '-'") \
            from None
    try:
        return LayerOverride(name, *bits)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _a16(value: str):
    """argparse ``type=`` for ``--a16``: ``auto:K`` (``K`` >= 0) -> ``K``, or quantizer
    names separated by commas -> a tuple of names."""
    if value.startswith("auto:"):
        return int_range(0, 10_000)(value[5:])
    names = tuple(n.strip() for n in value.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected auto:K or NAME[,NAME...], not {value!r}")
    return names


def npz_file(value: str) -> pathlib.Path:
    """``output_file`` for the ``.npz`` the network is saved as: the path given, and the
    path with ``.npz`` appended if missing (as ``IntNetwork.save`` writes it)."""
    path = output_file(value)
    return path if path.suffix == ".npz" else output_file(value + ".npz")


def add_quant_options(p: argparse.ArgumentParser, model_help: str | None = None) -> None:
    """``--model``, ``--calib`` and the :class:`QuantConfig` options (shared with
    ``qaccel run``). Without ``model_help``, ``--model`` is a shipped digits model and
    ``--calib`` at most its training split's size; with it, ``--model`` is free text."""
    from qaccel.quant import digits
    from qaccel.quant.config import (
        ACT_RANGES,
        BIAS_CORRECTIONS,
        INT_RANGES,
        ROUNDINGS,
        WEIGHT_RANGES,
    )

    if model_help is None:
        p.add_argument("--model", default="digits_cnn", choices=sorted(digits.ARCHS),
                       help="reference model (default: %(default)s)")
    else:
        p.add_argument("--model", default="digits_cnn", help=model_help)
    g = p.add_argument_group("quantization (quant.QuantConfig)")
    g.add_argument("--w-bits", type=int_range(*INT_RANGES["w_bits"]), default=8,
                   help="weight bits, in [2, 16] (default: %(default)s)")
    g.add_argument("--a-bits", type=int_range(*INT_RANGES["a_bits"]), default=8,
                   help="activation bits, in [2, 16] (default: %(default)s)")
    scal = g.add_mutually_exclusive_group()
    scal.add_argument("--per-channel", dest="per_channel", action="store_true", default=False,
                      help="per-output-channel weight scales and (M, S) (default: per tensor)")
    scal.add_argument("--per-tensor", dest="per_channel", action="store_false",
                      help="one weight scale per layer (the default)")
    g.add_argument("--weight-range", choices=WEIGHT_RANGES, default="mse",
                   help="weight range setting (default: %(default)s)")
    g.add_argument("--act-range", choices=ACT_RANGES, default="mse",
                   help="activation range setting (default: %(default)s)")
    g.add_argument("--rounding", choices=ROUNDINGS, default="nearest",
                   help="weight rounding (default: %(default)s)")
    g.add_argument("--cle", action="store_true",
                   help="cross-layer equalization with high-bias absorption (default: off)")
    g.add_argument("--bias-correction", choices=BIAS_CORRECTIONS, default="none",
                   help="bias correction (default: %(default)s)")
    g.add_argument("--iterations", type=int_range(*INT_RANGES["iterations"]), default=2000,
                   help="AdaRound / Bit-split iterations per layer, BRECQ / QDrop per block, "
                        "NWQ for the whole network (default: %(default)s)")
    g.add_argument("--seed", type=int_range(*INT_RANGES["seed"]), default=0,
                   help="seed of every random choice (default: %(default)s)")
    g.add_argument("--mult-bits", type=int_range(*INT_RANGES["mult_bits"]), default=16,
                   help="requantizer multiplier bits, in [1, 32] (default: %(default)s)")
    g.add_argument("--acc-bits", type=int_range(*INT_RANGES["acc_bits"]), default=32,
                   help="accumulator bits, in [4, 60], >= w + a bits, <= 62 - mult bits "
                        "(default: %(default)s)")
    g.add_argument("--layer-bits", type=_layer_bits, action="append", default=[],
                   metavar="NAME:W:A",
                   help="per-layer weight:activation bits of the layer at module path NAME "
                        "('-' keeps the default); repeatable (default: none)")
    g.add_argument("--first-last-8bit", action="store_true",
                   help="first and last layer (and the input) at 8 bits (default: off)")
    g.add_argument("--calib", type=_calib_count if model_help is None
                   else int_range(1, 10_000_000), default=256,
                   help="calibration images, 1 .. the training split's size "
                        "(default: %(default)s)" if model_help is None else
                        "calibration images (default: %(default)s)")
    g.add_argument("--progress", choices=sorted(_PROGRESS), default="auto",
                   help="progress bars for AdaRound / Bit-split / sensitivity; auto: when "
                        "stderr is a terminal (default: %(default)s)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize", help="quantize a digits model and write its integer network",
        description="Post-training quantization (whitepaper Figure 8 pipeline) of a digits "
                    "reference model; prints which layers and ops are quantized, exports the "
                    "integer network (.npz + JSON manifest) and checks it against the "
                    "fake-quantized model on the test split.")
    add_quant_options(p)
    p.add_argument("--a16", type=_a16, default=(), metavar="auto:K|NAME,...",
                   help="activation quantizers kept at 16 bits (whitepaper sec. 3.6-3.7): "
                        "auto:K picks the K most sensitive ones (sensitivity report on the "
                        "calibration data), or quantizer names as the sensitivity report "
                        "prints them (default: none)")
    p.add_argument("-o", "--output", required=True, type=npz_file, metavar="NET.npz",
                   help="integer network file to write ('.npz' appended if missing; "
                        "required)")
    p.add_argument("--json", type=output_file, default=None, metavar="FILE.json",
                   help="write the accuracies (FP32, fake-quant, integer), logit SQNR, settings "
                        "(default: none)")
    p.set_defaults(func=run_quantize)
    s = sub.add_parser(
        "sensitivity", help="per-layer quantization sensitivity report (Figure 9)",
        description="Switch each quantizer on alone at the target bit-widths and report "
                    "tensor SQNR, network-output SQNR and test accuracy (markdown + PNG).")
    add_quant_options(s)
    s.add_argument("-o", "--output", required=True, type=output_file, metavar="REPORT.md",
                   help="markdown report to write (required)")
    s.add_argument("--plot", type=output_file, default=None, metavar="PLOT.png",
                   help="bar chart to write (default: the report's path with .png)")
    s.set_defaults(func=run_sensitivity)


def quant_config(args):
    """The :class:`QuantConfig` of the options of :func:`add_quant_options`."""
    from qaccel.quant import QuantConfig

    return QuantConfig(w_bits=args.w_bits, a_bits=args.a_bits, per_channel=args.per_channel,
                       weight_range=args.weight_range, act_range=args.act_range,
                       rounding=args.rounding, cle=args.cle,
                       bias_correction=args.bias_correction, iterations=args.iterations,
                       seed=args.seed, mult_bits=args.mult_bits, acc_bits=args.acc_bits,
                       layer_bits=tuple(args.layer_bits), first_last_8bit=args.first_last_8bit,
                       progress=_PROGRESS[args.progress])


def _config(args):
    """:func:`quant_config`; a cross-option error names the options."""
    try:
        return quant_config(args)
    except ValueError as exc:
        text = re.sub(r"QuantConfig\.(\w+)",
                      lambda m: f"--{m.group(1).replace('_', '-')} (QuantConfig.{m.group(1)})",
                      str(exc), count=1)
        raise ValueError(text) from None


def load_digits_model(args, cfg):
    """The model, calibration loader and test set; ``--layer-bits`` names checked."""
    import torch

    from qaccel.flow import load_model
    from qaccel.quant.layer_bits import resolve_layer_bits
    from qaccel.quant.modules import is_quantizable

    torch.set_num_threads(1)
    try:
        m = load_model(args.model, n_calib=args.calib)
    except ValueError as exc:
        raise ValueError(f"--model: {exc}") from None
    model, calib, test_set = m.model, m.calib, m.test_set
    layers = [n for n, m in model.named_modules() if is_quantizable(m)]
    try:
        resolve_layer_bits(cfg, layers)
    except ValueError as exc:
        raise ValueError(f"--layer-bits: {exc}") from None
    return model, calib, test_set


def accuracies(model, qm, net, test_set):
    """``(fp32, fake_quant, integer)`` top-1 accuracy (%) on ``test_set`` and the absolute
    difference, in output codes, between the integer network and the fake-quant model in
    its exact mode (:func:`qaccel.quant.exact_outputs`; the contract: all zero). The
    float32 fake-quant model (training mode) differs by float rounding, more LSBs the
    wider the output type, so it is not the reference."""
    import numpy as np

    from qaccel import flow, quant

    x, _ = test_set
    fp_acc = flow.float_accuracy(model, test_set)
    fq_acc = flow.float_accuracy(qm, test_set)
    int_acc, y_int = flow.integer_accuracy(net, test_set)
    want = quant.exact_outputs(qm, x, net=net)
    return fp_acc, fq_acc, int_acc, np.abs(y_int - want)


def exactness_line(diff) -> str:
    """The printed check of :func:`accuracies`' ``diff``."""
    return (f"  integer network vs exact fake-quant: {int((diff > 0).sum())} of {diff.size} "
            f"outputs differ (max |diff| {int(diff.max())})")


def exactness_json(diff) -> dict:
    """The ``integer_vs_fake_quant`` entry of ``--json`` reports."""
    return {"reference": "exact_mode", "outputs": int(diff.size),
            "differing": int((diff > 0).sum()), "lsb_off_fraction": float((diff > 0).mean()),
            "max_abs_diff": int(diff.max())}


def run_quantize(args: argparse.Namespace) -> int:

    from qaccel import flow

    cfg = _config(args)                      # ValueError -> "qaccel: error: ..." (exit 2)
    model, calib, (x_te, y_te) = load_digits_model(args, cfg)
    cfg = _with_a16(args.a16, model, calib, cfg)
    qm, net = flow.quantize_model(model, calib, cfg)      # cached in the workspace
    print(qm.qaccel_quant.summary)
    path = net.save(args.output)
    fp_acc, fq_acc, int_acc, diff = accuracies(model, qm, net, (x_te, y_te))
    print(f"{args.model} W{cfg.w_bits}A{cfg.a_bits} "
          f"{'per-channel' if cfg.per_channel else 'per-tensor'} rounding={cfg.rounding} "
          f"cle={cfg.cle} bias_correction={cfg.bias_correction}")
    print(f"  accuracy: FP32 {fp_acc:.2f}%  fake-quant {fq_acc:.2f}%  "
          f"integer network {int_acc:.2f}%  ({len(y_te)} test images)")
    print(exactness_line(diff))
    print(f"wrote {path} ({len(net.layers)} layers)")
    if args.json is not None:
        from .reports import write_json

        write_json(args.json, {
            "model": args.model, "method": cfg.rounding,
            "accuracy": {"fp32": fp_acc, "fake_quant": fq_acc, "integer": int_acc},
            "test_images": len(y_te),
            "logit_sqnr_db": logit_sqnr(model, qm, x_te),
            "integer_vs_fake_quant": exactness_json(diff),
            "config": cfg.to_dict(), "network": str(path)})
    return 0


def _with_a16(a16, model, calib, cfg):
    """``cfg`` with the ``--a16`` exceptions: ``K`` -> ``quant.sensitivity.a16_exceptions``;
    names -> 16-bit ``quantizer_bits`` entries (unknown names: ``ValueError`` naming
    ``--a16``)."""
    from qaccel.quant.layer_bits import resolve_quantizer
    from qaccel.quant.sensitivity import a16_exceptions

    if isinstance(a16, int):
        cfg, _ = a16_exceptions(model, calib, cfg, a16)
        print("16-bit activations (auto): " + (", ".join(
            o.name for o in cfg.quantizer_bits if o.bits == 16) or "none"))
        return cfg
    if not a16:
        return cfg
    from qaccel import quant

    probe = quant.quantize(model, calib, cfg.replace(rounding="nearest", progress=False))
    for name in a16:
        try:
            resolve_quantizer(probe, name, "--a16")
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    try:
        return cfg.replace(quantizer_bits=cfg.quantizer_bits + tuple((n, 16) for n in a16))
    except ValueError as exc:
        raise ValueError(f"--a16: {exc}") from None


def logit_sqnr(model, qm, x) -> float | None:
    """SQNR (dB) of the fake-quant logits against the FP32 ones on ``x`` (None: exact)."""
    import math

    import torch

    from qaccel.quant.paper_tables import sqnr_db

    with torch.no_grad():
        v = sqnr_db(model(x), qm(x))
    return None if math.isinf(v) else v


def run_sensitivity(args: argparse.Namespace) -> int:
    from qaccel.quant import digits
    from qaccel.quant.sensitivity import sensitivity_report

    cfg = _config(args)
    out: pathlib.Path = args.output
    if args.plot is not None:
        png = args.plot
    else:
        try:
            png = output_file(str(out.with_suffix(".png")))
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"--plot (default next to the report): {exc}") from None
    model, calib, test_set = load_digits_model(args, cfg)
    rep = sensitivity_report(model, calib, cfg, eval_data=[test_set[0]],
                             metric=lambda m: digits.evaluate(m, test_set),
                             metric_name="test accuracy (%)")
    out.write_text(f"# Quantization sensitivity: {args.model} W{cfg.w_bits}A{cfg.a_bits}\n\n"
                   + rep.to_markdown())
    png = rep.plot(png)
    worst = ", ".join(f"{r.name} ({r.output_sqnr:.1f} dB)" for r in rep.worst(3))
    print(f"most sensitive: {worst}")
    print(f"wrote {out} and {png}")
    return 0
