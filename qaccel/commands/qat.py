"""``qaccel qat``: quantization-aware training (``quant.qat``, whitepaper sec. 4) of a digits
reference model from its PTQ start, exported to an integer network.

The training split of ``quant.digits`` is split again into a training part and a held-out
part (``--val-fraction``) for early stopping; accuracies are on the test split. Every
option is checked when the arguments are parsed (exit status 2 naming the option).
"""

from __future__ import annotations

import argparse
import re

from qaccel.commands.options import fraction, int_range, output_file, positive_float

from .quantize import (
    accuracies,
    add_quant_options,
    exactness_json,
    exactness_line,
    load_digits_model,
    logit_sqnr,
    npz_file,
    quant_config,
)


def register(sub: argparse._SubParsersAction) -> None:
    from qaccel.quant.qat import BN_FOLDINGS

    p = sub.add_parser(
        "qat", help="quantization-aware training of a digits model -> integer network",
        description="QAT (LSQ scales, learnable offsets, STE) started from the PTQ pipeline; "
                    "early stopping on a held-out part of the training split; exports the "
                    "integer network and checks it against the fake-quantized model.")
    add_quant_options(p)
    g = p.add_argument_group("training (quant.qat)")
    g.add_argument("--epochs", type=int_range(1, 100_000), default=10,
                   help="maximum epochs (default: %(default)s)")
    g.add_argument("--lr", type=positive_float, default=1e-3,
                   help="Adam peak learning rate, cosine-annealed (default: %(default)s)")
    g.add_argument("--patience", type=int_range(1, 100_000), default=3,
                   help="early stopping: epochs without a lower held-out loss "
                        "(default: %(default)s)")
    g.add_argument("--batch-size", type=int_range(1, 100_000), default=64,
                   help="training minibatch (default: %(default)s)")
    g.add_argument("--val-fraction", type=fraction, default=0.2,
                   help="held-out part of the training split (default: %(default)s)")
    g.add_argument("--bn-folding", choices=BN_FOLDINGS, default="static",
                   help="BN folding during QAT, whitepaper sec. 4.2: static, running statistics, "
                        "or per_channel (BN kept in the per-channel weight scale, eq. 41; "
                        "needs --per-channel) (default: %(default)s)")
    g.add_argument("--fixed-scales", action="store_true",
                   help="keep the PTQ scales (default: LSQ learns them)")
    g.add_argument("--fixed-offsets", action="store_true",
                   help="keep the PTQ zero-points (default: learned)")
    p.add_argument("--json", type=output_file, default=None, metavar="FILE.json",
                   help="write the accuracies (FP32, PTQ, fake-quant, integer), logit SQNR, "
                        "history and settings (default: none)")
    p.add_argument("-o", "--output", required=True, type=npz_file, metavar="NET.npz",
                   help="integer network file to write ('.npz' appended if missing; "
                        "required)")
    p.set_defaults(func=run_qat)


def _qat_config(args):
    from qaccel.quant.qat import QatConfig

    try:
        return QatConfig(quant=quant_config(args), bn_folding=args.bn_folding,
                         learn_scales=not args.fixed_scales,
                         learn_offsets=not args.fixed_offsets)
    except ValueError as exc:
        text = re.sub(r"QuantConfig\.(\w+)|QatConfig\.(?:quant\.)?(\w+)",
                      lambda m: f"--{(m.group(1) or m.group(2)).replace('_', '-')}",
                      str(exc), count=1)
        raise ValueError(text) from None


def run_qat(args: argparse.Namespace) -> int:

    from qaccel import flow, quant
    from qaccel.quant import digits
    from qaccel.quant.qat import prepare_qat, train_qat, train_val_loaders

    from .reports import write_json

    cfg = _qat_config(args)
    qc = cfg.quant
    model, calib, (x_te, y_te) = load_digits_model(args, qc)        # sets one torch thread
    x_tr, y_tr, _, _ = digits.load_split()
    train, val = train_val_loaders(x_tr, y_tr, val_fraction=args.val_fraction,
                                   batch_size=args.batch_size, seed=qc.seed)
    qm = prepare_qat(model, calib, cfg)
    ptq_acc = flow.float_accuracy(qm.eval(), (x_te, y_te))
    hist = train_qat(qm, train, val, epochs=args.epochs, lr=args.lr, patience=args.patience,
                     progress=qc.progress)
    net = quant.export(qm, x_te[:1])
    path = net.save(args.output)
    fp_acc, fq_acc, int_acc, diff = accuracies(model, qm, net, (x_te, y_te))
    print(f"{args.model} W{qc.w_bits}A{qc.a_bits} "
          f"{'per-channel' if qc.per_channel else 'per-tensor'} QAT bn_folding="
          f"{cfg.bn_folding}: {hist.epochs_run} epochs (best {hist.best_epoch}"
          f"{', stopped early' if hist.stopped_early else ''})")
    print(f"  accuracy: FP32 {fp_acc:.2f}%  PTQ start {ptq_acc:.2f}%  fake-quant {fq_acc:.2f}%"
          f"  integer network {int_acc:.2f}%  ({len(y_te)} test images)")
    print(exactness_line(diff))
    print(f"wrote {path} ({len(net.layers)} layers)")
    if args.json is not None:
        write_json(args.json, {
            "model": args.model, "method": "qat",
            "accuracy": {"fp32": fp_acc, "ptq": ptq_acc, "fake_quant": fq_acc,
                         "integer": int_acc},
            "test_images": len(y_te),
            "logit_sqnr_db": logit_sqnr(model, qm, x_te),
            "integer_vs_fake_quant": exactness_json(diff),
            "training": {"epochs": args.epochs, "lr": args.lr, "patience": args.patience,
                         "batch_size": args.batch_size, "val_fraction": args.val_fraction,
                         **hist.to_dict()},
            "config": cfg.to_dict(), "network": str(path)})
    return 0
