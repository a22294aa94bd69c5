"""``make bench``: run every benchmark in ``qaccel/benches`` and write markdown tables.

    python -m qaccel.bench [NAME ...] [--out DIR] [--figures DIR] [--scalesim-peer DIR]

Each module in ``BENCH_MODULES`` exposes ``run(opts: BenchOptions) -> str`` returning a
markdown section; the sections are written to ``<out>/<name>.md`` and indexed in
``<out>/README.md``. ``--out`` defaults to ``docs/bench`` and ``--figures`` to
``docs/figures``, both relative to the current directory (``make bench`` runs in the
checkout, so they land in its docs); nothing is written inside the installed package.
Builds and caches the benches need (RTL simulators, Yosys) go to the work directory
(:mod:`qaccel.workspace`). ``--scalesim-peer`` (or ``QACCEL_SCALESIM_PEER``) names a
directory with SCALE-Sim 3.0.0's own ResNet-50 reports; without it the scalesim bench skips
that comparison and says so. The peers bench (AIMET, Brevitas) measures in the interpreter
named by ``QACCEL_PEER_PYTHON`` (``make bench PEER_PYTHON=...``) and skips, with the reason,
the libraries it cannot import.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import sys
import time

from qaccel.benches import BenchOptions, scalesim_peer_dir
from qaccel.commands.options import output_dir

BENCH_MODULES = [
    "qaccel.benches.scalesim",
    "qaccel.benches.ptq",
    "qaccel.benches.peers",
    "qaccel.benches.energy",
    "qaccel.benches.utilization",
    "qaccel.benches.sim_speed",
    "qaccel.benches.sweep",
    "qaccel.benches.mapping",
    "qaccel.benches.vector",
]
NAMES = [m.rsplit(".", 1)[-1] for m in BENCH_MODULES]


def _peer(value: str) -> pathlib.Path:
    try:
        return scalesim_peer_dir(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m qaccel.bench",
                                 description="Run the benchmarks and write markdown tables.")
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"benches to run (default: all): {', '.join(NAMES)}")
    ap.add_argument("--out", type=output_dir, default=pathlib.Path("docs/bench"),
                    help="directory of the markdown tables (default: %(default)s, relative to "
                         "the current directory)")
    ap.add_argument("--figures", type=output_dir, default=pathlib.Path("docs/figures"),
                    help="directory of the figures (default: %(default)s, relative to the "
                         "current directory)")
    ap.add_argument("--scalesim-peer", type=_peer, default=None, metavar="DIR",
                    help="SCALE-Sim 3.0.0 reports to compare with (default: "
                         "$QACCEL_SCALESIM_PEER; unset: that comparison is skipped)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        ap.error(f"unknown bench(es) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    peer = args.scalesim_peer
    if peer is None and os.environ.get("QACCEL_SCALESIM_PEER"):
        try:
            peer = scalesim_peer_dir(os.environ["QACCEL_SCALESIM_PEER"], "QACCEL_SCALESIM_PEER")
        except ValueError as exc:
            ap.error(str(exc))
    opts = BenchOptions(out_dir=args.out, figures_dir=args.figures, scalesim_peer=peer)
    for flag, path in (("--out", opts.out_dir), ("--figures", opts.figures_dir)):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            ap.error(f"{flag}: cannot create {str(path)!r} ({exc.strerror})")
    for mod_name in BENCH_MODULES:
        short = mod_name.rsplit(".", 1)[-1]
        if args.names and short not in args.names:
            continue
        print(f"[bench] {short} ...", flush=True)
        t0 = time.perf_counter()
        text = importlib.import_module(mod_name).run(opts)
        path = opts.out_dir / f"{short}.md"
        path.write_text(text)
        print(f"[bench] {short} done in {time.perf_counter() - t0:.1f} s -> {path}")
    index = ["# Benchmarks", "",
             "Written by `make bench`; each table says how it was measured.", ""]
    index += [f"- [{p.stem}]({p.name})" for p in sorted(opts.out_dir.glob("*.md"))
              if p.stem != "README"]
    (opts.out_dir / "README.md").write_text("\n".join(index) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
