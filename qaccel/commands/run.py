"""``qaccel run``: one model end to end -- quantize, execute the integer network on the
accelerator model, report accuracy and hardware cost (:func:`qaccel.flow.run`).

    qaccel run --model digits_cnn --w-bits 4 --a-bits 8 --rounding adaround --per-channel \\
               --rows 8 --cols 8 [--engine analytic|cycle|rtl] --out DIR

Writes ``DIR/report.json`` (accuracy, cycles, energy, area, per-layer rows and bit-widths),
``DIR/layers.csv``, ``DIR/net.npz`` (the integer network) and the plots
``DIR/cycles.png`` and ``DIR/energy.png``.
"""

from __future__ import annotations

import argparse
import re
import sys

from .options import input_file, output_dir

PLOTS = ("cycles.png", "energy.png")
# RunConfig / QuantConfig / ArrayConfig fields whose option is not --<field-with-dashes>
_OPTION_OF = {"n_calib": "--calib", "model": "--model", "data": "--data",
              "energy_table": "--energy-table", "acc_depth": "--acc-depth"}


def register(sub: argparse._SubParsersAction) -> None:
    from .quantize import add_quant_options

    p = sub.add_parser(
        "run", help="one model end to end: quantize, run on the accelerator, accuracy + cost",
        description="Quantize a model (or read an exported integer network), execute every "
                    "layer GEMM of the integer network on the chosen engine, and report "
                    "FP32 / fake-quant / integer accuracy, per-layer cycles and utilization, "
                    "energy breakdown, area and the per-layer bit-widths "
                    "(DIR/report.json, plots).")
    add_quant_options(p, model_help="digits_cnn | digits_mobilenet, module:factory (with "
                                    "--data) or an exported net.npz (default digits_cnn)")
    p.add_argument("--data", metavar="MODULE:LOADER",
                   help="callable returning (calib_batches, (x_test, y_test)); required "
                        "with module:factory, optional with net.npz")
    a = p.add_argument_group("array (bit-widths follow the network)")
    a.add_argument("--rows", type=int, default=8, help="PE rows (default 8)")
    a.add_argument("--cols", type=int, default=8, help="PE columns (default 8)")
    a.add_argument("--acc-depth", type=int, default=256,
                   help="accumulator entries per column (default 256)")
    for name in ("weight", "act", "out"):
        a.add_argument(f"--{name}-buffer-kib", type=int, default=64, metavar="KIB",
                       help=f"{name} buffer in KiB (default 64)")
    e = p.add_argument_group("execution and cost")
    e.add_argument("--engine", choices=("analytic", "cycle", "rtl"), default="cycle",
                   help="where the GEMMs run: numpy + analytic cycles, the cycle model "
                        "(default), or the cycle model plus the RTL (cocotb)")
    e.add_argument("--sim", choices=("auto", "verilator", "icarus"), default="auto",
                   help="HDL simulator for --engine rtl")
    e.add_argument("--rtl-images", type=int, default=1,
                   help="whole inferences run on the RTL (default 1)")
    e.add_argument("--eval-images", type=int, default=None,
                   help="test images for the accuracies (default: all)")
    e.add_argument("--clock-mhz", type=float, default=500.0, help="clock (default 500)")
    e.add_argument("--energy-table", type=input_file, metavar="FILE.json",
                   help="energy table (default Horowitz 45 nm)")
    e.add_argument("--seq-len", type=int, default=None, metavar="S",
                   help="sequence length a token network (net.npz with variable-length "
                        "inputs) is costed at (default: the length it was exported with)")
    e.add_argument("--vector-lanes", type=int, default=0, metavar="N",
                   help="integer operations per cycle of the vector unit (pooling, adds, "
                        "softmax, LayerNorm, ...; default 0 = one lane per array column)")
    e.add_argument("--no-area", dest="area", action="store_false",
                   help="skip the Yosys area (cached per hardware config; first run ~1 min)")
    p.add_argument("--out", type=output_dir, required=True, metavar="DIR",
                   help="directory for report.json, layers.csv, net.npz and the plots")
    p.set_defaults(func=run)


def _option_error(exc: Exception) -> ValueError:
    """A flow / config ``ValueError`` with the command-line option it concerns."""
    msg = str(exc)
    if msg.startswith("seq_len: "):
        return ValueError(f"--seq-len: {msg[len('seq_len: '):]}")
    m = re.search(r"\b(RunConfig|QuantConfig|ArrayConfig)\.(\w+)", msg)
    if m:
        field = m.group(2)
        option = _OPTION_OF.get(field, "--" + field.replace("_", "-"))
        return ValueError(f"{option}: {msg}")
    return ValueError(msg)


def run_config(args: argparse.Namespace):
    """The :class:`qaccel.flow.RunConfig` of the parsed arguments."""
    from qaccel.flow import RunConfig
    from qaccel.sim import ArrayConfig

    from .quantize import quant_config

    if args.model.endswith(".npz"):
        try:
            input_file(args.model)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"--model: {exc}") from None
    try:
        return RunConfig(
            model=args.model, data=args.data, quant=quant_config(args),
            array=ArrayConfig(rows=args.rows, cols=args.cols, acc_depth=args.acc_depth,
                              weight_buffer_kib=args.weight_buffer_kib,
                              act_buffer_kib=args.act_buffer_kib,
                              out_buffer_kib=args.out_buffer_kib,
                              vector_lanes=args.vector_lanes),
            engine=args.engine, clock_mhz=args.clock_mhz,
            energy_table=None if args.energy_table is None else str(args.energy_table),
            n_calib=args.calib, eval_images=args.eval_images, rtl_images=args.rtl_images,
            sim=args.sim, area=args.area, seq_len=args.seq_len)
    except ValueError as exc:
        raise _option_error(exc) from None


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f}%"


def render(rep: dict) -> str:
    """The terminal table of a ``report.json`` document."""
    hw = rep["hardware"]
    out = [f"{rep['model']} on {rep['tag']} ({hw['rows']}x{hw['cols']} array), engine "
           f"{rep['engine']}, {rep['clock_mhz']:g} MHz, energy table {rep['energy_table']}"]
    hdr = (f"{'layer':<16} {'kind':<7} {'bits':<6} {'T':>5} {'K':>5} {'N':>5} {'rep':>4} "
           f"{'cycles':>9} {'util%':>6} {'energy':>10}")
    out += [hdr, "-" * len(hdr)]
    for r in rep["layers"]:
        bits = f"W{r['w_bits']}A{r['a_bits']}"
        out.append(f"{r['name'][:16]:<16} {r['kind']:<7} {bits:<6}"
                   f" {r['T']:>5} {r['K']:>5} {r['N']:>5} {r['repeat']:>4} {r['cycles']:>9,} "
                   f"{100 * r['utilization']:>6.1f} {r['energy_pj'] / 1e3:>8.2f}nJ")
    out.append("-" * len(hdr))
    a = rep["accuracy"]
    n = rep["eval_images"]
    where = "numpy GEMMs" if rep["engine"] == "analytic" else "the cycle model"
    out.append(f"accuracy ({n} test images): FP32 {_pct(a['fp32'])}, fake-quant "
               f"{_pct(a['fake_quant'])}, integer on {where} {_pct(a['integer'])} "
               f"(= executor {_pct(a['executor'])})" if n else
               "accuracy: - (no test data: give --data module:loader)")
    v = rep["vector_unit"]
    if v["layers"]:
        out.append(f"vector unit ({v['lanes']} lanes, serialized with the array): "
                   f"{len(v['layers'])} layers, {v['ops']:,} ops, {v['cycles']:,} cycles "
                   f"({100 * v['cycle_share']:.1f}% of the cycles), "
                   f"{v['energy_pj'] / 1e3:.2f} nJ ({100 * v['energy_share']:.1f}% of the "
                   f"energy)")
    out.append(f"per inference: {rep['cycles']:,} cycles ({1e3 * rep['latency_s']:.4f} ms), "
               f"{rep['macs']:,} MACs, utilization {100 * rep['utilization']:.1f}%, energy "
               f"{rep['energy_j'] * 1e6:.3f} uJ ({rep['pj_per_mac']:.2f} pJ/MAC)")
    cats = rep["energy_categories_pj"]
    tot = sum(cats.values()) or 1.0
    out.append("energy breakdown: " + ", ".join(f"{c} {100 * v / tot:.1f}%"
                                                for c, v in cats.items()))
    if rep["area_cells"] is not None:
        out.append(f"area (Yosys, PE array + requantizer + params FIFO): "
                   f"{rep['area_cells']:,} cells, {rep['area_transistors']:,.0f} transistors")
    if any(r.get("cycles_cycle_model") is not None for r in rep["layers"]):
        out.append("cycle model: every layer's cycles == analytic model, outputs == executor")
    if rep.get("rtl"):
        out.append(rep["rtl"]["statement"])
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    import torch

    from qaccel import flow
    from qaccel.plots import plot_layer_cycles, plot_layer_energy

    from .reports import write_csv, write_json

    torch.set_num_threads(1)
    cfg = run_config(args)
    try:
        report = flow.run(cfg)
    except ValueError as exc:
        raise _option_error(exc) from None
    except AssertionError as exc:
        print(f"qaccel run: FAILED: {exc}", file=sys.stderr)
        return 1
    rep = report.to_dict()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    rep["files"] = {"report": str(out / "report.json"), "layers": str(out / "layers.csv"),
                    "network": str(report.net.save(out / "net.npz")),
                    "plots": [str(out / p) for p in PLOTS]}
    title = (f"{rep['model']} W{cfg.quant.w_bits}A{cfg.quant.a_bits} on {rep['tag']}")
    plot_layer_cycles(rep["layers"], out / PLOTS[0], title, rep["clock_mhz"])
    plot_layer_energy(rep["layers"], out / PLOTS[1], title)
    write_json(out / "report.json", rep)
    fields = ["name", "kind", "w_bits", "a_bits", "out_bits", "per_channel", "T", "K", "N",
              "repeat", "cycles", "macs", "utilization", "energy_pj"]
    write_csv(out / "layers.csv", [{k: r[k] for k in fields} for r in rep["layers"]], fields)
    print(render(rep))
    print("plots: " + " ".join(rep["files"]["plots"]))
    if rep.get("rtl") and not rep["rtl"]["passed"]:
        return 1
    return 0
