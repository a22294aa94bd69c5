"""``qaccel train``: retrain the FP32 digits reference models with their shipped recipe.

The tests, ``make paper-tables``, ``qaccel quantize`` and the notebook use the weights
shipped in the package (``qaccel/quant/models``, see :mod:`qaccel.quant.digits`); this
command reruns the recipe that produced them and writes the result to the workspace
(``<workdir>/models`` by default), never over the shipped files unless ``--out`` points
there explicitly.
"""

from __future__ import annotations

import argparse

from .options import output_dir


def register(sub: argparse._SubParsersAction) -> None:
    from qaccel.quant.digits import ARCHS

    p = sub.add_parser(
        "train", help="retrain the digits reference models (shipped recipe)",
        description="Train the FP32 digits reference models with their recipe "
                    "(quant.digits.RECIPES, recorded in the shipped manifest) and write "
                    "<name>.safetensors + manifest.json (recipe, split, seed, torch version, "
                    "accuracy, sha256). Compares each result with the shipped model. A few "
                    "seconds per model; a progress bar on a TTY.")
    p.add_argument("--model", choices=[*ARCHS, "all"], default="all",
                   help="model to train (default: all)")
    p.add_argument("--out", type=output_dir, default=None, metavar="DIR",
                   help="directory to write (default: <workdir>/models; the shipped "
                        "weights in the package are only replaced if DIR is that directory)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qaccel import workspace
    from qaccel.quant import digits

    names = list(digits.ARCHS) if args.model == "all" else [args.model]
    out = args.out if args.out is not None else workspace.current().dir("models")
    shipped = digits.read_manifest()["models"]
    models = {name: digits.train(name) for name in names}
    manifest = digits.save_models(models, out)
    for name in names:
        entry, ref = manifest["models"][name], shipped.get(name, {})
        acc, ref_acc = entry["test_accuracy"], ref.get("test_accuracy", float("nan"))
        same = "identical to" if entry["sha256"] == ref.get("sha256") else "differs from"
        print(f"{name}: test accuracy {acc:.2f}% (shipped {ref_acc:.2f}%, "
              f"{acc - ref_acc:+.2f} points); weights {same} the shipped file")
        print(f"  wrote {out / entry['file']} (sha256 {entry['sha256']})")
    print(f"  manifest {out / digits.MANIFEST}")
    return 0
