"""``qaccel sweep``: many design points on Dask distributed, results in a resumable SQLite
store.

    qaccel sweep examples/sweep_resnet50.yaml --store results.sqlite [--workers 2]
    qaccel sweep SWEEP.yaml --store results.sqlite --scheduler tls://host:8786 \\
        --tls-ca-file ca.pem --tls-cert client.pem --tls-key client.key
    qaccel sweep SWEEP.yaml --store results.sqlite --export results.parquet

See ``docs/sweep.md``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from .options import input_file, output_file, positive_int


def export_file(value: str) -> pathlib.Path:
    """argparse ``type=`` for ``--export``: a writable ``.csv`` or ``.parquet`` file."""
    path = output_file(value)
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise argparse.ArgumentTypeError(f"{value!r} must end in .csv or .parquet")
    return path


def _security(args):
    given = [a for a in ("tls_ca_file", "tls_cert", "tls_key") if getattr(args, a)]
    if not given:
        return None                      # Dask's configured security, if any, applies
    if args.scheduler is None:
        raise ValueError("--tls-ca-file/--tls-cert/--tls-key apply to --scheduler only")
    if len(given) != 3:
        raise ValueError("TLS needs all of --tls-ca-file, --tls-cert and --tls-key")
    if not args.scheduler.startswith("tls://"):
        raise ValueError(f"--scheduler {args.scheduler}: TLS certificates need a tls:// "
                         f"address")
    from distributed.security import Security

    return Security(tls_ca_file=str(args.tls_ca_file), tls_client_cert=str(args.tls_cert),
                    tls_client_key=str(args.tls_key), require_encryption=True)


def run(args: argparse.Namespace) -> int:
    from qaccel.sweep.export import export_store
    from qaccel.sweep.runner import SweepInterrupted, run_sweep
    from qaccel.sweep.spec import load_spec
    from qaccel.sweep.store import Store

    spec = load_spec(args.sweep)                   # every point validated before anything runs
    if args.scheduler is not None and args.workers is not None:
        raise ValueError("--workers sizes the embedded cluster; with --scheduler the "
                         "cluster's own workers run the sweep")
    security = _security(args)
    with Store(args.store) as store:
        print(f"sweep {spec.name}: {len(spec.points)} points on {spec.workload.label}"
              + (f" ({spec.skipped} invalid combinations skipped)" if spec.skipped else "")
              + f"; metrics {', '.join(spec.metrics)}; store {args.store}", file=sys.stderr)
        try:
            res = run_sweep(spec, store, scheduler=args.scheduler, workers=args.workers,
                            security=security, batch=args.batch,
                            retry_errors=args.retry_errors, progress=not args.no_progress)
        except SweepInterrupted as exc:
            print(f"qaccel: sweep interrupted: {exc}", file=sys.stderr)
            return 1
        if res.computed:
            print(f"computed {res.computed} points ({res.ok} ok, {res.errors} failed) in "
                  f"{res.seconds:.1f} s on {res.workers} workers "
                  f"({res.computed / res.seconds:.1f} points/s); {res.already} were "
                  f"already in the store", file=sys.stderr)
        else:
            print(f"all {res.total} points already in the store", file=sys.stderr)
        if args.export:
            export_store(store, args.export)
            print(f"wrote {args.export} ({store.count()} rows)", file=sys.stderr)
        bad = store.count("error")
    if bad:
        print(f"{bad} points in the store failed; their errors are in the 'error' column "
              f"(--retry-errors recomputes them)", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="design-space sweep on Dask, results in a resumable SQLite store",
        description="Evaluate every design point of a sweep file (array, quantization, clock "
                    "and energy-table parameters over a grid or random samples) on a Dask "
                    "cluster and store one row per point in SQLite. Re-running resumes: "
                    "finished points are not recomputed. See docs/sweep.md.")
    p.add_argument("sweep", type=input_file, metavar="SWEEP.yaml", help="the sweep file")
    p.add_argument("--store", type=output_file, required=True, metavar="RESULTS.sqlite",
                   help="SQLite store (created if missing; resumed if it exists)")
    c = p.add_argument_group("cluster")
    c.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="worker processes of the embedded cluster (default: CPU count)")
    c.add_argument("--scheduler", metavar="ADDRESS",
                   help="join an existing Dask scheduler (tcp://HOST:8786 or tls://...). "
                        "An unauthenticated scheduler runs any client's code: use TLS "
                        "beyond a trusted network")
    c.add_argument("--tls-ca-file", type=input_file, metavar="CA.pem",
                   help="CA certificate for a tls:// scheduler")
    c.add_argument("--tls-cert", type=input_file, metavar="CERT.pem",
                   help="client certificate for a tls:// scheduler")
    c.add_argument("--tls-key", type=input_file, metavar="KEY.pem",
                   help="client private key for a tls:// scheduler")
    c.add_argument("--batch", type=positive_int, default=None, metavar="N",
                   help="points per Dask task (default: about 8 tasks per worker, <= 50; workloads "
                        "with data: one task per quantization config)")
    p.add_argument("--retry-errors", action="store_true",
                   help="recompute points stored as failed")
    p.add_argument("--export", type=export_file, metavar="FILE.csv|FILE.parquet",
                   help="write the whole store as CSV or parquet afterwards")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
