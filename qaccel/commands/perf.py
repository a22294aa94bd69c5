"""``qaccel perf``: per-layer latency, utilization and traffic of a network on the array.

    qaccel perf --network resnet50 --rows 32 --cols 32
    qaccel perf --topology net.csv [--gemm] --json out.json --csv out.csv
    qaccel perf --topology net.csv --scalesim-compat --dataflow os --rows 8 --cols 12

Without ``--scalesim-compat`` the analytic model of our weight-stationary RTL
(:mod:`sim.analytic`, cycle-exact with the cycle model) runs; with it, SCALE-Sim 3.0.0's
conventions (:mod:`sim.scalesim_compat`) and its ws / os / is dataflows.
The non-GEMM ops of ``--int-network`` files and of every ``--network`` (the CNNs' max /
global average pooling and residual adds; bert_base's softmax, LayerNorm, GELU and residual
adds) run on the vector unit (``--vector-lanes``), listed after the array's layers and
counted in the totals (:func:`sim.analytic.analyze_vector`); topology files are GEMMs only.
The option helpers here (:func:`add_perf_options`, :func:`perf_config`,
:func:`perf_workloads`) are reused by commands that take the same inputs.
"""

from __future__ import annotations

import argparse
import functools

from qaccel.sim.analytic import LEVELS, OPERANDS, NetworkPerf, analyze_layer, analyze_vector
from qaccel.sim.mapper import MAPPINGS, OBJECTIVES, choose_mapping
from qaccel.sim.scalesim_compat import DATAFLOWS, CompatNetwork, compat_network
from qaccel.sim.workload import GemmWorkload, VectorWorkload

from .options import (
    add_array_options,
    config_from_args,
    input_file,
    output_file,
    positive_int,
)
from .reports import write_csv, write_json

#: array defaults for perf / energy: a 32x32 array whose T-tiles cover every pass
PERF_DEFAULTS = {"rows": 32, "cols": 32, "acc_depth": 256}
NETWORK_CHOICES = ("resnet50", "resnet18", "mobilenet_v2", "bert_base", "digits_cnn",
                   "digits_mobilenet")


def add_perf_options(p: argparse.ArgumentParser) -> None:
    """Workload source, array, buffers and output options (shared with ``qaccel energy``)."""
    src = p.add_argument_group("workload (one of)")
    one = src.add_mutually_exclusive_group(required=True)
    one.add_argument("--network", metavar="NAME",
                     help="shipped network: " + ", ".join(NETWORK_CHOICES))
    one.add_argument("--topology", type=input_file, metavar="FILE.csv",
                     help="SCALE-Sim topology file (conv format, or GEMM with --gemm)")
    one.add_argument("--int-network", type=input_file, metavar="NET.npz",
                     help="exported integer network (qaccel quantize / run): each layer is "
                          "costed with its own bit-widths from the file")
    src.add_argument("--gemm", action="store_true",
                     help="the topology is SCALE-Sim's 'Layer, M, N, K' GEMM format")
    src.add_argument("--seq-len", type=positive_int, default=None,
                     help="sequence length for bert_base (default: 128) and for token "
                          "--int-network files (default: the length they were exported "
                          "with)")
    src.add_argument("--batch", type=positive_int, default=1, help="batch size for --network")
    src.add_argument("--method", choices=("auto", "fx", "hooks"), default="auto",
                     help="model mapping front end (default: fx, hooks if it does not trace)")
    add_array_options(p, **PERF_DEFAULTS)
    p.add_argument("--dim-bits", type=int, default=16,
                   help="job dimension counter width: T, K, N < 2**dim_bits")
    buf = p.add_argument_group("on-chip buffers (traffic model)")
    for name, what in (("weight", "weights and requantizer params"), ("act", "activations"),
                       ("out", "outputs")):
        buf.add_argument(f"--{name}-buffer-kib", type=int, default=64, metavar="KIB",
                         help=f"{what} buffer size in KiB")
    vec = p.add_argument_group("vector unit (softmax, LayerNorm, GELU, adds, pooling)")
    vec.add_argument("--vector-lanes", type=int, default=0, metavar="N",
                     help="integer operations per cycle of the vector unit that runs the "
                          "non-GEMM ops (pooling, residual adds, softmax, LayerNorm, GELU) "
                          "of --network and --int-network workloads (default: 0 = one lane "
                          "per array column)")
    mp = p.add_argument_group("mapping (tiling, loop order, residency per layer)")
    mp.add_argument("--mapping", choices=MAPPINGS, default=None,
                    help="search: the best mapping per layer (sim.mapper); fixed: the one "
                         "loop nest of the RTL job (for n-tile: for T-tile: for K-tile) over "
                         "the whole layer (default: search; fixed with --scalesim-compat)")
    mp.add_argument("--objective", choices=OBJECTIVES, default="energy",
                    help="what --mapping search minimises (default: %(default)s)")
    out = p.add_argument_group("output")
    out.add_argument("--json", type=output_file, metavar="FILE", help="write results as JSON")
    out.add_argument("--csv", type=output_file, metavar="FILE",
                     help="write the per-layer table as CSV")


def perf_config(args: argparse.Namespace):
    """The array; with ``--int-network`` its bit-widths, accumulator, multiplier and scaling
    are the network's (:func:`qaccel.flow.hardware_config`)."""
    cfg = config_from_args(args).replace(weight_buffer_kib=args.weight_buffer_kib,
                                         act_buffer_kib=args.act_buffer_kib,
                                         out_buffer_kib=args.out_buffer_kib,
                                         dim_bits=args.dim_bits,
                                         vector_lanes=args.vector_lanes)
    net = int_network(args)
    if net is not None:
        from qaccel.flow import hardware_config

        cfg = hardware_config(cfg, net)
    return cfg


def int_network(args: argparse.Namespace):
    """The ``--int-network`` file's :class:`IntNetwork` (``None`` without the option)."""
    path = getattr(args, "int_network", None)
    if path is None:
        return None
    from qaccel.sim.network import IntNetwork

    try:
        return IntNetwork.load(path)
    except ValueError as exc:
        raise ValueError(f"--int-network: {exc}") from None


def layer_configs(args: argparse.Namespace, cfg) -> list | None:
    """With ``--int-network``: one configuration per GEMM layer, with that layer's
    bit-widths (:func:`qaccel.flow.layer_config`); else ``None`` (every layer on ``cfg``)."""
    net = int_network(args)
    if net is None:
        return None
    from qaccel.flow import array_layers, layer_config

    return [layer_config(cfg, net, net.layers[i]) for i in array_layers(net)]


def perf_workloads(args: argparse.Namespace) -> tuple[str, list[GemmWorkload], dict]:
    """``(source label, workloads, layer name -> topology row)`` from ``--network`` /
    ``--topology``."""
    net = int_network(args)
    if net is not None:
        if args.gemm:
            raise ValueError("--gemm applies to --topology files only")
        from qaccel.flow import network_workloads

        return str(args.int_network), _seq_len_option(network_workloads, net, args), {}
    if args.topology is not None:
        from qaccel.sim.topology import read_topology

        if args.seq_len is not None:      # a topology file fixes every layer's shape
            raise ValueError("--seq-len applies to --network bert_base and token "
                             "--int-network files, not --topology")

        layers = read_topology(args.topology, gemm=True if args.gemm else None)
        return str(args.topology), [x.workload() for x in layers], {x.name: x.row
                                                                    for x in layers}
    if args.gemm:
        raise ValueError("--gemm applies to --topology files only")
    if args.network not in NETWORK_CHOICES:
        raise ValueError(f"unknown network {args.network!r}; choose one of "
                         f"{', '.join(NETWORK_CHOICES)}")
    from qaccel.networks import network_workloads

    kw = {"batch": args.batch}
    if args.seq_len is not None:
        if args.network != "bert_base":
            raise ValueError("--seq-len applies to --network bert_base only")
        kw["seq_len"] = args.seq_len
    return args.network, network_workloads(args.network, method=args.method, **kw), {}


def _seq_len_option(fn, net, args: argparse.Namespace):
    """``fn(net, args.seq_len)`` with a length error naming ``--seq-len``."""
    try:
        return fn(net, args.seq_len)
    except ValueError as exc:
        msg = str(exc)
        if msg.startswith("seq_len: "):
            raise ValueError(f"--seq-len: {msg[len('seq_len: '):]}") from None
        raise


def perf_vector_workloads(args: argparse.Namespace, cfg) -> list[VectorWorkload]:
    """The vector-unit layers of the workload: an ``--int-network`` file's (its own shapes
    and widths on one sample input, :func:`sim.executor.vector_workloads`), a shipped
    network's at ``cfg.a_bits`` (:func:`qaccel.networks.network_vector_workloads`: the
    CNNs' max / global average pooling and residual adds, ``bert_base``'s softmax,
    LayerNorms, GELU and residual adds); none for topology files (GEMMs only)."""
    net = int_network(args)
    if net is not None:
        from qaccel.flow import network_vector_workloads

        return _seq_len_option(network_vector_workloads, net, args)
    if args.topology is not None:
        return []
    from qaccel.mapping import vectors_at_bits

    return vectors_at_bits(_shipped_vectors(args.network, args.batch, args.seq_len),
                           cfg.a_bits)


@functools.lru_cache(maxsize=8)
def _shipped_vectors(name: str, batch: int, seq_len: int | None) -> tuple:
    """A shipped network's vector-unit layers, GELU left ``gelu`` (traced once for every
    bit-width of an energy sweep)."""
    from qaccel.networks import network_vector_workloads

    kw = {} if seq_len is None else {"seq_len": seq_len}
    return tuple(network_vector_workloads(name, a_bits=None, batch=batch, **kw))


def mapping_mode(args: argparse.Namespace) -> str:
    """``--mapping`` resolved: ``search`` unless given (``fixed`` in compat mode, whose
    SCALE-Sim folds are a fixed nest; ``--mapping search`` with it is an error)."""
    compat = getattr(args, "scalesim_compat", False)
    if args.mapping == "search" and compat:
        raise ValueError("--mapping search does not apply to --scalesim-compat (SCALE-Sim's "
                         "fixed folds)")
    return args.mapping or ("fixed" if compat else "search")


def _where(source: str, rows: dict, name: str) -> str:
    return f"{source}: row {rows[name]}" if name in rows else source


def analyze(args: argparse.Namespace) -> tuple[str, NetworkPerf | CompatNetwork]:
    if args.dataflow != "ws" and not args.scalesim_compat:
        raise ValueError(f"--dataflow {args.dataflow} is only available with --scalesim-compat: "
                         "the qaccel RTL (and its analytic model) is weight-stationary (ws)")
    mode = mapping_mode(args)
    cfg = perf_config(args)
    source, gemms, rows = perf_workloads(args)
    if args.scalesim_compat:
        return source, compat_network(cfg.rows, cfg.cols, args.dataflow, gemms)
    layers = []
    for g, c in zip(gemms, layer_configs(args, cfg) or [cfg] * len(gemms)):
        try:
            layers.append(analyze_layer(c, g, choose_mapping(c, g, mode, args.objective)))
        except ValueError as exc:
            raise ValueError(f"{_where(source, rows, g.name)}: {exc}") from None
    vectors = tuple(analyze_vector(cfg, v) for v in perf_vector_workloads(args, cfg))
    return source, NetworkPerf(cfg=cfg, layers=tuple(layers), vectors=vectors)


def _fmt_bits(bits: int) -> str:
    for unit, scale in (("Gbit", 1e9), ("Mbit", 1e6), ("kbit", 1e3)):
        if bits >= scale:
            return f"{bits / scale:.2f} {unit}"
    return f"{bits} bit"


def table_rows(result: NetworkPerf | CompatNetwork) -> list[dict]:
    """Flat per-layer rows (the CSV): the array's layers (``unit`` ``array``), then the
    vector unit's (``unit`` ``vector``, ``op`` its kind)."""
    rows = []
    if isinstance(result, CompatNetwork):
        for lp in result.layers:
            rows.append(lp.to_dict())
        return rows
    units = [("array", lp) for lp in result.layers] + [("vector", vp)
                                                         for vp in result.vectors]
    for unit, lp in units:
        row = {"unit": unit}
        row.update({k: v for k, v in lp.to_dict().items() if k != "traffic_bits"})
        if unit == "array":
            row["mapping"] = lp.mapping.label()
        else:
            row["op"] = row.pop("kind")
            row["in_bits"] = "/".join(map(str, row["in_bits"]))
        for lv in LEVELS:
            for op in OPERANDS:
                acc = lp.traffic[lv, op]
                row[f"{lv}_{op}_reads_bits"] = acc.reads
                row[f"{lv}_{op}_writes_bits"] = acc.writes
        rows.append(row)
    return rows


def csv_fields(rows: list[dict]) -> list[str]:
    """Every key of ``rows``, in first-seen order (array and vector rows differ)."""
    return list(dict.fromkeys(k for r in rows for k in r))


def render_vector(result: NetworkPerf) -> list[str]:
    """The vector unit's table and totals (empty without vector layers)."""
    if not result.vectors:
        return []
    lanes = result.cfg.vector_unit_lanes
    hdr = (f"{'vector-unit layer':<22} {'kind':<15} {'ops':>13} {'reads':>11} "
           f"{'writes':>11} {'bits':>7} {'buffer':>12} {'cycles':>11}")
    out = ["", f"vector unit: {lanes} lanes, one integer op per lane and cycle, serialized "
               "with the array; no DRAM traffic but embedding rows", hdr, "-" * len(hdr)]
    for vp in result.vectors:
        bits = "/".join(map(str, vp.in_bits)) + f">{vp.out_bits}"
        out.append(f"{vp.name[:22]:<22} {vp.kind:<15} {vp.ops:>13,} {vp.reads:>11,} "
                   f"{vp.writes:>11,} {bits:>7} {_fmt_bits(vp.buffer_bits):>12} "
                   f"{vp.cycles:>11,}")
    out.append("-" * len(hdr))
    vc = result.vector_cycles
    out.append(f"vector unit total: {len(result.vectors)} layers, "
               f"{sum(vp.ops for vp in result.vectors):,} ops, {vc:,} cycles "
               f"({100 * vc / result.cycles:.1f} % of {result.cycles:,}), buffer traffic "
               f"{_fmt_bits(sum(vp.buffer_bits for vp in result.vectors))}")
    return out


def render(source: str, result: NetworkPerf | CompatNetwork, bits: list | None = None,
           mapping: str = "fixed") -> str:
    out = []
    if isinstance(result, CompatNetwork):
        out.append(f"{source} on a {result.rows}x{result.cols} array, SCALE-Sim 3.0.0 compat "
                   f"mode, dataflow {result.dataflow}")
        hdr = (f"{'layer':<16} {'T':>7} {'K':>6} {'N':>6} {'rep':>4} {'Sr':>7} {'Sc':>7} "
               f"{'Tm':>7} {'folds':>6} {'cycles':>11} {'overall%':>9} {'mapping%':>9} "
               f"{'compute%':>9}")
        out += [hdr, "-" * len(hdr)]
        for lp in result.layers:
            out.append(f"{lp.name[:16]:<16} {lp.T:>7} {lp.K:>6} {lp.N:>6} {lp.repeat:>4} "
                       f"{lp.Sr:>7} {lp.Sc:>7} {lp.Tm:>7} {lp.folds:>6} {lp.cycles:>11,} "
                       f"{lp.overall_util:>9.2f} {lp.mapping_efficiency:>9.2f} "
                       f"{lp.compute_util:>9.2f}")
        out.append("-" * len(hdr))
        out.append(f"total: {len(result.layers)} layers, {result.cycles:,} cycles, "
                   f"{result.macs:,} MACs, utilization {100 * result.utilization:.2f} %")
        return "\n".join(out)
    cfg = result.cfg
    searched = mapping == "search"
    out.append(f"{source} on {cfg.tag()} (weight-stationary, analytic = cycle model); "
               f"buffers W/A/O {cfg.weight_buffer_kib}/{cfg.act_buffer_kib}/"
               f"{cfg.out_buffer_kib} KiB; mapping {mapping}")
    hdr = (f"{'layer':<22} {'op':<9} {'T':>6} {'K':>6} {'N':>6} {'rep':>4} {'cycles':>11} "
           f"{'util%':>6} {'MACs':>13} {'DRAM':>12} {'xcomp':>6} {'reread':>6}"
           + (f"  {'mapping':<36}" if searched else ""))
    out += [hdr, "-" * len(hdr)]
    for lp in result.layers:
        reread = ("W" if lp.weights_refetched else "") + ("A" if lp.acts_refetched else "")
        out.append(f"{lp.name[:22]:<22} {lp.op:<9} {lp.T:>6} {lp.K:>6} {lp.N:>6} "
                   f"{lp.repeat:>4} {lp.cycles:>11,} {100 * lp.utilization:>6.2f} "
                   f"{lp.macs:>13,} {_fmt_bits(lp.dram_bits):>12} "
                   f"{lp.dram_bits / lp.compulsory_bits:>6.2f} {reread or '-':>6}"
                   + (f"  {lp.mapping.label():<36}" if searched else ""))
    out.append("-" * len(hdr))
    out += render_vector(result)
    tr = result.traffic
    vec = (f" (array {result.array_cycles:,} + vector unit {result.vector_cycles:,})"
           if result.vectors else "")
    out.append(f"total: {len(result.layers)} layers, {result.cycles:,} cycles{vec}, "
               f"{result.macs:,} MACs, utilization {100 * result.utilization:.2f} %")
    out.append("DRAM: " + ", ".join(f"{op} {_fmt_bits(tr[('dram', op)].total)}"
                                    for op in OPERANDS if tr["dram", op].total)
               + f"; total {_fmt_bits(result.dram_bits)} = "
               f"{result.dram_bits / result.compulsory_bits:.3f} x compulsory "
               f"({_fmt_bits(result.compulsory_bits)}: weights and inputs read once, "
               "outputs written once)")
    out.append("on-chip buffers: " + ", ".join(
        f"{op} {_fmt_bits(tr[('buffer', op)].total)}" for op in OPERANDS
        if tr["buffer", op].total))
    out.append("xcomp = DRAM / compulsory; reread: W = weights, A = input crossed DRAM more "
               "than once")
    if bits:
        out.append("per-layer bits (from the network): " + ", ".join(
            f"{b['name']} W{b['w_bits']}A{b['a_bits']}" for b in bits))
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    source, result = analyze(args)
    cfgs = layer_configs(args, perf_config(args))
    bits = None if cfgs is None else [
        {"name": lp.name, "w_bits": c.w_bits, "a_bits": c.a_bits,
         "per_channel": c.per_channel} for lp, c in zip(result.layers, cfgs)]
    mode = mapping_mode(args)
    print(render(source, result, bits, mode))
    if args.json:
        write_json(args.json, {"source": source, "dataflow": args.dataflow,
                               "scalesim_compat": bool(args.scalesim_compat),
                               "mapping": mode, "objective": args.objective,
                               **result.to_dict(), **({"bits": bits} if bits else {})})
    if args.csv:
        rows = table_rows(result)
        write_csv(args.csv, rows, csv_fields(rows))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "perf", help="per-layer cycles, utilization and traffic of a network",
        description="Map a network or SCALE-Sim topology to GEMMs and report per-layer cycles "
                    "(equal to the cycle-level model), utilization, MACs and traffic per "
                    "operand and memory level in bits; or, with --scalesim-compat, "
                    "SCALE-Sim 3.0.0's compute cycles and utilization (ws/os/is).")
    add_perf_options(p)
    p.add_argument("--dataflow", choices=DATAFLOWS, default="ws",
                   help="ws (our RTL); os / is only with --scalesim-compat")
    p.add_argument("--scalesim-compat", action="store_true",
                   help="SCALE-Sim 3.0.0 conventions: weight preload not overlapped")
    p.set_defaults(func=run)
