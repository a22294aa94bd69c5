"""Bench: per-layer mappings (:mod:`sim.mapper`) against the fixed nest and the compulsory
DRAM traffic; mapper time; energy per inference by bit-width with searched mappings; the
ZigZag side-by-side when ``zigzag-dse`` is installed (skipped, and said so, otherwise).

ResNet-18 / ResNet-50 (224x224, batch 1) and a BERT-base encoder layer (128 tokens) on the
``qaccel perf`` default array (32x32, acc_depth 256) with 64 KiB weight, activation and
output buffers; energies from the default Horowitz 45 nm table.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import statistics
import time

from qaccel.benches import BenchOptions
from qaccel.sim import ArrayConfig

BASE = ArrayConfig(rows=32, cols=32, acc_depth=256, acc_bits=32, mult_bits=16)
BITS = ((8, 8), (4, 8), (4, 4), (2, 8))
TIMING_REPEATS = 5


def clear_caches() -> None:
    """Empty every cache the mapper fills (a cold search)."""
    from qaccel.sim import analytic, mapper, mapping, workload

    for f in (mapper._search, mapper._job_energy, mapper._dram_prices, analytic.job_counts,
              mapping._plan, workload._taps_read):
        f.cache_clear()


def network_costs(cfg: ArrayConfig, gemms, mode: str, objective: str = "energy") -> dict:
    """Totals of one network: cycles, DRAM bits, compulsory bits, energy (pJ), per-layer
    rows."""
    from qaccel.flow import network_energy_report
    from qaccel.sim.energy import default_table

    rep = network_energy_report(cfg, gemms, default_table(), mapping=mode,
                                objective=objective)
    t = rep["total"]
    return {"cycles": t["cycles"], "dram": t["dram_bits"], "comp": t["compulsory_bits"],
            "pj": t["total_pj"], "layers": rep["layers"]}


def time_mapper(cfg: ArrayConfig, gemms) -> tuple[list[float], list[float]]:
    """Cold-cache whole-network search times (s, ``TIMING_REPEATS`` runs) and the per-layer
    times (s) of the fastest run."""
    from qaccel.sim.mapper import search_layer

    totals, best_layers = [], None
    for _ in range(TIMING_REPEATS):
        clear_caches()
        per = []
        t0 = time.process_time()
        for g in gemms:
            t1 = time.process_time()
            search_layer(cfg, g)
            per.append(time.process_time() - t1)
        totals.append(time.process_time() - t0)
        if totals[-1] == min(totals):
            best_layers = per
    return totals, best_layers


def _plot(rows: dict, path: pathlib.Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [L["name"] for L in rows["fixed"]["layers"]]
    fig, ax = plt.subplots(figsize=(11, 3.8))
    x = range(len(names))
    for off, mode in ((-0.2, "fixed"), (0.2, "search")):
        ax.bar([i + off for i in x],
               [L["dram_bits"] / L["compulsory_bits"] for L in rows[mode]["layers"]],
               width=0.4, label=f"{mode} ({rows[mode]['dram'] / rows[mode]['comp']:.2f}x "
                                f"in total)")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(list(x), names, rotation=90, fontsize=6)
    ax.set_ylabel("DRAM traffic / compulsory")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(opts: BenchOptions) -> str:
    from qaccel.networks import network_workloads

    t_start = time.perf_counter()
    cfg8 = BASE
    lines = ["# Per-layer mapping vs the fixed nest", "",
             f"Array {BASE.rows}x{BASE.cols}, acc_depth {BASE.acc_depth}, buffers W/A/O "
             f"{BASE.weight_buffer_kib}/{BASE.act_buffer_kib}/{BASE.out_buffer_kib} KiB, "
             "Horowitz 45 nm energies. *Compulsory*: every weight and every input pixel a "
             "layer reads fetched once, every output written once (params excluded; they "
             "are in the DRAM totals). Fixed = one job per layer (`for n-tile: for T-tile: "
             "for K-tile`); search = `sim.mapper` minimising energy (model: "
             "[docs/perf.md](../perf.md#mapping-per-layer)). Reproduce: `qaccel perf "
             "--network resnet50 [--mapping fixed]`.", "",
             "## DRAM traffic and energy, W8A8", "",
             "| network | compulsory Mbit | fixed Mbit | fixed x | search Mbit | search x | "
             "fixed mJ | search mJ | energy saved | fixed cycles | search cycles |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    nets = {}
    for net in ("resnet18", "resnet50", "bert_base"):
        gemms = network_workloads(net)
        rows = {m: network_costs(cfg8, gemms, m) for m in ("fixed", "search")}
        nets[net] = (gemms, rows)
        f, s = rows["fixed"], rows["search"]
        lines.append(f"| {net} | {s['comp'] / 1e6:.1f} | {f['dram'] / 1e6:.1f} | "
                     f"{f['dram'] / f['comp']:.3f} | {s['dram'] / 1e6:.1f} | "
                     f"{s['dram'] / s['comp']:.3f} | {f['pj'] / 1e9:.3f} | "
                     f"{s['pj'] / 1e9:.3f} | {100 * (1 - s['pj'] / f['pj']):.1f} % | "
                     f"{f['cycles']:,} | {s['cycles']:,} |")
    fig = opts.figures_dir / "mapping_resnet50.png"
    _plot(nets["resnet50"][1], fig, "ResNet-50 W8A8, 32x32, 64 KiB buffers: DRAM traffic "
                                    "per layer / compulsory")
    link = pathlib.PurePath(os.path.relpath(fig, opts.out_dir)).as_posix()
    lines += ["", f"![ResNet-50 per-layer traffic]({link})", ""]

    # where the searched ResNet-50 still exceeds compulsory
    _, r50 = nets["resnet50"]
    worst = sorted(r50["search"]["layers"],
                   key=lambda L: L["compulsory_bits"] - L["dram_bits"])[:6]
    lines += ["### ResNet-50 layers furthest above compulsory (search)", "",
              "| layer | T | K | N | mapping | DRAM Mbit | x compulsory |",
              "|---|---:|---:|---:|---|---:|---:|"]
    for L in worst:
        m = L["mapping"]
        lines.append(f"| {L['name']} | {L['T']} | {L['K']} | {L['N']} | t{m['t_tile']} "
                     f"n{m['n_tile']} {m['order']} W:{m['weights']} A:{m['inputs']} | "
                     f"{L['dram_bits'] / 1e6:.2f} | "
                     f"{L['dram_bits'] / L['compulsory_bits']:.2f} |")
    lines += ["", "Neither the weights (`K x N`) nor the input slab of these layers fits "
              "64 KiB together with the other operand's reuse: a job needs all of `K` (partial "
              "sums never leave the accumulators), so one operand is re-read per tile of the "
              "other.", ""]

    # mapper time
    lines += ["## Mapper time (cold caches, CPU time of one process)", "",
              f"Best of {TIMING_REPEATS} cold runs (every cache emptied first); the per-layer "
              "figures are from the best run.", "",
              "| network | layers | whole network ms | slowest layer ms | median layer ms |",
              "|---|---:|---:|---:|---:|"]
    for net in ("resnet18", "resnet50", "bert_base"):
        gemms = nets[net][0]
        totals, per = time_mapper(cfg8, gemms)
        lines.append(f"| {net} | {len(gemms)} | {1e3 * min(totals):.0f} | "
                     f"{1e3 * max(per):.1f} | {1e3 * statistics.median(per):.1f} |")
    lines.append("")

    # bit-widths with searched mappings
    lines += ["## Energy per inference by bit-width (per-tensor scaling)", "",
              "| network | config | fixed mJ | search mJ | search vs W8A8 | "
              "search DRAM Mbit | x compulsory |", "|---|---|---:|---:|---:|---:|---:|"]
    for net in ("resnet50", "bert_base"):
        gemms = nets[net][0]
        base = None
        for w, a in BITS:
            cfg = BASE.replace(w_bits=w, a_bits=a)
            f = network_costs(cfg, gemms, "fixed")
            s = network_costs(cfg, gemms, "search")
            base = base or s["pj"]
            lines.append(f"| {net} | W{w}A{a} | {f['pj'] / 1e9:.3f} | {s['pj'] / 1e9:.3f} | "
                         f"{100 * (s['pj'] / base - 1):+.1f} % | {s['dram'] / 1e6:.1f} | "
                         f"{s['dram'] / s['comp']:.3f} |")
    lines.append("")

    # ZigZag
    lines += ["## Side by side with ZigZag", ""]
    if importlib.util.find_spec("zigzag") is None:
        lines += ["Skipped: `zigzag-dse` is not installed (`pip install -c constraints.txt "
                  "zigzag-dse six`).", ""]
    else:
        lines += ["Skipped: `zigzag-dse` is installed, but describing this accelerator to it "
                  "is not implemented yet.", ""]
    lines += [f"Bench wall time {time.perf_counter() - t_start:.0f} s.", ""]
    return "\n".join(lines)
