"""``qaccel energy``: energy per inference of a network on the array, per layer and term.

    qaccel energy --network resnet50 --w-bits 4 --a-bits 8 --per-channel
    qaccel energy --network bert_base --json e.json --csv e.csv --plot e.png
    qaccel energy --topology net.csv --energy-table my45nm.json --area

Same workload / array / buffer options as ``qaccel perf``; the traffic comes from the
analytic model (:mod:`sim.analytic`) and the energies from :mod:`sim.energy` (default
table: Horowitz, ISSCC 2014, 45 nm). ``--plot`` sweeps bit-widths (``--sweep``, default
W8A8, W8A4, W4A8, W4A4, W2A8) x per-tensor / per-channel on the same array and draws the
stacked energy breakdown, the latency and (with ``--area``) the synthesized area.
The vector unit's layers (``--int-network`` files and every ``--network``: the CNNs' max /
global average pooling and residual adds, bert_base's softmax, LayerNorm, GELU and residual
adds) are listed after the array's, with their operations, cycles and energy (category
``vector``, :func:`sim.energy.vector_energy`), and counted in the totals.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

from qaccel.flow import network_energy_report
from qaccel.sim.config import ArrayConfig
from qaccel.sim.energy import CATEGORIES, load_table

from .options import input_file, output_file, positive_float
from .perf import (
    add_perf_options,
    csv_fields,
    layer_configs,
    mapping_mode,
    perf_config,
    perf_vector_workloads,
    perf_workloads,
)
from .reports import write_csv, write_json

DEFAULT_SWEEP = ("W8A8", "W8A4", "W4A8", "W4A4", "W2A8")


def parse_bitwidths(text: str) -> list[tuple[int, int]]:
    """``"W8A8,W4A8"`` -> ``[(8, 8), (4, 8)]``; ValueError for an empty list or an item
    that is not a pair."""
    if not text.strip():
        raise ValueError("--sweep: empty list; give bit-width pairs like W8A8,W4A8")
    out = []
    for item in (t.strip() for t in text.split(",")):
        m = re.fullmatch(r"[Ww](\d+)[Aa](\d+)", item)
        if not m:
            raise ValueError(f"--sweep: {item!r} is not a bit-width pair like W8A8")
        out.append((int(m.group(1)), int(m.group(2))))
    if not out:
        raise ValueError("--sweep: empty list")
    return out


def sweep_configs(cfg: ArrayConfig, bitwidths) -> list[tuple[int, int, bool, ArrayConfig]]:
    """``(w_bits, a_bits, per_channel, config)`` of every sweep point on ``cfg``'s array,
    all validated (ValueError naming the point) before anything is computed."""
    out = []
    for w, a in bitwidths:
        for pc in (False, True):
            try:
                out.append((w, a, pc, cfg.replace(w_bits=w, a_bits=a, per_channel=pc)))
            except ValueError as exc:
                raise ValueError(f"--sweep W{w}A{a}: {exc}") from None
    return out


def _sweep_points(text: str) -> list[tuple[int, int]]:
    """argparse ``type=`` for ``--sweep``."""
    try:
        return parse_bitwidths(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--sweep: ")) from None


def _plot_file(value: str) -> pathlib.Path:
    """argparse ``type=`` for ``--plot``: the figure file (``.png`` added without a
    suffix), writable and of a format matplotlib saves."""
    from qaccel.plots import figure_path

    if value and pathlib.Path(value).expanduser().is_dir():     # not DIR.png
        raise argparse.ArgumentTypeError(f"{value!r} is a directory, not a file")
    try:
        path = figure_path(value) if value else value
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return output_file(str(path))


def sweep(cfg: ArrayConfig, gemms, table, bitwidths, *, area: bool = False,
          source: str = "", mapping: str = "fixed", objective: str = "energy",
          vectors=None) -> list[dict]:
    """Energy (and optionally area) for every ``(w_bits, a_bits)`` x per-tensor/per-channel
    on ``cfg``'s array, each layer mapped per ``mapping`` / ``objective``
    (:func:`qaccel.flow.network_energy_report`). ``vectors(config)``: the vector-unit
    layers at that point (``None``: none). One row per point."""
    out = []
    for w, a, pc, c in sweep_configs(cfg, bitwidths):
        rep = network_energy_report(c, gemms, table, source, mapping=mapping,
                                    objective=objective,
                                    vectors=() if vectors is None else vectors(c))
        row = {"label": f"W{w}A{a}", "w_bits": w, "a_bits": a,
               "scaling": "per-channel" if pc else "per-tensor", "tag": c.tag(),
               "cycles": rep["total"]["cycles"], "macs": rep["total"]["macs"],
               "total_pj": rep["total"]["total_pj"],
               "categories_pj": rep["total"]["categories_pj"],
               "params_pj": sum(v for k, v in rep["total"]["terms_pj"].items()
                                if k.startswith("params.")),
               "params_dram_pj": rep["total"]["terms_pj"]["params.dram"],
               "vector_pj": rep["total"]["categories_pj"]["vector"]}
        if area:
            from qaccel.synth import area_report

            row["area"] = area_report(c)["summary"]
        out.append(row)
    return out


def _fmt_pj(pj: float) -> str:
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= scale:
            return f"{pj / scale:.3f} {unit}"
    return f"{pj:.2f} pJ"


def render(rep: dict, clock_mhz: float) -> str:
    cfg = rep["config"]
    out = [f"{rep['source']} on {rep['tag']}; buffers W/A/O {cfg['weight_buffer_kib']}/"
           f"{cfg['act_buffer_kib']}/{cfg['out_buffer_kib']} KiB; energy table "
           f"{rep['table']['name']} ({rep['table']['path']})"]
    short = {"mac": "mac", "pe_regs": "pe_reg", "accumulator": "accum", "requant": "requant",
             "buffers": "buffers", "params": "params", "dram": "dram", "vector": "vector"}
    hdr = (f"{'layer':<22} {'cycles':>11} {'MACs':>13} {'energy':>11} {'pJ/MAC':>7} "
           + " ".join(f"{short[c] + '%':>8}" for c in CATEGORIES))
    out += [hdr, "-" * len(hdr)]
    for L in rep["layers"]:
        tot = L["total_pj"] or 1.0
        out.append(f"{L['name'][:22]:<22} {L['cycles']:>11,} {L['macs']:>13,} "
                   f"{_fmt_pj(L['total_pj']):>11} {L['total_pj'] / max(L['macs'], 1):>7.2f} "
                   + " ".join(f"{100 * L['categories_pj'][c] / tot:>8.1f}" for c in CATEGORIES))
    out.append("-" * len(hdr))
    out += render_vector(rep)
    t = rep["total"]
    ms = t["cycles"] / (clock_mhz * 1e3)
    out.append(f"total: {len(rep['layers'])} layers, {t['cycles']:,} cycles "
               f"({ms:.3f} ms at {clock_mhz:g} MHz), {t['macs']:,} MACs, energy "
               f"{_fmt_pj(t['total_pj'])} per inference, {t['pj_per_mac']:.3f} pJ/MAC")
    out.append("breakdown: " + ", ".join(
        f"{c} {_fmt_pj(t['categories_pj'][c])} ({100 * t['categories_pj'][c] / t['total_pj']:.1f}"
        f"%)" for c in CATEGORIES))
    if "mapping" in rep and t.get("compulsory_bits"):
        out.append(f"mapping: {rep['mapping']}"
                   + (f" (objective {rep['objective']})" if rep["mapping"] == "search" else "")
                   + f"; DRAM {t['dram_bits'] / 1e6:.2f} Mbit = "
                   f"{t['dram_bits'] / t['compulsory_bits']:.3f} x compulsory")
    params = {k: v for k, v in t["terms_pj"].items() if k.startswith("params.") and v}
    out.append("params (bias + requantizer M, S): " + ", ".join(
        f"{k.split('.', 1)[1]} {_fmt_pj(v)}" for k, v in params.items()))
    if rep["extrapolated_buffers"]:
        keys = sorted(int(k) for k in rep["table"]["sram_read_64b"])
        lo, hi = keys[0], keys[-1]
        out.append(f"note: {', '.join(rep['extrapolated_buffers'])} outside the table's SRAM "
                   f"anchors ({lo} .. {hi} bytes): energy per bit extrapolated "
                   f"(docs/energy.md)")
    return "\n".join(out)


def render_vector(rep: dict) -> list[str]:
    """The vector unit's rows (operations, cycles, energy by class) and its share of the
    total; empty without vector layers."""
    rows = rep.get("vector_unit") or []
    if not rows:
        return []
    t = rep["total"]
    classes = ("mult", "add", "shift", "div", "lut", "regs", "buffer", "dram")
    hdr = (f"{'vector-unit layer':<22} {'kind':<10} {'ops':>12} {'cycles':>10} "
           f"{'energy':>11} {'pJ/op':>6} " + " ".join(f"{c + '%':>7}" for c in classes))
    out = ["", f"vector unit: {rows[0]['lanes']} lanes, serialized with the array "
               "(docs/energy.md#vector-unit)", hdr, "-" * len(hdr)]
    for r in rows:
        tot = r["total_pj"] or 1.0
        out.append(f"{r['name'][:22]:<22} {r['kind']:<10} {r['ops']:>12,} {r['cycles']:>10,} "
                   f"{_fmt_pj(r['total_pj']):>11} {r['total_pj'] / max(r['ops'], 1):>6.2f} "
                   + " ".join(f"{100 * r['terms_pj'][f'vector.{c}'] / tot:>7.1f}"
                              for c in classes))
    out.append("-" * len(hdr))
    e = t["categories_pj"]["vector"]
    cyc = sum(r["cycles"] for r in rows)
    out.append(f"vector unit total: {len(rows)} layers, {sum(r['ops'] for r in rows):,} ops, "
               f"{cyc:,} cycles ({100 * cyc / t['cycles']:.1f} % of all), energy "
               f"{_fmt_pj(e)} = {100 * e / t['total_pj']:.2f} % of the total; without it "
               f"{_fmt_pj(t['total_pj'] - e)}")
    return out


def render_area(summary: dict) -> str:
    keys = [k for k in summary if not k.endswith("_source")]
    return "area (yosys generic synthesis): " + ", ".join(
        f"{k} {summary[k]:,.0f}" if isinstance(summary[k], int | float) else f"{k} {summary[k]}"
        for k in keys)


def render_sweep(rows: list[dict]) -> str:
    hdr = (f"{'config':<8} {'scaling':<12} {'cycles':>12} {'energy':>11} {'pJ/MAC':>7} "
           f"{'params':>10} {'vector':>10} {'datapath tr.':>13}")
    out = [hdr, "-" * len(hdr)]
    for r in rows:
        area = r.get("area", {}).get("datapath_transistors")
        out.append(f"{r['label']:<8} {r['scaling']:<12} {r['cycles']:>12,} "
                   f"{_fmt_pj(r['total_pj']):>11} {r['total_pj'] / r['macs']:>7.3f} "
                   f"{_fmt_pj(r['params_pj']):>10} {_fmt_pj(r['vector_pj']):>10} "
                   f"{'-' if area is None else f'{area:,.0f}':>13}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    table = load_table(args.energy_table)
    cfg = perf_config(args)
    bitwidths = args.sweep if args.sweep is not None else parse_bitwidths(
        ",".join(DEFAULT_SWEEP))
    if args.plot or args.sweep is not None:
        sweep_configs(cfg, bitwidths)           # every point valid before any work
    source, gemms, rows = perf_workloads(args)
    mode = mapping_mode(args)
    rep = network_energy_report(cfg, gemms, table, source, rows,
                                layer_cfgs=layer_configs(args, cfg), mapping=mode,
                                objective=args.objective,
                                vectors=perf_vector_workloads(args, cfg))
    print(render(rep, args.clock_mhz))
    if args.area:
        from qaccel.synth import area_report

        rep["area"] = area_report(cfg)
        print(render_area(rep["area"]["summary"]))
    if args.plot or args.sweep is not None:
        rows_sw = sweep(cfg, gemms, table, bitwidths, area=args.area, source=source,
                        mapping=mode, objective=args.objective,
                        vectors=lambda c: perf_vector_workloads(args, c))
        rep["sweep"] = rows_sw
        print()
        print(render_sweep(rows_sw))
        if args.plot:
            from qaccel.plots import plot_energy_sweep

            png = plot_energy_sweep(rows_sw, args.plot,
                                    title=f"{source} on {cfg.rows}x{cfg.cols}, "
                                          f"acc{cfg.acc_bits}, M{cfg.mult_bits} ({table.name})",
                                    clock_mhz=args.clock_mhz)
            print(f"wrote {png}", file=sys.stderr)
    if args.json:
        write_json(args.json, rep)
    if args.csv:
        terms = sorted({k for L in rep["layers"] for k in L["terms_pj"]})
        fields = (["name", "op", "T", "K", "N", "repeat", "cycles", "macs", "total_pj"]
                  + [f"{c}_pj" for c in CATEGORIES] + [f"{t}_pj" for t in terms])
        rows = []
        for L in rep["layers"]:
            row = {"unit": "array", **{k: L[k] for k in fields[:9]}}
            row.update({f"{c}_pj": L["categories_pj"][c] for c in CATEGORIES})
            row.update({f"{t}_pj": L["terms_pj"].get(t, 0.0) for t in terms})
            rows.append(row)
        vterms = sorted({k for V in rep["vector_unit"] for k in V["terms_pj"]})
        for V in rep["vector_unit"]:
            row = {"unit": "vector", "name": V["name"], "op": V["kind"],
                   "cycles": V["cycles"], "macs": 0, "total_pj": V["total_pj"], "ops": V["ops"],
                   "reads": V["reads"], "writes": V["writes"], "buffer_bits": V["buffer_bits"]}
            row.update({f"{c}_pj": V["total_pj"] if c == "vector" else 0.0 for c in CATEGORIES})
            row.update({f"{t}_pj": V["terms_pj"][t] for t in vterms})
            rows.append(row)
        write_csv(args.csv, rows, ["unit"] + [f for f in csv_fields(rows) if f != "unit"])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "energy", help="energy per inference (per layer and term), bit-width sweep, plots",
        description="Energy of a network or SCALE-Sim topology on the array: MACs, PE "
                    "registers, accumulators, requantizer, on-chip buffers, bias/(M, S) "
                    "parameters and DRAM, from the analytic traffic model and an energy "
                    "table (default Horowitz, ISSCC 2014, 45 nm). See docs/energy.md.")
    add_perf_options(p)
    e = p.add_argument_group("energy")
    e.add_argument("--energy-table", type=input_file, metavar="FILE.json",
                   help="energy table (default: the shipped Horowitz 45 nm table, "
                        "qaccel/sim/data/energy_horowitz45.json)")
    e.add_argument("--clock-mhz", type=positive_float, default=500.0,
                   help="clock for the latency in ms")
    e.add_argument("--sweep", type=_sweep_points, metavar="W8A8,W4A8,...",
                   help="bit-width points for the sweep table / plot (default: "
                        + ",".join(DEFAULT_SWEEP) + " when --plot is given)")
    e.add_argument("--plot", type=_plot_file, metavar="FILE.png",
                   help="plot the sweep: stacked energy, latency, area (with --area)")
    e.add_argument("--area", action="store_true",
                   help="synthesize PE / requantizer / params FIFO with Yosys (cached in the "
                        "work directory; the first run takes minutes)")
    p.set_defaults(func=run)
