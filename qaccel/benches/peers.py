"""Side by side with the reference libraries: AIMET (``aimet-torch`` 2.42) and Brevitas 0.13.

Identical inputs for every library: the shipped FP32 model (``quant.digits.get_model``), the
same 256 calibration images (4 batches of 64, subset 0) and the held-out test split; for
QAT the same seeded train / validation loaders (``quant.qat.train_val_loaders`` over the
training split). Each library is used as its documentation shows a new user:

- **qaccel**: ``quant.quantize`` with ``QuantConfig(per_channel=False)`` and the default
  weight range (``mse``, eq. 16) or the output-aware ``output_mse``; AdaRound
  ``rounding="adaround"``; QAT ``quant.prepare_qat`` (LSQ, static BN folding) +
  ``quant.train_qat`` (keeps the best validation epoch).
- **AIMET**: ``fold_all_batch_norms``, ``QuantizationSimModel`` with its default scheme
  (``QuantScheme.min_max`` in 2.42; symmetric weights, asymmetric activations, bias not
  quantized) and ``compute_encodings`` on the calibration batches; AdaRound
  ``Adaround.apply_adaround`` (same scheme, all calibration batches) and
  ``set_and_freeze_param_encodings``. Note: AIMET 2.42's default config file (alias
  ``"default"`` = ``default_config_per_channel.json``) quantizes Conv / Gemm weights **per
  channel**; the per-channel rows use it, the per-tensor rows pass AIMET's
  ``default_config.json`` (identical but per-tensor).
- **Brevitas**: ``preprocess_for_quantize`` (BN merged, no equalization) and
  ``brevitas_examples``' ``quantize_model`` (fx backend, ``stats`` (abs-max) weights,
  asymmetric activations with the 99.999 percentile), ``calibration_mode`` over the
  calibration batches; QAT: the same Adam + cosine loop as ``train_qat`` (no best-epoch
  restore).

Accuracy is top-1 on the test split; logit SQNR is ``10 log10(sum y^2 / sum (y_q - y)^2)``
against the FP32 logits on the test split. CPU s is this process's CPU time (one torch
thread; equals wall time on an idle core), wall s the elapsed time on the shared machine;
it/s is optimisation steps per CPU second (AdaRound: layers x iterations; QAT: batches).

Peers live in their own virtual environment so the project's stays clean; the bench runs
its measurements in that interpreter (``make bench PEER_PYTHON=/path/to/python`` or
``QACCEL_PEER_PYTHON``), which needs qaccel installed too::

    python3.11 -m venv /work/peervenv
    /work/peervenv/bin/pip install torch==2.13.0          # the CPU wheel, first
    /work/peervenv/bin/pip install -c constraints.txt -e . "aimet-torch==2.42.*" \\
        "brevitas==0.13.*" "torchvision==0.28.0"

torchvision: aimet-torch imports it. The CPU build (``0.28.0+cpu``) is only on
download.pytorch.org; where only PyPI is reachable PyPI's ``0.28.0`` (a CUDA 13 build whose
C ops cannot load with the CPU torch) is installed, and its import fails with
``operator torchvision::nms does not exist``. The bench then defines the schemas of the
missing ops before importing it (:func:`import_torchvision`), so torchvision imports
without its detection ops (nms, roi_align), which neither library uses here; the table says
when this happened. With the CPU wheel nothing is patched.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from qaccel.benches import BenchOptions

PEERS = {"aimet": "AIMET", "brevitas": "Brevitas"}
PEER_MODULES = {"aimet": "aimet_torch", "brevitas": "brevitas"}
PEER_PYTHON_ENV = "QACCEL_PEER_PYTHON"
MODELS = ("digits_cnn", "digits_mobilenet")
#: (w_bits, a_bits, per_channel) of the nearest, AdaRound and QAT rows
NEAREST_BITS = ((8, 8, False), (4, 8, False), (4, 8, True))
ADA_BITS = ((4, 8, False), (4, 8, True))
ADA_ITERS = 2000
QAT_BITS = (4, 4, False)
QAT_EPOCHS = 5
QAT_LR = 1e-3
#: a peer's measurement in its interpreter may take this long before it is abandoned
PEER_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Result:
    """One measured cell: a library's method on a model at a setting."""

    model: str
    setting: str
    method: str
    library: str
    accuracy: float
    sqnr_db: float
    cpu_s: float
    wall_s: float
    iterations: int = 0

    @property
    def its(self) -> float | None:
        return self.iterations / self.cpu_s if self.iterations and self.cpu_s > 0 else None


def skip_message(peer: str, python: str, error: str) -> str:
    """The line the table shows for a peer that could not be measured."""
    if peer not in PEERS:
        raise ValueError(f"peer: unknown {peer!r}; choose from {', '.join(PEERS)}")
    return (f"- {PEERS[peer]} skipped: `{PEER_MODULES[peer]}` is not importable with "
            f"`{python}` ({error.strip() or 'no message'}). Install it in a separate venv "
            f"(below) and run `make bench PEER_PYTHON=<that venv>/bin/python`.")


def setting(wb: int, ab: int, per_channel: bool) -> str:
    """The setting label of a row, e.g. ``W4A8 per-tensor``."""
    return f"W{wb}A{ab} per-{'channel' if per_channel else 'tensor'}"


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def results_table(results: list[Result], fp32: dict[str, float]) -> list[str]:
    """Markdown rows, grouped by model, setting and method (in the order given)."""
    head = ["Model", "Setting", "Method", "Library", "Accuracy %", "vs FP32", "Logit SQNR dB",
            "CPU s", "Wall s", "it/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        delta = r.accuracy - fp32[r.model] if r.model in fp32 else None
        lines.append("| " + " | ".join([
            r.model, r.setting, r.method, r.library, f"{r.accuracy:.2f}", _fmt(delta, "+.2f"),
            f"{r.sqnr_db:.2f}", f"{r.cpu_s:.2f}", f"{r.wall_s:.2f}", _fmt(r.its, ".0f")])
            + " |")
    return lines


def comparison(results: list[Result]) -> list[str]:
    """Per (model, setting, method): qaccel's best row against each peer's, in accuracy
    points, logit dB and CPU-time ratio; empty when no peer row exists."""
    groups: dict[tuple, list[Result]] = {}
    for r in results:
        groups.setdefault((r.model, r.setting, r.method), []).append(r)
    rows = []
    for key, rs in groups.items():
        ours = [r for r in rs if r.library.startswith("qaccel")]
        if not ours:
            continue
        best = max(ours, key=lambda r: (r.accuracy, r.sqnr_db))
        for peer in (r for r in rs if not r.library.startswith("qaccel")):
            speed = peer.cpu_s / best.cpu_s if best.cpu_s > 0 else None
            rows.append("| " + " | ".join([*key, best.library, peer.library,
                                           f"{best.accuracy - peer.accuracy:+.2f}",
                                           f"{best.sqnr_db - peer.sqnr_db:+.2f}",
                                           _fmt(speed, ".1f")]) + " |")
    if not rows:
        return []
    head = ["Model", "Setting", "Method", "qaccel (best)", "Peer", "Δ accuracy (points)",
            "Δ logit SQNR dB", "peer CPU s / ours"]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *rows]


def render(report: dict) -> str:
    """The markdown section of a measurement ``report`` (as :func:`measure` returns)."""
    results = [Result(**r) for r in report["results"]]
    lines = ["# Side by side with AIMET and Brevitas", "",
             __doc__.split("\n\n", 1)[1].strip(), "",
             f"Budgets: AdaRound {ADA_ITERS} iterations per layer; QAT {QAT_EPOCHS} epochs, "
             f"Adam lr {QAT_LR:g} cosine-annealed, batches of 64. Interpreter: "
             f"`{report['python']}`; versions: "
             + ", ".join(f"{k} {v}" for k, v in sorted(report["versions"].items())) + ".", ""]
    fp32 = report["fp32"]
    lines += ["FP32: " + ", ".join(f"{m} {a:.2f} %" for m, a in fp32.items()) + ".", ""]
    lines += [f"- {n}" for n in report.get("notes", [])]
    lines += list(report.get("skipped", {}).values())
    if report.get("notes") or report.get("skipped"):
        lines.append("")
    lines += results_table(results, fp32)
    cmp_lines = comparison(results)
    if cmp_lines:
        lines += ["", "## qaccel against each peer (positive: qaccel ahead / peer slower)", "",
                  *cmp_lines]
    return "\n".join(lines) + "\n"


# ---- measurement (runs in the interpreter that has the peers) ----------------------------

def import_torchvision() -> str | None:
    """Import torchvision; if its C ops cannot load with this torch (a CUDA build next to
    the CPU torch: ``operator torchvision::<op> does not exist``), define the schemas of the
    ops its meta registrations need and import again. Returns a note when it patched."""
    import torch

    defined = []
    for _ in range(8):
        try:
            import torchvision
        except RuntimeError as exc:
            msg = str(exc)
            if "operator torchvision::" not in msg or "does not exist" not in msg:
                raise
            op = msg.split("operator torchvision::", 1)[1].split()[0]
            if op in defined:
                raise
            if not defined:
                import_torchvision.lib = torch.library.Library("torchvision", "DEF")
            import_torchvision.lib.define(
                f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            defined.append(op)
            continue
        if defined:
            return (f"torchvision {torchvision.__version__} cannot load its C ops with torch "
                    f"{torch.__version__}; schemas of {', '.join(defined)} were defined so it "
                    "imports (its detection ops are unusable; not used here)")
        return None
    raise RuntimeError("torchvision: too many missing ops")


def _sqnr(fp, q) -> float:
    import torch

    return float(10 * torch.log10(fp.pow(2).sum() / (q - fp).pow(2).sum()))


class _Timer:
    def __enter__(self):
        self.c0, self.w0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu = time.process_time() - self.c0
        self.wall = time.perf_counter() - self.w0


def _result(model_name, setting, method, library, qmodel, test, fp, t, iterations=0):
    import torch

    from qaccel.quant import digits

    with torch.no_grad():
        out = qmodel(test[0])
    return Result(model_name, setting, method, library, digits.evaluate(qmodel, test),
                  _sqnr(fp, out), t.cpu, t.wall, iterations)


def _n_layers(model) -> int:
    from torch import nn

    return sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules())


def _qat_loaders():
    from qaccel.quant import digits
    from qaccel.quant.qat import train_val_loaders

    x_tr, y_tr, _, _ = digits.load_split()
    return train_val_loaders(x_tr, y_tr)


def _ours(name, model, calib, test, fp) -> list[Result]:
    from qaccel import quant

    out = []
    for wb, ab, pc in NEAREST_BITS:
        for wr in ("mse", "output_mse"):
            cfg = quant.QuantConfig(w_bits=wb, a_bits=ab, per_channel=pc, weight_range=wr,
                                    progress=False)
            with _Timer() as t:
                q = quant.quantize(model, calib, cfg)
            out.append(_result(name, setting(wb, ab, pc), "nearest", f"qaccel ({wr})", q,
                               test, fp, t))
    for wb, ab, pc in ADA_BITS:
        for wr in ("mse", "output_mse"):
            cfg = quant.QuantConfig(w_bits=wb, a_bits=ab, per_channel=pc, weight_range=wr,
                                    rounding="adaround", iterations=ADA_ITERS, progress=False)
            with _Timer() as t:
                q = quant.quantize(model, calib, cfg)
            out.append(_result(name, setting(wb, ab, pc), "AdaRound", f"qaccel ({wr})", q,
                               test, fp, t, ADA_ITERS * _n_layers(model)))
    wb, ab, pc = QAT_BITS
    for wr in ("mse", "output_mse"):
        train, val = _qat_loaders()
        cfg = quant.QatConfig(quant=quant.QuantConfig(w_bits=wb, a_bits=ab, per_channel=pc,
                                                      weight_range=wr, progress=False))
        with _Timer() as t:
            q = quant.prepare_qat(model, calib, cfg)
            quant.train_qat(q, train, val, epochs=QAT_EPOCHS, lr=QAT_LR, patience=QAT_EPOCHS,
                            progress=False)
        out.append(_result(name, setting(wb, ab, pc), f"QAT ({QAT_EPOCHS} epochs)",
                           f"qaccel ({wr})", q, test, fp, t, QAT_EPOCHS * len(train)))
    return out


def _aimet(name, model, calib, test, fp, work: pathlib.Path) -> list[Result]:
    import torch
    from aimet_torch.adaround import Adaround, AdaroundParameters
    from aimet_torch.batch_norm_fold import fold_all_batch_norms
    from aimet_torch.common.defs import QuantScheme
    from aimet_torch.quantsim import QuantizationSimModel

    dummy = torch.zeros(1, 1, 8, 8)
    batches = list(calib)

    def forward(m):
        with torch.no_grad():
            for x in batches:
                m(x)

    def folded():
        m = copy.deepcopy(model)
        fold_all_batch_norms(m, tuple(dummy.shape))
        return m

    out = []
    for wb, ab, pc in NEAREST_BITS:
        with _Timer() as t:
            sim = QuantizationSimModel(folded(), dummy, default_param_bw=wb,
                                       default_output_bw=ab, config_file=_aimet_config(pc))
            sim.compute_encodings(forward)
        out.append(_result(name, setting(wb, ab, pc), "nearest", "AIMET (min_max)",
                           sim.model, test, fp, t))
    for wb, ab, pc in ADA_BITS:
        path = work / name / setting(wb, ab, pc).replace(" ", "_")
        path.mkdir(parents=True, exist_ok=True)
        with _Timer() as t:
            params = AdaroundParameters(data_loader=calib, num_batches=len(batches),
                                        default_num_iterations=ADA_ITERS)
            ada = Adaround.apply_adaround(folded(), dummy, params, path=str(path),
                                          filename_prefix="adaround", default_param_bw=wb,
                                          default_quant_scheme=QuantScheme.min_max,
                                          default_config_file=_aimet_config(pc))
            sim = QuantizationSimModel(ada, dummy, default_param_bw=wb, default_output_bw=ab,
                                       config_file=_aimet_config(pc))
            sim.set_and_freeze_param_encodings(str(path / "adaround.encodings"))
            sim.compute_encodings(forward)
        out.append(_result(name, setting(wb, ab, pc), "AdaRound", "AIMET (min_max)",
                           sim.model, test, fp, t, ADA_ITERS * _n_layers(model)))
    return out


def _aimet_config(per_channel: bool) -> str:
    """AIMET's own config file: its ``"default"`` alias (per-channel Conv / Gemm weights in
    2.42) or ``default_config.json`` (the same without per-channel weights)."""
    if per_channel:
        return "default"
    import aimet_torch.common.quantsim_config as cfg_pkg

    path = pathlib.Path(cfg_pkg.__file__).parent / "default_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"AIMET's per-tensor config {path} is missing")
    return str(path)


def _brevitas_model(model, calib, wb, ab, per_channel):
    import torch
    from brevitas.graph.calibrate import calibration_mode
    from brevitas.graph.quantize import preprocess_for_quantize
    from brevitas_examples.imagenet_classification.ptq.ptq_common import quantize_model

    f = preprocess_for_quantize(copy.deepcopy(model), equalize_iters=0, merge_bn=True)
    q = quantize_model(f, backend="fx", weight_bit_width=wb, act_bit_width=ab,
                       bias_bit_width=32,
                       weight_quant_granularity="per_channel" if per_channel else "per_tensor",
                       act_quant_percentile=99.999, act_quant_type="asym",
                       scale_factor_type="float_scale", quant_format="int")
    q.eval()
    batches = list(calib)
    with torch.no_grad():
        q(batches[0])
        with calibration_mode(q):
            for x in batches:
                q(x)
    return q


def _brevitas(name, model, calib, test, fp) -> list[Result]:
    import torch
    import torch.nn.functional as F

    out = []
    for wb, ab, pc in NEAREST_BITS:
        with _Timer() as t:
            q = _brevitas_model(model, calib, wb, ab, pc)
        out.append(_result(name, setting(wb, ab, pc), "nearest", "Brevitas (stats)", q, test,
                           fp, t))
    wb, ab, pc = QAT_BITS
    train, _ = _qat_loaders()
    steps = 0
    with _Timer() as t:
        q = _brevitas_model(model, calib, wb, ab, pc)
        opt = torch.optim.Adam(q.parameters(), lr=QAT_LR)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=QAT_EPOCHS)
        for _ in range(QAT_EPOCHS):
            q.train()
            for x, y in train:
                loss = F.cross_entropy(q(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
            sched.step()
        q.eval()
    out.append(_result(name, setting(wb, ab, pc), f"QAT ({QAT_EPOCHS} epochs)",
                       "Brevitas (stats)", q, test, fp, t, steps))
    return out


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("torch", "torchvision", "aimet-torch", "brevitas"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def measure(models=MODELS, peers=tuple(PEERS), work: pathlib.Path | None = None) -> dict:
    """Measure qaccel and every importable peer in this interpreter (one torch thread);
    the JSON-able report :func:`render` turns into markdown."""
    import importlib
    import logging

    import torch

    from qaccel import workspace
    from qaccel.quant import digits

    torch.set_num_threads(1)
    work = work if work is not None else workspace.current().dir("bench", "peers")
    report: dict = {"python": sys.executable, "versions": _versions(), "fp32": {},
                    "results": [], "skipped": {}, "notes": []}
    available = []
    for peer in peers:
        try:
            if peer == "aimet":
                note = import_torchvision()
                if note:
                    report["notes"].append(note)
            importlib.import_module(PEER_MODULES[peer])
            available.append(peer)
        except Exception as exc:        # noqa: BLE001 -- any import failure is a skip
            report["skipped"][peer] = skip_message(peer, sys.executable,
                                                   f"{type(exc).__name__}: {exc}")
    logging.getLogger().setLevel(logging.WARNING)
    for name in models:
        model, calib, test = digits.get_model(name)
        with torch.no_grad():
            fp = model(test[0])
        report["fp32"][name] = digits.evaluate(model, test)
        rows = _ours(name, model, calib, test, fp)
        if "aimet" in available:
            rows += _aimet(name, model, calib, test, fp, work)
        if "brevitas" in available:
            rows += _brevitas(name, model, calib, test, fp)
        order = {"nearest": 0, "AdaRound": 1}        # stable: qaccel, AIMET, Brevitas
        rows.sort(key=lambda r: (order.get(r.method, 2), -int(r.setting[1:].split("A")[0]),
                                 -int(r.setting.split("A")[1].split()[0]),
                                 r.setting.endswith("channel")))
        report["results"] += [asdict(r) for r in rows]
    return report


def _peer_python() -> str | None:
    value = os.environ.get(PEER_PYTHON_ENV, "").strip()
    return value or None


def run(opts: BenchOptions | None = None) -> str:
    """Measure in ``$QACCEL_PEER_PYTHON`` (a subprocess) when it is set, else in this
    interpreter; a peer that cannot be imported (or an interpreter that fails) is skipped
    with its reason."""
    from qaccel import workspace

    python = _peer_python()
    if python is None or python == sys.executable:
        return render(measure())
    work = workspace.current().dir("bench", "peers")
    out = work / "report.json"
    out.unlink(missing_ok=True)
    try:
        proc = subprocess.run([python, "-m", "qaccel.benches.peers", "--json", str(out)],
                              capture_output=True, text=True, timeout=PEER_TIMEOUT_S)
        failure = None if proc.returncode == 0 and out.is_file() else \
            (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    if failure is None:
        return render(json.loads(out.read_text()))
    report = measure(peers=())
    report["skipped"] = {p: skip_message(p, python, failure) for p in PEERS}
    return render(report)


def main(argv: list[str] | None = None) -> int:
    from qaccel.commands.options import output_file

    ap = argparse.ArgumentParser(prog="python -m qaccel.benches.peers",
                                 description="Measure qaccel and the importable peers; "
                                             "write the JSON report.")
    ap.add_argument("--json", required=True, type=output_file, metavar="FILE")
    args = ap.parse_args(argv)
    report = measure()
    args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
