"""Matplotlib figures (PNG, Agg backend) for energy / latency / area reports."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402

from qaccel.commands.reports import writing  # noqa: E402
from qaccel.sim.energy import CATEGORIES  # noqa: E402

__all__ = ["figure_path", "plot_energy_sweep", "plot_layer_cycles", "plot_layer_energy",
           "CATEGORY_COLORS"]

CATEGORY_COLORS = {"mac": "#1f77b4", "pe_regs": "#aec7e8", "accumulator": "#ff7f0e",
                   "requant": "#d62728", "buffers": "#2ca02c", "params": "#9467bd",
                   "dram": "#7f7f7f", "vector": "#e377c2"}
CATEGORY_LABELS = {"mac": "MAC (mult + add)", "pe_regs": "PE registers",
                   "accumulator": "accumulators", "requant": "requantizer",
                   "buffers": "on-chip buffers", "params": "bias + (M, S) params",
                   "dram": "DRAM (W, A, out)",
                   "vector": "vector unit (softmax, LayerNorm, ...)"}


def figure_path(path: str | pathlib.Path) -> pathlib.Path:
    """The file a figure is saved to: ``path``, with ``.png`` added when it has no suffix
    (matplotlib would add it silently). ValueError for a format matplotlib cannot write."""
    path = pathlib.Path(path)
    if not path.suffix:
        return path.with_name(path.name + ".png")
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        raise ValueError(f"{str(path)!r}: cannot save a figure as {path.suffix!r}; use one of "
                         f"{', '.join('.' + f for f in sorted(formats))}")
    return path


def _save(fig, path: str | pathlib.Path) -> pathlib.Path:
    """Save and close ``fig``; return the file written (see :func:`figure_path`)."""
    try:
        path = figure_path(path)
        with writing(path):
            fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def _unit(values: list[float]) -> tuple[float, str]:
    top = max(values) if values else 0.0
    for scale, name in ((1e9, "mJ"), (1e6, "uJ"), (1e3, "nJ")):
        if top >= scale:
            return scale, name
    return 1.0, "pJ"


def _onchip(r: dict, c: str) -> float:
    """Category ``c`` of sweep row ``r`` without DRAM (params' DRAM fetch removed)."""
    v = r["categories_pj"][c]
    return v - r.get("params_dram_pj", 0.0) if c == "params" else v


def _stacked(ax, rows, labels, cats, scale, bar_x, width, onchip=False):
    for r in rows:
        i = labels.index(r["label"])
        bottom = 0.0
        for c in cats:
            v = (_onchip(r, c) if onchip else r["categories_pj"][c]) / scale
            ax.bar(bar_x(i, r["scaling"]), v, width * 0.95, bottom=bottom,
                   color=CATEGORY_COLORS[c], edgecolor="black", linewidth=0.4,
                   hatch="//" if r["scaling"] == "per-channel" else None)
            bottom += v


def plot_energy_sweep(rows: list[dict], path: str | pathlib.Path, title: str = "",
                      clock_mhz: float = 500.0) -> pathlib.Path:
    """One figure for a bit-width x scaling sweep (rows from
    ``qaccel.commands.energy.sweep``): stacked energy per inference by category (all, and
    on-chip only), latency, and synthesized datapath area when the rows carry ``area``.

    Bars come in pairs per bit-width: per-tensor (plain) and per-channel (hatched).
    """
    labels = list(dict.fromkeys(r["label"] for r in rows))
    modes = ["per-tensor", "per-channel"]
    have_area = all("area" in r and "datapath_transistors" in r["area"] for r in rows)
    fig, axs = plt.subplots(2, 2, figsize=(13, 9))
    axes = axs.ravel()
    width = 0.38
    xs = list(range(len(labels)))

    def bar_x(i: int, mode: str) -> float:
        return i + (-width / 2 if mode == "per-tensor" else width / 2)

    # energy, all categories
    ax = axes[0]
    scale, unit = _unit([r["total_pj"] for r in rows])
    _stacked(ax, rows, labels, CATEGORIES, scale, bar_x, width)
    ax.set_xticks(xs, labels)
    ax.set_ylabel(f"energy per inference [{unit}]")
    ax.set_title("energy per inference (left: per-tensor, right hatched: per-channel)",
                 fontsize=9)
    handles = [matplotlib.patches.Patch(facecolor=CATEGORY_COLORS[c], edgecolor="black",
                                        label=CATEGORY_LABELS[c]) for c in reversed(CATEGORIES)]
    ax.legend(handles=handles, fontsize=7, loc="upper center", framealpha=0.9, ncol=3)
    ax.set_ylim(0, max(r["total_pj"] for r in rows) / scale * 1.3)
    ax.grid(axis="y", alpha=0.3)

    # on-chip only, with the per-channel overhead annotated
    ax = axes[1]
    onchip = [c for c in CATEGORIES if c != "dram"]
    totals = {(r["label"], r["scaling"]): sum(_onchip(r, c) for c in onchip) for r in rows}
    scale2, unit2 = _unit(list(totals.values()))
    _stacked(ax, rows, labels, onchip, scale2, bar_x, width, onchip=True)
    for lab in labels:
        pt, pc = totals.get((lab, "per-tensor")), totals.get((lab, "per-channel"))
        if pt and pc:
            ax.annotate(f"+{100 * (pc - pt) / pt:.2f}%", (bar_x(labels.index(lab),
                        "per-channel"), pc / scale2), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs, labels)
    ax.set_ylabel(f"on-chip energy per inference [{unit2}]")
    ax.set_title("on-chip only (no DRAM, params' fetch removed); label: per-channel over "
                 "per-tensor", fontsize=9)
    ax.grid(axis="y", alpha=0.3)

    # latency
    ax = axes[2]
    for mode, color in zip(modes, ("#4c72b0", "#dd8452")):
        pts = [r for r in rows if r["scaling"] == mode]
        ax.bar([bar_x(labels.index(r["label"]), mode) for r in pts],
               [r["cycles"] / (clock_mhz * 1e3) for r in pts], width * 0.95, color=color,
               edgecolor="black", linewidth=0.4, label=mode,
               hatch="//" if mode == "per-channel" else None)
    ax.set_xticks(xs, labels)
    ax.set_ylabel(f"latency [ms at {clock_mhz:g} MHz]")
    ax.set_title("latency (one MAC per PE per cycle at every bit-width)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="y", alpha=0.3)

    ax = axes[3]
    if have_area:
        parts = (("array", "PE array (rows x cols x PE)", "#1f77b4"),
                 ("requant", "requantizer (cols lanes)", "#d62728"),
                 ("fifo", "params FIFO", "#9467bd"))
        for r in rows:
            a = r["area"]
            mode = "pc" if r["scaling"] == "per-channel" else "pt"
            vals = {"array": a["array_transistors"],
                    "requant": a[f"requantizer_{mode}_cols_transistors"],
                    "fifo": a.get(f"params_fifo_{mode}_transistors", 0)}
            bottom = 0.0
            for key, _name, color in parts:
                v = vals[key] / 1e6
                ax.bar(bar_x(labels.index(r["label"]), r["scaling"]), v, width * 0.95,
                       bottom=bottom, color=color, edgecolor="black", linewidth=0.4,
                       hatch="//" if r["scaling"] == "per-channel" else None)
                bottom += v
        ax.legend(handles=[matplotlib.patches.Patch(facecolor=c, edgecolor="black", label=n)
                           for _k, n, c in reversed(parts)], fontsize=7, loc="upper center",
                  ncol=3)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.15)
        ax.set_xticks(xs, labels)
        ax.set_ylabel("datapath area [M transistors, Yosys CMOS estimate]")
        ax.set_title("area from Yosys synthesis of the generated RTL", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "area: run with --area (Yosys synthesis)", ha="center",
                va="center", fontsize=10, transform=ax.transAxes)

    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_layer_cycles(layers: list[dict], path: str | pathlib.Path, title: str = "",
                      clock_mhz: float = 500.0) -> pathlib.Path:
    """Per-layer cycles (bars, with the layer's W/A bits) and PE utilization (line) of one
    inference; ``layers`` are the rows of ``qaccel.flow.network_cost``."""
    names = [r["name"] for r in layers]
    xs = list(range(len(names)))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 3), 4.5))
    bars = ax.bar(xs, [r["cycles"] for r in layers], color="#4c72b0", edgecolor="black",
                  linewidth=0.4)
    for b, r in zip(bars, layers):
        ax.annotate(f"W{r['w_bits']}A{r['a_bits']}", (b.get_x() + b.get_width() / 2,
                    b.get_height()), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs, names, rotation=45 if len(names) > 6 else 0, ha="right"
                  if len(names) > 6 else "center", fontsize=8)
    ax.set_ylabel("cycles per inference")
    total = sum(r["cycles"] for r in layers)
    ax.set_title(f"{total:,} cycles = {total / (clock_mhz * 1e3):.4f} ms at {clock_mhz:g} MHz",
                 fontsize=9)
    ax.set_ylim(0, max(r["cycles"] for r in layers) * 1.15)
    ax.grid(axis="y", alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(xs, [100 * r["utilization"] for r in layers], "o-", color="#dd8452")
    ax2.set_ylabel("PE utilization [%]", color="#dd8452")
    ax2.set_ylim(0, 105)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_layer_energy(layers: list[dict], path: str | pathlib.Path, title: str = ""
                      ) -> pathlib.Path:
    """Stacked energy per layer by category (``categories_pj`` of each row of
    ``qaccel.flow.network_cost``) and the network's breakdown as a single bar."""
    names = [r["name"] for r in layers]
    totals = {c: sum(r["categories_pj"][c] for r in layers) for c in CATEGORIES}
    fig, (ax, axt) = plt.subplots(1, 2, figsize=(max(7.0, 0.9 * len(names) + 5), 4.5),
                                  gridspec_kw={"width_ratios": [max(len(names), 2), 1]})
    scale, unit = _unit([r["total_pj"] for r in layers])
    bottom = [0.0] * len(layers)
    for c in CATEGORIES:
        vals = [r["categories_pj"][c] / scale for r in layers]
        ax.bar(range(len(names)), vals, bottom=bottom, color=CATEGORY_COLORS[c],
               edgecolor="black", linewidth=0.4, label=CATEGORY_LABELS[c])
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0,
                  ha="right" if len(names) > 6 else "center", fontsize=8)
    ax.set_ylabel(f"energy per inference [{unit}]")
    ax.set_title("per layer", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    tscale, tunit = _unit([sum(totals.values())])
    b = 0.0
    for c in CATEGORIES:
        v = totals[c] / tscale
        axt.bar([0], [v], bottom=b, color=CATEGORY_COLORS[c], edgecolor="black",
                linewidth=0.4)
        if v > 0.04 * sum(totals.values()) / tscale:
            axt.annotate(f"{100 * totals[c] / sum(totals.values()):.0f}%", (0, b + v / 2),
                         ha="center", va="center", fontsize=7)
        b += v
    axt.set_xticks([0], ["network"])
    axt.set_ylabel(f"[{tunit}]")
    axt.set_title(f"total {sum(totals.values()) / tscale:.3g} {tunit}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
