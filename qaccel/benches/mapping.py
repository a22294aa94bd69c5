"""Bench: per-layer mappings (:mod:`sim.mapper`) against the fixed nest and the compulsory
DRAM traffic; mapper time; energy per inference by bit-width with searched mappings; the
ZigZag side-by-side when ``zigzag-dse`` is installed (skipped, and said so, otherwise).

ResNet-18 / ResNet-50 (224x224, batch 1) and a BERT-base encoder layer (128 tokens) on the
``qaccel perf`` default array (32x32, acc_depth 256) with 64 KiB weight, activation and
output buffers; energies from the default Horowitz 45 nm table.

ZigZag runs on every ResNet-18 layer and on the ResNet-50 layers whose searched DRAM traffic
is above ``$QACCEL_ZIGZAG_RESNET50`` times compulsory (default ``1.10``; ``0`` for every
layer, ``off`` to skip ResNet-50), one run per distinct layer shape.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import statistics
import time

from qaccel.benches import BenchOptions
from qaccel.sim import ArrayConfig
from qaccel.sim.mapping import Mapping
from qaccel.sim.workload import GemmWorkload

BASE = ArrayConfig(rows=32, cols=32, acc_depth=256, acc_bits=32, mult_bits=16)
BITS = ((8, 8), (4, 8), (4, 4), (2, 8))
TIMING_REPEATS = 5
#: environment variable: the ResNet-50 layers ZigZag runs on (see :func:`zigzag_threshold`)
ZIGZAG_R50_ENV = "QACCEL_ZIGZAG_RESNET50"
ZIGZAG_R50_DEFAULT = 1.10


def zigzag_threshold(value: str | None) -> float | None:
    """The ResNet-50 ZigZag subset from ``$QACCEL_ZIGZAG_RESNET50``: the layers whose
    searched DRAM traffic is above this many times compulsory (``None``/empty: the default
    1.10; ``0``: every layer); ``None`` for ``off``. :class:`ValueError` naming the variable
    otherwise."""
    if value is None or not value.strip():
        return ZIGZAG_R50_DEFAULT
    if value.strip().lower() == "off":
        return None
    try:
        x = float(value)
    except ValueError:
        x = -1.0
    if not x >= 0 or x == float("inf"):
        raise ValueError(f"{ZIGZAG_R50_ENV}: expected 'off' or a ratio >= 0 (DRAM traffic / "
                         f"compulsory), got {value!r}")
    return x


@dataclasses.dataclass(frozen=True)
class LayerGroup:
    """Identical layers (same shape, geometry and input footprint) of one network.

    Parameters
    ----------
    workload : GemmWorkload
        The first of them (it names the group).
    names : tuple of str
        Every layer of the group, in network order.
    report : dict
        The per-layer report row of ``workload`` (``network_energy_report``).
    """

    workload: GemmWorkload
    names: tuple[str, ...]
    report: dict

    @property
    def count(self) -> int:
        """How many layers of the network the group stands for."""
        return len(self.names)


def _shape_key(w: GemmWorkload) -> tuple:
    return (w.T, w.K, w.N, w.repeat, w.op, w.geometry, w.input_elems)


def layers_above(gemms, layers: list[dict], threshold: float) -> list[LayerGroup]:
    """The layers whose DRAM traffic (``layers``: per-layer report rows of ``gemms``) is
    above ``threshold`` times compulsory, grouped by identical shape, in network order."""
    if len(gemms) != len(layers):
        raise ValueError(f"layers: {len(layers)} report rows for {len(gemms)} workloads")
    groups: dict[tuple, LayerGroup] = {}
    for w, L in zip(gemms, layers):
        if L["dram_bits"] <= threshold * L["compulsory_bits"]:
            continue
        key = _shape_key(w)
        g = groups.get(key)
        groups[key] = LayerGroup(w, (w.name,), L) if g is None else \
            dataclasses.replace(g, names=g.names + (w.name,))
    return list(groups.values())


def clear_caches() -> None:
    """Empty every cache the mapper fills (a cold search)."""
    from qaccel.sim import analytic, mapper, mapping, workload

    for f in (mapper._search, mapper._job_energy, mapper._unit_prices, mapper._dram_prices,
              analytic.job_counts,
              mapping._plan, mapping._slabs, workload._taps_read):
        f.cache_clear()


def network_costs(cfg: ArrayConfig, gemms, mode: str, objective: str = "energy",
                  vectors=()) -> dict:
    """Totals of one network (its GEMMs, and the vector-unit layers ``vectors``): cycles,
    DRAM bits, compulsory bits, energy (pJ), per-layer rows."""
    from qaccel.flow import network_energy_report
    from qaccel.sim.energy import default_table

    rep = network_energy_report(cfg, gemms, default_table(), mapping=mode,
                                objective=objective, vectors=vectors)
    t = rep["total"]
    return {"cycles": t["cycles"], "dram": t["dram_bits"], "comp": t["compulsory_bits"],
            "pj": t["total_pj"], "layers": rep["layers"]}


def whole_k_costs(cfg: ArrayConfig, gemms) -> dict:
    """DRAM bits and energy (pJ) of a network mapped by the search without K-split chains."""
    from qaccel.sim.analytic import analyze_layer
    from qaccel.sim.energy import counts_from_perf, default_table, layer_energy
    from qaccel.sim.mapper import search_layer

    dram = pj = 0
    for g in gemms:
        lp = analyze_layer(cfg, g, search_layer(cfg, g, k_split=False).mapping)
        dram += lp.dram_bits
        pj += layer_energy(cfg, counts_from_perf(lp), default_table()).total_pj
    return {"dram": dram, "pj": pj}


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


def _port(name: str, kind: str, bits: int, alloc: list[str]) -> dict:
    return {"name": name, "type": kind, "bandwidth_min": bits, "bandwidth_max": bits,
            "allocation": alloc}


def zigzag_accelerator(cfg: ArrayConfig) -> dict:
    """The accelerator as ZigZag sees it: a ``rows x cols`` MAC array (D1 = output
    channels over the columns, D2 = reduction over the rows), one register per PE and
    operand, the three ``cfg`` buffers and DRAM, with this project's energy table (per
    access of the port width)."""
    from qaccel.sim.energy import default_table

    t = default_table()
    reg = t.register_bit
    mems = {}
    for name, op, bits in (("w_reg", "I2", cfg.w_bits), ("i_reg", "I1", cfg.a_bits)):
        mems[name] = {"size": bits, "r_cost": bits * reg, "w_cost": bits * reg, "area": 0,
                      "latency": 1, "operands": [op], "served_dimensions": [],
                      "ports": [_port("r_port_1", "read", bits, [f"{op}, tl"]),
                                _port("w_port_1", "write", bits, [f"{op}, fh"])]}
    a = cfg.acc_bits
    mems["o_reg"] = {"size": a, "r_cost": a * reg, "w_cost": a * reg, "area": 0,
                     "latency": 1, "operands": ["O"], "served_dimensions": [],
                     "ports": [_port("r_port_1", "read", a, ["O, tl"]),
                               _port("r_port_2", "read", a, ["O, th"]),
                               _port("w_port_1", "write", a, ["O, fh"]),
                               _port("w_port_2", "write", a, ["O, fl"])]}
    for name, op, field in (("w_buf", "I2", "weight_buffer_kib"),
                            ("a_buf", "I1", "act_buffer_kib"), ("o_buf", "O", "out_buffer_kib")):
        kib = getattr(cfg, field)
        rd, wr = (t.sram_bit_pj(kib * 1024, write=w) * 64 for w in (False, True))
        width = 64 * cfg.cols
        alloc_r, alloc_w = ([f"{op}, tl", f"{op}, th"], [f"{op}, fh", f"{op}, fl"]) \
            if op == "O" else ([f"{op}, tl"], [f"{op}, fh"])
        mems[name] = {"size": kib * 8192, "r_cost": rd * cfg.cols, "w_cost": wr * cfg.cols,
                      "area": 0, "latency": 1, "operands": [op],
                      "served_dimensions": ["D1", "D2"],
                      "ports": [_port("r_port_1", "read", width, alloc_r),
                                _port("w_port_1", "write", width, alloc_w)]}
    mems["dram"] = {"size": 10**10, "r_cost": t.dram_64b, "w_cost": t.dram_64b, "area": 0,
                    "latency": 1, "operands": ["I1", "I2", "O"],
                    "served_dimensions": ["D1", "D2"],
                    "ports": [_port("rw_port_1", "read_write", 64,
                                    [f"{o}, {d}" for o in ("I1", "I2") for d in ("fh", "tl")]
                                    + [f"O, {d}" for d in ("fh", "tl", "fl", "th")])]}
    return {"name": "qaccel_ws", "memories": mems,
            "operational_array": {"unit_energy": t.mult_pj(cfg.w_bits, cfg.a_bits)
                                  + t.add_pj(cfg.acc_bits), "unit_area": 1,
                                  "dimensions": ["D1", "D2"], "sizes": [cfg.cols, cfg.rows]}}


def zigzag_layer(i: int, w, cfg: ArrayConfig) -> dict:
    """One ZigZag workload layer (a convolution, or a GEMM as a 1x1 convolution)."""
    g = w.geometry
    prec = {"W": cfg.w_bits, "I": cfg.a_bits, "O": cfg.acc_bits, "O_final": cfg.a_bits}
    if g is None:
        dims = {"B": 1, "K": w.N, "C": w.K, "OY": 1, "OX": w.T, "FY": 1, "FX": 1}
        rel, pr, pad = ["ix=1*ox+1*fx", "iy=1*oy+1*fy"], [w.T, 1], [[0, 0], [0, 0]]
    else:
        dims = {"B": w.T // (g.out_h * g.out_w), "K": w.N, "C": g.in_ch // g.groups,
                "OY": g.out_h, "OX": g.out_w, "FY": g.kh, "FX": g.kw}
        rel = [f"ix={g.stride[1]}*ox+{g.dilation[1]}*fx",
               f"iy={g.stride[0]}*oy+{g.dilation[0]}*fy"]
        pr = [g.in_w, g.in_h]
        pad = [[g.padding[1], g.padding[1]], [g.padding[0], g.padding[0]]]
    return {"id": i, "name": w.name, "operator_type": "Conv",
            "equation": "O[b][k][oy][ox]+=W[k][c][fy][fx]*I[b][c][iy][ix]",
            "dimension_relations": rel, "loop_dims": list(dims),
            "loop_sizes": list(dims.values()), "operand_precision": prec,
            "operand_source": {"I": i}, "pr_loop_dims": ["IX", "IY"], "pr_loop_sizes": pr,
            "padding": pad}


def run_zigzag(cfg: ArrayConfig, w, engine: str = "salsa") -> dict:
    """ZigZag on one layer: DRAM bits, energy (pJ), cycles and its search wall time (s;
    SALSA works in child processes)."""
    import logging
    import pickle

    import yaml
    from zigzag.api import get_hardware_performance_zigzag

    from qaccel import workspace

    work = workspace.current().dir("bench", "zigzag", w.name)
    files = {"acc": work / "accelerator.yaml", "map": work / "mapping.yaml",
             "wl": work / "workload.yaml"}
    files["acc"].write_text(yaml.safe_dump(zigzag_accelerator(cfg), sort_keys=False))
    files["map"].write_text(yaml.safe_dump(
        [{"name": "default", "spatial_mapping": {"D1": [f"K, {cfg.cols}"],
                                                 "D2": [f"C, {cfg.rows}"]},
          "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}}], sort_keys=False))
    files["wl"].write_text(yaml.safe_dump([zigzag_layer(0, w, cfg)], sort_keys=False))
    logging.disable(logging.WARNING)
    try:
        t0 = time.perf_counter()
        get_hardware_performance_zigzag(str(files["wl"]), str(files["acc"]),
                                        str(files["map"]), opt="energy",
                                        temporal_mapping_search_engine=engine,
                                        dump_folder=str(work / "out"),
                                        loma_show_progress_bar=False)
        secs = time.perf_counter() - t0
    finally:
        logging.disable(logging.NOTSET)
    with open(work / "out" / "list_of_cmes.pickle", "rb") as fh:
        cme = pickle.load(fh)[0]
    dram = 0
    for levels in cme.memory_word_access.values():
        dram += 64 * int(sum(levels[-1].data.values()))   # 64-bit DRAM words
    return {"dram": dram, "pj": float(cme.energy_total), "cycles": float(cme.latency_total2),
            "secs": secs}


def _tqdm():
    try:
        from tqdm import tqdm
    except ImportError:        # pragma: no cover - tqdm is a dependency
        def tqdm(x, **_):
            return x
    return tqdm


def ours_and_zigzag(cfg: ArrayConfig, w) -> dict:
    """One layer: compulsory bits, our searched mapping's DRAM bits without the params
    ZigZag does not model, and ZigZag SALSA's bits, energy (pJ), cycles; search times
    (ours cold, s)."""
    from qaccel.sim.analytic import analyze_layer
    from qaccel.sim.mapper import search_layer
    from qaccel.sim.mapping import compulsory_bits

    clear_caches()
    t0 = time.perf_counter()
    m = search_layer(cfg, w).mapping
    t_ours = time.perf_counter() - t0
    lp = analyze_layer(cfg, w, m)
    z = run_zigzag(cfg, w)
    return {"comp": compulsory_bits(cfg, w),
            "dram": lp.dram_bits - lp.traffic["dram", "params"].total,
            "zdram": z["dram"], "zpj": z["pj"], "zcyc": z["cycles"], "t": t_ours,
            "zt": z["secs"]}


ZIGZAG_SETUP = ("ZigZag 3.9.1 (`zigzag-dse`), SALSA temporal mapping search minimising "
                "energy (one worker process), given the same array (D1 = output channels on "
                "the 32 columns, D2 = reduction on the 32 rows), one register per PE and "
                "operand, the three 64 KiB buffers and DRAM, priced with this project's table "
                "per access of the port width; its partial sums are 32-bit and may live in the "
                "output buffer (as our spilled chains' do) or go to DRAM (ours never do). Its "
                "cost model is its own (no accumulator "
                "banks, no requantizer, its own latency model): DRAM traffic (ours without "
                "the bias / (M, S) params ZigZag does not model) compares directly, energy "
                "and cycles only roughly.")


def zigzag_section(cfg: ArrayConfig, gemms, ours: dict) -> list[str]:
    """Per-layer and total table: ZigZag SALSA vs our searched mappings."""
    lines = [ZIGZAG_SETUP + " Times are wall times of the search on the shared machine "
             "(ours: cold caches, one process).", "",
             "| layer | compulsory Mbit | ours Mbit | ZigZag Mbit | ours uJ | ZigZag uJ | "
             "ours cycles | ZigZag cycles | ours ms | ZigZag s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    tot = dict.fromkeys(("comp", "dram", "zdram", "pj", "zpj", "cyc", "zcyc", "t", "zt"), 0.0)
    worse = []
    for w, L in _tqdm()(list(zip(gemms, ours["layers"])), desc="zigzag", unit="layer"):
        row = ours_and_zigzag(cfg, w) | {"pj": L["total_pj"], "cyc": L["cycles"]}
        for k in tot:
            tot[k] += row[k]
        if row["dram"] > row["zdram"]:
            worse.append(w.name)
        lines.append(f"| {w.name} | {row['comp'] / 1e6:.2f} | {row['dram'] / 1e6:.2f} | "
                     f"{row['zdram'] / 1e6:.2f} | {L['total_pj'] / 1e6:.1f} | "
                     f"{row['zpj'] / 1e6:.1f} | {L['cycles']:,} | {row['zcyc']:,.0f} | "
                     f"{1e3 * row['t']:.1f} | {row['zt']:.1f} |")
    lines.append(f"| **total** | {tot['comp'] / 1e6:.1f} | {tot['dram'] / 1e6:.1f} "
                 f"({tot['dram'] / tot['comp']:.3f}x) | {tot['zdram'] / 1e6:.1f} "
                 f"({tot['zdram'] / tot['comp']:.3f}x) | {tot['pj'] / 1e6:.0f} | "
                 f"{tot['zpj'] / 1e6:.0f} | {tot['cyc']:,.0f} | {tot['zcyc']:,.0f} | "
                 f"{1e3 * tot['t']:.0f} | {tot['zt']:.0f} |")
    lines += ["", "Layers where our DRAM traffic exceeds ZigZag's: "
              + (", ".join(worse) if worse else "none") + ". "
              "ZigZag's energies and cycles are not comparable with ours here: it unrolls only "
              "the input channels C over the 32 rows (we unroll C x FY x FX by im2col, so "
              "conv1 uses 3 of its rows there and takes ~10x the cycles), and this "
              "description prices every PE register access at full width; it was not "
              "calibrated against our model on the fixed nest.", ""]
    return lines


def weighted_totals(groups: list[LayerGroup], rows: list[dict]) -> dict:
    """Sums of ``rows`` (one per group, numeric values) weighted by each group's layer
    count."""
    if len(groups) != len(rows):
        raise ValueError(f"rows: {len(rows)} rows for {len(groups)} layer groups")
    keys = rows[0].keys() if rows else ()
    return {k: sum(g.count * r[k] for g, r in zip(groups, rows)) for k in keys}


def zigzag_subset_section(cfg: ArrayConfig, groups: list[LayerGroup], ours: dict,
                          threshold: float) -> list[str]:
    """ResNet-50: ZigZag SALSA on ``groups`` (one run per distinct shape) against our
    searched mappings, per layer and in total weighted by multiplicity; the network's
    DRAM traffic if ZigZag's mappings replaced ours on them."""
    t0 = time.perf_counter()
    which = ("Every ResNet-50 layer" if threshold == 0 else
             f"The ResNet-50 layers whose searched DRAM traffic is above {threshold:.2f}x "
             "compulsory")
    lines = [f"{which} (`${ZIGZAG_R50_ENV}`: the threshold, default "
             f"{ZIGZAG_R50_DEFAULT:.2f}; `0` runs every "
             "layer, `off` skips this table), ZigZag described as above; identical layers "
             "run once and count `x` times in the total (ZigZag s: wall time of the one "
             "run). Mbit are per layer, without params.", "",
             "| layer | x | compulsory Mbit | ours Mbit | ZigZag Mbit | ours x | ZigZag x | "
             "ZigZag s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = []
    for g in _tqdm()(groups, desc="zigzag resnet50", unit="layer"):
        r = ours_and_zigzag(cfg, g.workload)
        rows.append(r)
        names = g.names[0] + (f" (also {', '.join(g.names[1:])})" if g.count > 1 else "")
        lines.append(f"| {names} | {g.count} | {r['comp'] / 1e6:.2f} | "
                     f"{r['dram'] / 1e6:.2f} | {r['zdram'] / 1e6:.2f} | "
                     f"{r['dram'] / r['comp']:.3f} | {r['zdram'] / r['comp']:.3f} | "
                     f"{r['zt']:.1f} |")
    if not rows:
        return lines + ["", "No layer is above the threshold.", ""]
    tot = weighted_totals(groups, rows)
    n = sum(g.count for g in groups)
    lines.append(f"| **total ({n} layers)** | {n} | {tot['comp'] / 1e6:.1f} | "
                 f"{tot['dram'] / 1e6:.1f} | {tot['zdram'] / 1e6:.1f} | "
                 f"{tot['dram'] / tot['comp']:.3f} | {tot['zdram'] / tot['comp']:.3f} | "
                 f"{sum(r['zt'] for r in rows):.0f} |")
    hybrid = ours["dram"] - tot["dram"] + tot["zdram"]
    gains = [{"gain": max(0, r["dram"] - r["zdram"])} for r in rows]
    best = ours["dram"] - weighted_totals(groups, gains)["gain"]
    worse = [g.names[0] for g, r in zip(groups, rows) if r["dram"] > r["zdram"]]
    lines += ["", f"Whole ResNet-50 (params included): ours {ours['dram'] / 1e6:.1f} Mbit "
              f"({ours['dram'] / ours['comp']:.3f}x compulsory); with ZigZag's mappings on "
              f"these {n} layers and ours elsewhere {hybrid / 1e6:.1f} Mbit "
              f"({hybrid / ours['comp']:.3f}x); the lower of the two on each of them "
              f"{best / 1e6:.1f} Mbit ({best / ours['comp']:.3f}x). Layers (groups) where "
              "our DRAM traffic exceeds ZigZag's: "
              + (", ".join(worse) if worse else "none") + f". ZigZag wall time "
              f"{time.perf_counter() - t0:.0f} s for {len(groups)} runs.", ""]
    return lines


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
    from qaccel.networks import network_vector_workloads, network_workloads

    t_start = time.perf_counter()
    threshold = zigzag_threshold(os.environ.get(ZIGZAG_R50_ENV))   # fail before measuring
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
        lines.append(f"| {L['name']} | {L['T']} | {L['K']} | {L['N']} | "
                     f"{Mapping(**L['mapping']).label()} | {L['dram_bits'] / 1e6:.2f} | "
                     f"{L['dram_bits'] / L['compulsory_bits']:.2f} |")
    outs = BASE.out_buffer_kib * 8192 // BASE.acc_bits
    lines += ["", "Neither the weights (`K x N`) nor the input of these layers fits 64 KiB. "
              "K-split chains (`k...`) hold only a `k_tile`-row chunk of an operand; their "
              "partial sums stay in the accumulator bank (at most `acc_depth x cols` = "
              f"{BASE.acc_depth * BASE.cols} sums) or, spilled (`S:buffer`), in the output "
              f"buffer at {BASE.acc_bits} bits (at most {outs}): one operand is still "
              "re-read per tile of the other. `P:stream`: params streamed per job, so that "
              "weights filling the weight buffer exactly can stay.", ""]

    # K-splitting: the same search without chains
    lines += ["### K-splitting (W8A8)", "",
              "The same search with K-split chains left out (`search_layer(..., "
              "k_split=False)`), per network.", "",
              "| network | layers K-split | of which spilled | search x | whole-K search x "
              "| search mJ | whole-K mJ |", "|---|---:|---:|---:|---:|---:|---:|"]
    for net in ("resnet18", "resnet50", "bert_base"):
        gemms, rows = nets[net]
        s_ = rows["search"]
        whole = whole_k_costs(cfg8, gemms)
        maps = [(Mapping(**L["mapping"]), GemmWorkload(L["name"], L["T"], L["K"], L["N"]))
                for L in s_["layers"]]
        n_split = sum(1 for m, w in maps if m.splits(w))
        n_spill = sum(1 for m, w in maps if m.spills(w))
        lines.append(f"| {net} | {n_split}/{len(gemms)} | {n_spill} | "
                     f"{s_['dram'] / s_['comp']:.3f} | "
                     f"{whole['dram'] / s_['comp']:.3f} | {s_['pj'] / 1e9:.3f} | "
                     f"{whole['pj'] / 1e9:.3f} |")
    lines.append("")

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
              "GEMMs (fixed / searched mappings), and with the vector unit's layers too "
              f"({BASE.vector_unit_lanes} lanes: ResNet-50's max pool, residual adds and global "
              "average pool; the BERT layer's softmax, LayerNorms, GELU and adds; "
              "`qaccel.networks.network_vector_workloads`). BERT: one encoder layer of "
              "128 tokens (an inference runs 12).", "",
              "| network | config | fixed mJ | search mJ | search vs W8A8 | "
              "search DRAM Mbit | x compulsory | + vector unit mJ | vector share |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for net in ("resnet50", "bert_base"):
        gemms = nets[net][0]
        base = None
        for w, a in BITS:
            cfg = BASE.replace(w_bits=w, a_bits=a)
            f = network_costs(cfg, gemms, "fixed")
            s = network_costs(cfg, gemms, "search")
            v = network_costs(cfg, gemms, "search", vectors=network_vector_workloads(net, a))
            base = base or s["pj"]
            lines.append(f"| {net} | W{w}A{a} | {f['pj'] / 1e9:.3f} | {s['pj'] / 1e9:.3f} | "
                         f"{100 * (s['pj'] / base - 1):+.1f} % | {s['dram'] / 1e6:.1f} | "
                         f"{s['dram'] / s['comp']:.3f} | {v['pj'] / 1e9:.3f} | "
                         f"{100 * (1 - s['pj'] / v['pj']):.1f} % |")
    lines.append("")

    # ZigZag
    lines += ["## Side by side with ZigZag (ResNet-18, W8A8)", ""]
    if importlib.util.find_spec("zigzag") is None or importlib.util.find_spec("six") is None:
        lines += ["Skipped: `zigzag-dse` is not installed (`pip install -c constraints.txt "
                  "zigzag-dse six`).", ""]
    else:
        lines += zigzag_section(cfg8, nets["resnet18"][0], nets["resnet18"][1]["search"])
        if threshold is not None:
            gemms, rows = nets["resnet50"]
            which = ("every ResNet-50 layer" if threshold == 0 else
                     f"ResNet-50 layers above {threshold:.2f}x compulsory")
            lines += [f"## Side by side with ZigZag ({which}, W8A8)", ""]
            lines += zigzag_subset_section(
                cfg8, layers_above(gemms, rows["search"]["layers"], threshold),
                rows["search"], threshold)
    lines += [f"Bench wall time {time.perf_counter() - t_start:.0f} s.", ""]
    return "\n".join(lines)
