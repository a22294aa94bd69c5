"""Per-layer quantization sensitivity (whitepaper sec. 3.7, Figure 9).

Starting from a model quantized at the target bit-widths, every quantizer is switched on
*alone* (everything else stays FP32), and the effect is measured:

- ``tensor_sqnr``: SQNR of the quantized tensor itself, ``10 log10(|x|^2 / |x^ - x|^2)``
  (weights: the weight tensor; activations: the tensor entering the quantizer);
- ``output_sqnr``: SQNR of the network output against the FP32 output;
- ``metric``: an optional user metric (e.g. accuracy) of the model in that state.

Plus the global "weights vs activations" rows of Figure 9: all weight quantizers only,
all activation quantizers only, and everything. :meth:`SensitivityReport.to_markdown`
gives a table and :meth:`SensitivityReport.plot` a bar chart (PNG).

The activation rows cover every activation quantizer of the quantized model: inputs and
outputs of Linear / conv layers, the outputs feeding activation x activation matmuls,
residual adds, LayerNorm / GELU / SiLU outputs and the (fixed-grid) softmax outputs.
:func:`a16_exceptions` turns the report into the whitepaper's "a few activations in 16
bit" (sec. 3.6-3.7, Table 6 †): the ``k`` activation quantizers that hurt the output most
get 16 bits (``QuantConfig.quantizer_bits``).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .calib_data import as_batches, run_batch
from .config import QuantConfig
from .modules import QuantMatmul, quant_layers
from .pipeline import quantize
from .progress import bar
from .quantizers import Quantizer

__all__ = ["SensitivityRow", "SensitivityReport", "sensitivity_report", "sqnr_db",
           "a16_exceptions"]


def sqnr_db(signal: float, noise: float) -> float:
    """``10 log10(signal / noise)``; ``inf`` for zero noise."""
    if noise <= 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


@dataclass
class SensitivityRow:
    name: str
    kind: str                  # "weight" | "activation" | "all weights" | ...
    bits: int
    tensor_sqnr: float
    output_sqnr: float
    metric: float | None = None


@dataclass
class SensitivityReport:
    config: QuantConfig
    rows: list[SensitivityRow] = field(default_factory=list)
    fp_metric: float | None = None
    metric_name: str = "metric"

    def layer_rows(self) -> list[SensitivityRow]:
        return [r for r in self.rows if r.kind in ("weight", "activation")]

    def worst(self, n: int = 3, kind: str | None = None) -> list[SensitivityRow]:
        """The ``n`` quantizers (of ``kind``, ``"weight"`` / ``"activation"``, if given)
        that hurt the output most (lowest output SQNR)."""
        rows = [r for r in self.layer_rows() if kind is None or r.kind == kind]
        return sorted(rows, key=lambda r: r.output_sqnr)[:n]

    def to_markdown(self) -> str:
        has_metric = any(r.metric is not None for r in self.rows)
        head = "| quantizer | kind | bits | tensor SQNR (dB) | output SQNR (dB) |"
        sep = "|---|---|---:|---:|---:|"
        if has_metric:
            head += f" {self.metric_name} |"
            sep += "---:|"
        lines = [head, sep]
        if has_metric and self.fp_metric is not None:
            lines.append(f"| FP32 | reference | 32 | inf | inf | {self.fp_metric:.4g} |")
        for r in self.rows:
            t = "" if math.isnan(r.tensor_sqnr) else f"{r.tensor_sqnr:.2f}"
            line = f"| {r.name} | {r.kind} | {r.bits} | {t} | {r.output_sqnr:.2f} |"
            if has_metric:
                line += f" {r.metric:.4g} |" if r.metric is not None else " |"
            lines.append(line)
        return "\n".join(lines) + "\n"

    def plot(self, path) -> pathlib.Path:
        """Bar chart of the per-quantizer output SQNR (weights vs activations)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.layer_rows()
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(rows) + 2), 4))
        colors = ["tab:blue" if r.kind == "weight" else "tab:orange" for r in rows]
        vals = [min(r.output_sqnr, 100.0) for r in rows]
        ax.bar(range(len(rows)), vals, color=colors)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r.name for r in rows], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("network output SQNR (dB)")
        c = self.config
        ax.set_title(f"Per-quantizer sensitivity (W{c.w_bits}A{c.a_bits}; blue = weights, "
                     "orange = activations)")
        for r in self.rows:
            if r.kind in ("all weights", "all activations"):
                ax.axhline(min(r.output_sqnr, 100.0), ls="--", lw=1,
                           color="tab:blue" if r.kind == "all weights" else "tab:orange")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _outputs(model: nn.Module, batches: list) -> list[torch.Tensor]:
    outs = []
    with torch.no_grad():
        for b in batches:
            outs.extend(_tensors(run_batch(model, b)))
    return outs


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out.detach().float()]
    if isinstance(out, tuple | list):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    return []


def _out_sqnr(ref: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    sig = sum(float(r.pow(2).sum()) for r in ref)
    noise = sum(float((g - r).pow(2).sum()) for r, g in zip(ref, got))
    return sqnr_db(sig, noise)


class _TensorNoise:
    """Forward hook accumulating ``|x|^2`` and ``|q(x) - x|^2`` at a quantizer."""

    def __init__(self):
        self.sig = 0.0
        self.noise = 0.0

    def __call__(self, _m, inp, out):
        x = inp[0]
        if isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor):
            self.sig += float(x.detach().float().pow(2).sum())
            self.noise += float((out.detach().float() - x.detach().float()).pow(2).sum())


def _act_quantizers(qm: nn.Module) -> list[tuple[str, Quantizer]]:
    """Every activation quantizer, the fixed softmax output grids included."""
    return [(n, m) for n, m in qm.named_modules()
            if isinstance(m, Quantizer) and m.role in ("act", "fixed")]


def sensitivity_report(model: nn.Module, calib_data, config: QuantConfig | None = None, *,
                       eval_data=None, metric: Callable[[nn.Module], float] | None = None,
                       metric_name: str = "metric", qmodel: nn.Module | None = None,
                       progress=None, weights: bool = True) -> SensitivityReport:
    """Figure 9's per-layer analysis for ``model`` at ``config``.

    ``eval_data`` (default: the calibration batches) is used for the SQNRs; ``metric``
    (optional) is called on the model in every state. Pass ``qmodel`` to analyse an
    already quantized model. ``progress`` (``"auto"``, ``True``, ``False``; default the
    config's) shows a bar over the quantizers. ``weights=False`` leaves out the rows of
    single weight quantizers.
    """
    cfg = config if config is not None else QuantConfig()
    progress = cfg.progress if progress is None else progress
    calib = as_batches(calib_data)
    evals = as_batches(eval_data, "eval_data") if eval_data is not None else calib
    qm = qmodel if qmodel is not None else quantize(model, calib, cfg)
    if qmodel is not None and hasattr(qmodel, "qaccel_quant"):
        cfg = qmodel.qaccel_quant.config
    layers = quant_layers(qm)
    weight_qs = [(f"{n}.weight", ql.weight_quantizer, ql) for n, ql in layers]
    act_qs = [(n, q, None) for n, q in _act_quantizers(qm)]
    every: list[Quantizer] = [q for _, q, _ in weight_qs + act_qs]
    saved = {id(q): q.enabled for q in every}

    def set_only(active):
        for q in every:
            q.enabled = any(q is a for a in active)

    report = SensitivityReport(cfg, metric_name=metric_name)
    try:
        set_only([])
        order: dict[int, int] = {}

        def seen(m, _i, _o):
            order.setdefault(id(m), len(order))     # returns None: output unchanged

        hooks = [q.register_forward_hook(seen) for _, q, _ in act_qs]
        try:
            ref = _outputs(qm, evals)
        finally:
            for h in hooks:
                h.remove()
        act_qs.sort(key=lambda t: order.get(id(t[1]), len(order)))   # execution order
        report.fp_metric = metric(qm) if metric else None
        for name, q, owner in bar((weight_qs if weights else []) + act_qs, progress,
                                  desc="sensitivity", unit="quantizer"):
            set_only([q])
            if owner is not None:
                w = owner.module.weight.detach()
                with torch.no_grad():
                    tsq = sqnr_db(float(w.pow(2).sum()),
                                  float((owner.quantized_weight() - w).pow(2).sum()))
                got = _outputs(qm, evals)
            else:
                hook = _TensorNoise()
                h = q.register_forward_hook(hook)
                try:
                    got = _outputs(qm, evals)
                finally:
                    h.remove()
                tsq = sqnr_db(hook.sig, hook.noise)
            report.rows.append(SensitivityRow(
                name, "weight" if owner is not None else "activation", q.bits, tsq,
                _out_sqnr(ref, got), metric(qm) if metric else None))
        for label, active in (("all weights", [q for _, q, _ in weight_qs]),
                              ("all activations", [q for _, q, _ in act_qs]),
                              ("all", every)):
            set_only(active)
            got = _outputs(qm, evals)
            report.rows.append(SensitivityRow(label, label, 0, math.nan, _out_sqnr(ref, got),
                                              metric(qm) if metric else None))
    finally:
        for q in every:
            q.enabled = saved[id(q)]
    return report



def _matmul_partners(qm: nn.Module) -> list[tuple[Quantizer, Quantizer]]:
    """The quantizer pairs whose grids the two operands of each activation x activation
    matmul are on."""
    from torch import fx

    from .scales import source_quantizer

    if not isinstance(qm, fx.GraphModule):
        return []
    pairs = []
    for node in qm.graph.nodes:
        if node.op == "call_module" and isinstance(qm.get_submodule(node.target), QuantMatmul):
            qa, qb = (source_quantizer(qm, a) for a in node.args[:2])
            if qa is not None and qb is not None:
                pairs.append((qa, qb))
    return pairs


def _bits(q: Quantizer, wide: set[int]) -> int:
    return 16 if id(q) in wide else q.bits


def a16_exceptions(model: nn.Module, calib_data, config: QuantConfig | None = None, k: int = 1,
                   *, report: SensitivityReport | None = None, qmodel: nn.Module | None = None,
                   progress=None) -> tuple[QuantConfig, SensitivityReport]:
    """The whitepaper's 16-bit activation exceptions, guided by sensitivity (sec. 3.6-3.7,
    Table 6 †): ``config`` with the ``k`` activation quantizers of lowest network-output
    SQNR (on ``calib_data``, each switched on alone) added to ``quantizer_bits`` at 16 bits.

    A quantizer already at 16 bits is skipped, and so is one whose 16 bits would make a
    matmul's two operands overflow ``config.acc_bits`` (the next one is taken instead).
    ``report`` (a :func:`sensitivity_report` at ``config``) or ``qmodel`` (``model``
    quantized at ``config``) avoid recomputing them.

    Returns
    -------
    (QuantConfig, SensitivityReport)
        The config to quantize with, and the report the choice came from.

    Raises
    ------
    ValueError
        ``k`` not an integer >= 0 (naming ``k``).
    """
    from qaccel.sim.validate import check_int

    cfg = config if config is not None else QuantConfig()
    k = check_int("a16_exceptions", "k", k, 0, None)
    calib = as_batches(calib_data)
    qm = qmodel if qmodel is not None else quantize(model, calib, cfg)
    if report is None:
        report = sensitivity_report(model, calib, cfg, qmodel=qm, progress=progress,
                                    weights=False)
    by_name = dict(_act_quantizers(qm))
    partners = _matmul_partners(qm)
    wide: set[int] = {id(q) for q in by_name.values() if q.bits >= 16}
    chosen: list[str] = []
    for row in report.worst(len(report.rows), kind="activation"):
        if len(chosen) == k:
            break
        q = by_name.get(row.name)
        if q is None or id(q) in wide:
            continue
        if any(16 + _bits(b if q is a else a, wide) + 1 - a.signed - b.signed > cfg.acc_bits
               for a, b in partners if q is a or q is b):
            continue                       # the matmul's product would overflow
        chosen.append(row.name)
        wide.add(id(q))
    taken = {o.name for o in cfg.quantizer_bits}
    extra = tuple((n, 16) for n in chosen if n not in taken)
    rest = tuple(o if o.name not in chosen else dataclasses.replace(o, bits=16)
                 for o in cfg.quantizer_bits)
    return cfg.replace(quantizer_bits=rest + extra), report
