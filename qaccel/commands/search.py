"""``qaccel search``: multi-objective mixed-precision search (Optuna NSGA-II).

    qaccel search SEARCH.yaml --store results.sqlite
    qaccel search SEARCH.yaml --store results.sqlite --export-best net.npz
    qaccel run --model net.npz ...                      # the chosen network, end to end

The search file names the digits model, two or three objectives (accuracy, energy,
latency, area), the search variables (per-layer weight bits, the activation bits, rows, cols,
buffers) or an area budget, the seeds (uniform configurations, sensitivity-guided mixed
ones) and the rule that picks the exported network; see ``docs/search.md``. The study is
stored in the results file itself and resumes after a kill; every trial is a row of its
``points`` table (``qaccel pareto`` plots them).
"""

from __future__ import annotations

import argparse

from .options import input_file, output_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="multi-objective mixed-precision search (NSGA-II)",
                       description=__doc__.split("\n\n")[2].replace("\n", " "))
    p.add_argument("spec", type=input_file, help="search file (YAML)")
    p.add_argument("--store", type=output_file, required=True,
                   help="results SQLite file (created if missing; the study lives in it)")
    p.add_argument("--trials", type=int, default=None,
                   help="total trials of the study (overrides the file's trials:)")
    p.add_argument("--export-best", type=output_file, default=None, metavar="NET.npz",
                   help="save the network the file's select: rule picks")
    p.add_argument("--front", type=output_file, default=None, metavar="PNG",
                   help="plot the study's front of its first two objectives")
    p.add_argument("--retry-errors", action="store_true",
                   help="run the trials that failed once more (default: they count as done)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from qaccel.dse import search as S
    from qaccel.dse.pareto import objective, pareto_front, plot_front
    from qaccel.dse.search_spec import load_search

    spec = load_search(args.spec)
    if args.trials is not None:
        if args.trials < 1:
            raise ValueError(f"--trials must be >= 1, not {args.trials}")
        spec = dataclasses.replace(spec, trials=args.trials)
    if args.export_best is not None and not str(args.export_best).endswith(".npz"):
        raise ValueError(f"--export-best: {str(args.export_best)!r} must end in .npz")
    torch.set_num_threads(1)
    ctx = S.prepare(spec)
    S.run_search(spec, args.store, ctx=ctx, progress=not args.no_progress,
                 retry_errors=args.retry_errors)
    rows = S.search_rows(args.store, spec)
    if not rows:
        raise ValueError(f"{spec.path}: the search finished no trial (see the store's "
                         f"error column)")
    objs = [objective(o) for o in spec.objectives]
    names = [o.name for o in objs]
    front = pareto_front([[r[n] for n in names] for r in rows], [o.maximize for o in objs])
    print(f"FP32 accuracy {ctx.fp32_accuracy:.2f}% on {len(ctx.test_set[0])} test images; "
          f"{len(front)} non-dominated of {len(rows)} points:")
    for i in sorted(front, key=lambda i: rows[i][names[-1]]):
        r = rows[i]
        print("  " + "  ".join(f"{n} {r[n]:.4g}" for n in names)
              + f"  {r['rows']}x{r['cols']}  {r['layer_bits_text']}")
    if args.front is not None:
        print(f"wrote {plot_front(rows, front, objs[1], objs[0], args.front)}")
    if args.export_best is not None:
        best = S.select_best(rows, spec)
        path = S.export_best(best, ctx, args.export_best)
        print(f"best by the rule (lowest {spec.select_minimize} within "
              f"{spec.max_accuracy_drop} points of FP32): accuracy {best['accuracy']:.2f}%, "
              f"energy {best['energy_j']:.4g} J, latency {best['latency_s']:.4g} s, "
              f"{best['rows']}x{best['cols']}, {best['layer_bits_text']}")
        print(f"wrote {path}  (qaccel run --model {path})")
    return 0
