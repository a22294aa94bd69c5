"""``qaccel pareto``: the non-dominated design points of a results store, plotted and listed.

    qaccel pareto results.sqlite --x energy --y accuracy -o front.png
    qaccel pareto results.sqlite --x energy --y accuracy --z latency -o front3.png
    qaccel pareto results.sqlite --x cycles:min --y area --workload model:digits_cnn

Objectives: ``accuracy`` (maximised), ``energy``, ``latency``, ``area`` (minimised), or any
numeric column as ``COLUMN:min`` / ``COLUMN:max``. With ``--z`` the front is the
three-objective front, drawn in 2-D with ``z`` as colour. Only points with status ``ok`` and
every objective measured take part. The table lists each front point's objectives and the
parameters that differ between front points.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from .options import input_file, output_file

#: columns never shown as "configuration" (bookkeeping or implied by others)
_HIDDEN = {"id", "config_hash", "status", "error", "elapsed_s", "finished_at", "params_json",
           "trial"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pareto", help="Pareto front of a results store: plot and list",
                       description=__doc__.split("\n\n")[2].replace("\n", " "))
    p.add_argument("store", type=input_file, help="results SQLite file (qaccel sweep/search)")
    p.add_argument("--x", default="energy", help="x objective (default energy)")
    p.add_argument("--y", default="accuracy", help="y objective (default accuracy)")
    p.add_argument("--z", default=None, help="optional third objective (colour)")
    p.add_argument("-o", "--output", type=output_file, default=None,
                   help="PNG of the front (default: none)")
    p.add_argument("--title", default="", help="plot title (default: the front's size)")
    p.add_argument("--workload", default=None, help="only rows of this workload "
                   "(e.g. model:digits_cnn)")
    p.add_argument("--kind", choices=["sweep", "search"], default=None,
                   help="only sweep or only search rows")
    p.add_argument("--study", default=None, help="only the rows of this search (its name)")
    p.add_argument("--json", type=output_file, default=None, dest="json_out",
                   help="also write the front points as JSON")
    p.set_defaults(func=run)


def load_points(path, *, workload=None, kind=None, study=None) -> list[dict]:
    """Finished rows of the store at ``path`` (filters optional)."""
    from qaccel.sweep.store import Store

    with Store(path) as st:
        rows = st.rows(status="ok", kind=kind, workload=workload)
    if study is not None:
        from ..dse.search import study_hashes

        want = set(study_hashes(path, study))
        rows = [r for r in rows if r["config_hash"] in want]
    return rows


def varying(rows: list[dict]) -> list[str]:
    """Parameter columns whose value differs between ``rows``."""
    if not rows:
        return []
    cols = [c for c in rows[0] if c not in _HIDDEN and not c.startswith(("energy_", "accuracy"))
            and c not in ("cycles", "latency_s", "utilization", "macs", "dram_bits",
                          "buffer_bits", "energy_j", "pj_per_mac", "area_cells",
                          "area_transistors")]
    return [c for c in cols if len({json.dumps(r.get(c)) for r in rows}) > 1]


def uniform_rows(rows: list[dict]) -> list[int]:
    """Rows of search points whose layers all have the same widths."""
    return [i for i, r in enumerate(rows) if r.get("layer_bits_text")
            and len({b.rsplit(":", 1)[1] for b in r["layer_bits_text"].split()}) == 1]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def run(args: argparse.Namespace) -> int:
    from qaccel.dse.pareto import complete_rows, objective, pareto_front, plot_front

    objs = [objective(args.x), objective(args.y)] + ([objective(args.z)] if args.z else [])
    names = [o.name for o in objs]
    if len(set(names)) != len(names):
        raise ValueError(f"--x/--y/--z name the same column twice: {names}")
    rows = load_points(args.store, workload=args.workload, kind=args.kind, study=args.study)
    if not rows:
        raise ValueError(f"{args.store}: no finished point (status ok) matches the filters")
    missing = [n for n in names if n not in rows[0]]
    if missing:
        have = sorted(c for c in rows[0] if c not in _HIDDEN)
        raise ValueError(f"{args.store}: no column {missing[0]!r} (objective "
                         f"{[o for o in objs if o.name == missing[0]][0].name}); columns: "
                         f"{', '.join(have)}")
    rows = complete_rows(rows, names)
    if not rows:
        raise ValueError(f"{args.store}: no point has every objective measured ({names})")
    front = pareto_front([[r[n] for n in names] for r in rows], [o.maximize for o in objs])
    fr = sorted((rows[i] for i in front), key=lambda r: r[names[0]])
    conf = varying(fr) or varying(rows)
    print(f"{len(fr)} non-dominated of {len(rows)} points ("
          + ", ".join(f"{o.name} {o.direction}" for o in objs) + ")")
    head = names + conf
    table = [[_fmt(r.get(c)) for c in head] for r in fr]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for t in table:
        print("  ".join(v.rjust(w) for v, w in zip(t, widths)))
    if args.output is not None:
        label = "layer_bits_text" if "layer_bits_text" in conf else None
        path = plot_front(rows, front, objs[0], objs[1], args.output,
                          z=objs[2] if len(objs) > 2 else None, label_key=label,
                          title=args.title,
                          marked=uniform_rows(rows), marked_label="uniform precision")
        print(f"wrote {path}")
    if args.json_out is not None:
        from .reports import write_json

        write_json(pathlib.Path(args.json_out),
                   {"objectives": [{"column": o.name, "direction": o.direction}
                                   for o in objs],
                    "points": len(rows), "front": fr})
    return 0
