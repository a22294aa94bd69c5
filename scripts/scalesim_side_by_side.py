#!/usr/bin/env python3
"""SCALE-Sim 3.0.0 and qaccel's compat mode on the same topologies, in one run (outside CI).

Creates ``scalesim-venv/`` in the work directory (:mod:`qaccel.workspace`: ``--workdir``,
``QACCEL_HOME``, else ``~/.cache/qaccel``; ``pip install scalesim==3.0.0 'numpy<2.4'``) on
first use, runs SCALE-Sim's Python API there (no traces: ``save_disk_space=True``), runs our
``sim.scalesim_compat`` in a separate fresh process of this interpreter, and reports
per-layer agreement of the compute-cycle and utilization columns, wall time and peak memory
(max RSS) of both. The topologies (``small3.csv``, ``resnet18.csv``, ``resnet50.csv``) come
from ``--peer DIR`` (default ``$QACCEL_SCALESIM_PEER``).

    P=../shared/peer/scalesim
    .venv/bin/python scripts/scalesim_side_by_side.py --peer $P             # small3, resnet18
    .venv/bin/python scripts/scalesim_side_by_side.py --peer $P --resnet50  # + ResNet-50 (~10 min)
    .venv/bin/python scripts/scalesim_side_by_side.py --peer $P --only small3 --markdown out.md
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import venv

from qaccel import workspace
from qaccel.commands.options import output_file

CFG = """[general]
run_name = {run}

[architecture_presets]
ArrayHeight:    {rows}
ArrayWidth:     {cols}
IfmapSramSzkB:   64
FilterSramSzkB:  64
OfmapSramSzkB:   64
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : 10
Dataflow : {dataflow}
MemoryBanks:   1
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""

LAYOUT_HEADER = (
    "Layer name, IFMAP Height Intraline Factor, IFMAP Width Intraline Factor, "
    "Filter Height Intraline Factor, Filter Width Intraline Factor, Channel Intraline Factor, "
    "Num Filter Intraline Factor, IFMAP Height Intraline Order, IFMAP Width Intraline Order, "
    "Channel Intraline Order, IFMAP Height Interline Order, IFMAP Width Interline Order, "
    "Channel Interline Order, Num Filter Intraline Order, Channel Intraline Order, "
    "Filter Height Intraline Order, Filter Width Intraline Order, Num Filter Interline Order, "
    "Channel Interline Order, Filter Height Interline Order, Filter Width Interline Order, ")
LAYOUT_ROW = "{name},1,1,1,1,1,1,1,2,0,4,5,3,3,0,1,2,7,4,5,6,"

SCALESIM_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from scalesim.scale_sim import scalesim
cfg, topo, layout, out = sys.argv[1:5]
t1, c1 = time.perf_counter(), time.process_time()
s = scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topo, layout=layout,
             input_type_gemm=False)
s.run_scale(top_path=out)
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"import_s": t1 - t0, "run_s": t2 - t1, "run_cpu_s": c2 - c1,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

OURS_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from qaccel.sim.scalesim_compat import compat_network
from qaccel.sim.topology import read_topology
t1, c1 = time.perf_counter(), time.process_time()
topo, rows, cols, dataflow = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
net = compat_network(rows, cols, dataflow, [l.workload() for l in read_topology(topo)])
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"import_s": t1 - t0, "run_s": t2 - t1, "run_cpu_s": c2 - c1,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "layers": [[l.cycles, l.overall_util, l.mapping_efficiency, l.compute_util]
                             for l in net.layers]}))
"""


def ensure_venv() -> pathlib.Path:
    venv_dir = workspace.current().root / "scalesim-venv"
    py = venv_dir / "bin" / "python"
    try:
        subprocess.run([str(py), "-c", "import scalesim.scale_sim"], check=True,
                       capture_output=True)
        return py
    except (OSError, subprocess.CalledProcessError):
        pass
    print(f"[side-by-side] creating {venv_dir} and installing scalesim==3.0.0 ...", flush=True)
    workspace.current().dir()
    venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "scalesim==3.0.0", "numpy<2.4"],
                   check=True)
    return py


def run_child(cmd: list[str], env: dict | None = None) -> tuple[dict, float]:
    import time

    t0 = time.perf_counter()
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    return json.loads(res.stdout.strip().splitlines()[-1]), wall


def read_report(path: pathlib.Path) -> list[list[float]]:
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    return [[float(x) for x in r if x.strip()] for r in rows if r]


def side_by_side(py: pathlib.Path, topo: pathlib.Path, rows: int, cols: int, dataflow: str,
                 work: pathlib.Path) -> dict:
    run = f"{topo.stem}_{rows}x{cols}_{dataflow}"
    cfg = work / f"{run}.cfg"
    cfg.write_text(CFG.format(run=run, rows=rows, cols=cols, dataflow=dataflow))
    names = [ln.split(",")[0].strip() for ln in topo.read_text().splitlines()[1:] if ln.strip()]
    layout = work / f"{run}_layout.csv"
    layout.write_text(LAYOUT_HEADER + "\n" + "\n".join(LAYOUT_ROW.format(name=n) for n in names)
                      + "\n")
    out = work / "out"
    theirs, theirs_wall = run_child([str(py), "-c", SCALESIM_CHILD, str(cfg), str(topo),
                                     str(layout), str(out)])
    report = read_report(out / run / "COMPUTE_REPORT.csv")
    ours, ours_wall = run_child([sys.executable, "-c", OURS_CHILD, str(topo), str(rows),
                                 str(cols), dataflow])
    agree_cycles = sum(int(r[2]) == o[0] for r, o in zip(report, ours["layers"]))
    max_rel = [0.0, 0.0, 0.0]
    for r, o in zip(report, ours["layers"]):
        for i, (theirs_v, ours_v) in enumerate(zip(r[4:7], o[1:4])):
            if theirs_v:
                max_rel[i] = max(max_rel[i], abs(theirs_v - ours_v) / abs(theirs_v))
    return {"run": run, "layers": len(report), "ours_layers": len(ours["layers"]),
            "cycles_agree": agree_cycles,
            "total_cycles_scalesim": int(sum(r[2] for r in report)),
            "total_cycles_ours": int(sum(o[0] for o in ours["layers"])),
            "util_max_rel_err": max_rel,
            "scalesim_run_s": theirs["run_s"], "scalesim_run_cpu_s": theirs["run_cpu_s"],
            "scalesim_process_s": theirs_wall,
            "scalesim_maxrss_mib": theirs["maxrss_kib"] / 1024,
            "ours_run_s": ours["run_s"], "ours_run_cpu_s": ours["run_cpu_s"],
            "ours_process_s": ours_wall,
            "ours_maxrss_mib": ours["maxrss_kib"] / 1024,
            "speedup_run": theirs["run_s"] / max(ours["run_s"], 1e-9),
            "speedup_cpu": theirs["run_cpu_s"] / max(ours["run_cpu_s"], 1e-6),
            "speedup_process": theirs_wall / ours_wall,
            "memory_ratio": theirs["maxrss_kib"] / ours["maxrss_kib"]}


def markdown(results: list[dict]) -> str:
    lines = ["| run | layers | cycles identical | total cycles (SCALE-Sim = ours) | util max rel. "
             "err (overall/mapping/compute) | SCALE-Sim run s (CPU s) | ours run ms | "
             "speed-up run wall (CPU) | speed-up incl. process start | peak RSS MiB "
             "(SCALE-Sim / ours) | memory ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        err = "/".join(f"{e:.1e}" for e in r["util_max_rel_err"])
        lines.append(
            f"| {r['run']} | {r['layers']} | {r['cycles_agree']}/{r['layers']} | "
            f"{r['total_cycles_scalesim']:,} = {r['total_cycles_ours']:,} | {err} | "
            f"{r['scalesim_run_s']:.2f} ({r['scalesim_run_cpu_s']:.2f}) | "
            f"{1e3 * r['ours_run_s']:.2f} | "
            f"{r['speedup_run']:,.0f}x ({r['speedup_cpu']:,.0f}x) | "
            f"{r['speedup_process']:,.1f}x | "
            f"{r['scalesim_maxrss_mib']:.0f} / {r['ours_maxrss_mib']:.0f} | "
            f"{r['memory_ratio']:.1f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resnet50", action="store_true",
                    help="also run ResNet-50 at 32x32 ws (~10 min, ~12 GB in SCALE-Sim)")
    ap.add_argument("--only", nargs="*", default=None,
                    help="subset of: small3 resnet18 resnet50")
    ap.add_argument("--markdown", type=output_file, help="also write the table here")
    ap.add_argument("--json", type=output_file, help="write the raw results here")
    ap.add_argument("--peer", type=pathlib.Path, default=os.environ.get("QACCEL_SCALESIM_PEER"),
                    help="directory with the SCALE-Sim topologies small3.csv, resnet18.csv, "
                         "resnet50.csv (default: $QACCEL_SCALESIM_PEER)")
    ap.add_argument("--workdir", type=pathlib.Path, default=None,
                    help="work directory for scalesim-venv/ (default: $QACCEL_HOME, else "
                         "~/.cache/qaccel)")
    args = ap.parse_args(argv)
    if args.workdir is not None:
        try:
            workspace.use(args.workdir)
        except ValueError as exc:
            ap.error(f"--workdir: {exc}")
    plan = [("small3", 8, 12, "ws"), ("small3", 8, 12, "os"), ("small3", 8, 12, "is"),
            ("resnet18", 32, 32, "ws")]
    if args.resnet50:
        plan.append(("resnet50", 32, 32, "ws"))
    if args.only:
        plan = [p for p in plan if p[0] in args.only]
        if "resnet50" in args.only and not any(p[0] == "resnet50" for p in plan):
            plan.append(("resnet50", 32, 32, "ws"))
    if args.peer is None:
        ap.error("--peer DIR (or QACCEL_SCALESIM_PEER) is required: SCALE-Sim's topologies")
    missing = sorted({f"{t}.csv" for t, *_ in plan} - {p.name for p in
                                                        pathlib.Path(args.peer).glob("*.csv")})
    if missing:
        ap.error(f"--peer: {str(args.peer)!r} has no {', '.join(missing)}")
    py = ensure_venv()
    results = []
    for topo, rows, cols, df in plan:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"[side-by-side] {topo} {rows}x{cols} {df} ...", flush=True)
            r = side_by_side(py, args.peer / f"{topo}.csv", rows, cols, df, pathlib.Path(tmp))
            print(json.dumps(r), flush=True)
            results.append(r)
    table = markdown(results)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    ok = all(r["cycles_agree"] == r["layers"] == r["ours_layers"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
