"""Bench: energy per inference and its breakdown for ResNet-50 and a BERT-base encoder
layer at W8A8, W4A8, W4A4 (and W8A4, W2A8 in the plots), per-tensor vs per-channel; area
per configuration from Yosys; figures in ``BenchOptions.figures_dir`` (``docs/figures/``).

Traffic: the analytic model (:mod:`sim.analytic`, cycle-exact); energies: the default
Horowitz 45 nm table (:mod:`sim.energy`); area: ``qaccel.synth`` (no-ABC flow, cached).
"""

from __future__ import annotations

import os
import pathlib
import time

from qaccel.benches import BenchOptions
from qaccel.sim import ArrayConfig
from qaccel.sim.energy import CATEGORIES, default_table

#: the array of ``qaccel perf`` / ``qaccel energy`` defaults
BASE = ArrayConfig(rows=32, cols=32, acc_depth=256, acc_bits=32, mult_bits=16)
PLOT_POINTS = ((8, 8), (8, 4), (4, 8), (4, 4), (2, 8))
TABLE_POINTS = ("W8A8", "W4A8", "W4A4")
NETWORKS = (("resnet50", "ResNet-50, 224x224, batch 1", {}),
            ("bert_base", "BERT-base encoder layer, 128 tokens", {"seq_len": 128}))
BUFFER_POINTS = (64, 256, 1024, 4096)


def _mj(pj: float) -> str:
    return f"{pj / 1e9:.3f}"


def run(opts: BenchOptions) -> str:
    from qaccel.commands.energy import network_energy_report, sweep
    from qaccel.networks import network_workloads
    from qaccel.plots import plot_energy_sweep

    table = default_table()
    t0 = time.perf_counter()
    lines = ["# Energy and area", "",
             f"Array {BASE.rows}x{BASE.cols}, acc_depth {BASE.acc_depth}, acc_bits "
             f"{BASE.acc_bits}, mult_bits {BASE.mult_bits}, buffers W/A/O "
             f"{BASE.weight_buffer_kib}/{BASE.act_buffer_kib}/{BASE.out_buffer_kib} KiB (the "
             f"`qaccel energy` defaults). Traffic from the analytic model (cycle-exact), energy "
             f"table `{table.name}` (Horowitz, ISSCC 2014, 45 nm; DRAM "
             f"{table.dram_64b:g} pJ per 64 bits, the middle of 1.3-2.6 nJ). Area: Yosys "
             f"generic synthesis of the generated RTL (no-ABC flow), CMOS transistor estimate. "
             f"Model and scaling laws: [docs/energy.md](../energy.md). Reproduce with "
             f"`qaccel energy --network resnet50 --plot r50.png --area` or `make bench`.", ""]
    figs = []
    all_rows = {}
    for net, desc, kw in NETWORKS:
        gemms = network_workloads(net, **kw)
        rows = sweep(BASE, gemms, table, PLOT_POINTS, area=True, source=net)
        all_rows[net] = rows
        opts.figures_dir.mkdir(parents=True, exist_ok=True)
        fig = opts.figures_dir / f"energy_{net}.png"
        plot_energy_sweep(rows, fig, title=f"{desc} on {BASE.rows}x{BASE.cols} "
                                           f"(acc{BASE.acc_bits}, M{BASE.mult_bits}, "
                                           f"{table.name})")
        figs.append((desc, fig))
        lines += [f"## {desc}", "",
                  f"{len(gemms)} GEMM layers, {rows[0]['macs']:,} MACs, "
                  f"{rows[0]['cycles']:,} cycles at every bit-width "
                  f"({rows[0]['cycles'] / 500e3:.2f} ms at 500 MHz).", "",
                  "| config | scaling | energy / inference [mJ] | pJ / MAC | "
                  + " | ".join(f"{c} %" for c in CATEGORIES) + " | per-channel extra |",
                  "|---|---|---:|---:|" + "---:|" * len(CATEGORIES) + "---:|"]
        by = {(r["label"], r["scaling"]): r for r in rows}
        for lab in TABLE_POINTS:
            for sc in ("per-tensor", "per-channel"):
                r = by[lab, sc]
                extra = ""
                if sc == "per-channel":
                    base = by[lab, "per-tensor"]["total_pj"]
                    d = r["total_pj"] - base
                    extra = f"+{d / 1e6:.2f} uJ (+{100 * d / base:.3f} %)"
                lines.append(f"| {lab} | {sc} | {_mj(r['total_pj'])} | "
                             f"{r['total_pj'] / r['macs']:.3f} | "
                             + " | ".join(f"{100 * r['categories_pj'][c] / r['total_pj']:.1f}"
                                          for c in CATEGORIES) + f" | {extra} |")
        link = pathlib.PurePath(os.path.relpath(fig, opts.out_dir)).as_posix()
        lines += ["", f"![{desc}]({link})", ""]

    # buffer sensitivity: how much of the DRAM share is the 64 KiB default
    gemms = network_workloads("resnet50")
    lines += ["## ResNet-50 W8A8 per-tensor vs on-chip buffer size", "",
              "All three buffers at the given size; larger SRAMs cost more per access "
              "(log-log interpolation between Horowitz's 8 KB / 32 KB / 1 MB points; above "
              "1 MB extrapolated with the last segment's exponent).", "",
              "| buffers [KiB] | energy [mJ] | DRAM % | buffers % | DRAM Mbit |",
              "|---:|---:|---:|---:|---:|"]
    for kib in BUFFER_POINTS:
        cfg = BASE.replace(weight_buffer_kib=kib, act_buffer_kib=kib, out_buffer_kib=kib)
        rep = network_energy_report(cfg, gemms, table, "resnet50")
        t = rep["total"]
        dram_bits = sum(v for k, v in t["terms_pj"].items() if k.startswith("dram.")
                        or k == "params.dram") / table.dram_bit_pj()
        lines.append(f"| {kib} | {_mj(t['total_pj'])} | "
                     f"{100 * t['categories_pj']['dram'] / t['total_pj']:.1f} | "
                     f"{100 * t['categories_pj']['buffers'] / t['total_pj']:.1f} | "
                     f"{dram_bits / 1e6:,.1f} |")
    lines.append("")

    # area per configuration (the same synthesized parts for both networks)
    rows = all_rows[NETWORKS[0][0]]
    lines += ["## Area per configuration (Yosys, no-ABC flow)", "",
              f"PE synthesized alone; array = {BASE.rows}x{BASE.cols} PEs; requantizer "
              f"synthesized with 4 lanes and scaled to {BASE.cols}; params FIFO as built. "
              "Transistors are Yosys's `stat -tech cmos` estimate after lowering enable/reset "
              "flip-flops to plain DFFs plus multiplexers.", "",
              "| config | scaling | PE cells | PE transistors | array [M tr.] | "
              "requantizer lane [tr.] | params FIFO [tr.] | datapath [M tr.] |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        a = r["area"]
        mode = "pc" if r["scaling"] == "per-channel" else "pt"
        lines.append(f"| {r['label']} | {r['scaling']} | {a['pe_cells']:,} | "
                     f"{a['pe_transistors']:,} | {a['array_transistors'] / 1e6:.2f} | "
                     f"{a[f'requant_lane_{mode}_transistors']:,.0f} | "
                     f"{a[f'params_fifo_{mode}_transistors']:,} | "
                     f"{a['datapath_transistors'] / 1e6:.3f} |")
    lines += ["", f"Bench wall time {time.perf_counter() - t0:.0f} s (synthesis cached after "
                  f"the first run).", ""]
    return "\n".join(lines)
