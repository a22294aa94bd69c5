"""PTQ timing: AdaRound iterations/s and Bit-split time per layer.

Layers: every Conv2d / Linear of the two digits reference models (``quant.digits``; inputs
from 256 calibration images through the FP32 model) and one ResNet-shaped layer, a 3x3
conv 256 -> 256 (weights 256 x 2304) on random post-ReLU inputs of 14 x 14. One thread.
AdaRound: ``quant.adaround.adaround_layer`` at 4 bits, mini-batches of 32 images (8 for
the ResNet layer), a fixed number of iterations timed end to end (iterations/s). Bit-split:
``quant.bitsplit.bitsplit_module`` at 4 bits, 100 epochs for the digits layers and
``RESNET_EPOCHS`` for the ResNet layer, at most 10^4 patch rows; im2col + Gram matrix
(``X^T X``, ``X^T Y``) and the refinement are timed separately, ms / epoch excludes the
initialisation. Also the whole ``quant.quantize`` pipeline per model (W8A8 nearest).

Per-method timing (:func:`method_timing`): every method on both digits models at W4A4 with
per-channel weights, through the public API (``quant.quantize`` with ``rounding=...``,
``quant.prepare_qat`` + ``quant.train_qat``), one thread, the same 256 calibration images.
Budgets (``QuantConfig.iterations`` per unit): AdaRound ``METHOD_ITERS`` per layer, BRECQ /
QDrop ``METHOD_ITERS`` per block, NWQ ``NWQ_ITERS`` for the whole network, Bit-split
at most 100 refinement epochs per layer (its cap), QAT ``QAT_EPOCHS`` epochs over the
training split (batches of 64). Per network: CPU seconds of the whole call, optimisation
steps per CPU second, test accuracy. Per unit (layer / block / network / epoch): the CPU
time of each item of the method's progress loop (``quant.progress.bar``; the item's
input collection included).
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch import nn

from qaccel.benches import BenchOptions

ADA_ITERS = 300
RESNET_ADA_ITERS = 10
RESNET_EPOCHS = 10
#: per-method timing (W4A4, per-channel weights): iterations per unit, NWQ's for the network
METHOD_BITS = (4, 4)
METHOD_ITERS = 1000
NWQ_ITERS = 2000
QAT_EPOCHS = 5
METHODS = ("nearest", "adaround", "bitsplit", "brecq", "qdrop", "nwq", "qat")
METHOD_LABELS = {"nearest": "nearest", "adaround": "AdaRound", "bitsplit": "Bit-split",
                 "brecq": "BRECQ", "qdrop": "QDrop", "nwq": "NWQ", "qat": "QAT (LSQ)"}


def _layers(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _time(fn):
    """CPU time of this process (one thread, so = wall time on an idle core; robust to
    other jobs on a shared machine) and the result."""
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def _shape(m: nn.Module) -> str:
    w = m.weight
    kind = "dw-conv" if isinstance(m, nn.Conv2d) and m.groups > 1 else type(m).__name__
    return f"{kind} {w.shape[0]}x{w[0].numel()}"


def _bench_layer(label, layer, inp, *, ada_iters, ada_batch, epochs, rows):
    from qaccel.quant import adaround as ar
    from qaccel.quant import bitsplit as bs

    with torch.no_grad():
        target = layer(inp)
    w = layer.weight.detach()
    scale = w.abs().max() / 7
    t_ada, _ = _time(lambda: ar.adaround_layer(layer, scale, inp, target, w_bits=4,
                                               iterations=ada_iters, batch_size=ada_batch,
                                               progress=False))
    t_patch, (X, Y) = _time(lambda: bs.layer_patches(layer, inp, max_rows=10000))
    t_gram, (A, B) = _time(lambda: _gram(X, Y))
    w2d = w.reshape(w.shape[0], -1)
    t_init, _ = _time(lambda: bs.bitsplit_gram(A, B, w2d, 4, epochs=0))
    t_bs, _ = _time(lambda: bs.bitsplit_gram(A, B, w2d, 4, epochs=epochs))
    per_epoch = max(t_bs - t_init, 0.0) / max(epochs, 1)
    rows.append([label, _shape(layer), f"{ada_iters / t_ada:.0f}",
                 f"{t_ada / ada_iters * 1e3:.1f}", str(X.shape[-2]), f"{t_patch + t_gram:.2f}",
                 str(epochs), f"{t_bs:.2f}", f"{per_epoch * 1e3:.1f}"])


def _gram(X, Y):
    X, Y = X.to(torch.float64), Y.to(torch.float64)
    if X.dim() == 2:
        return X.T @ X, X.T @ Y
    return X.transpose(1, 2) @ X, torch.einsum("cpk,pc->kc", X, Y)


@contextlib.contextmanager
def unit_clock(*modules):
    """Time each item of the progress loops of ``modules`` (their ``bar``, e.g.
    ``quant.rounding`` and ``quant.qat``): yields a list that receives ``(desc, label,
    cpu_seconds)`` per item, the CPU time from handing the item out to asking for the
    next one (the loop body)."""
    spans: list[tuple[str, str, float]] = []
    saved = [(m, m.bar) for m in modules]

    def timed(items, *_args, desc: str = "", **_kw):
        def gen():
            for item in items:
                t0 = time.process_time()
                try:
                    yield item
                finally:
                    spans.append((desc, _label(item), time.process_time() - t0))
        return gen()

    for m, _ in saved:
        m.bar = timed
    try:
        yield spans
    finally:
        for m, b in saved:
            m.bar = b


def _label(item) -> str:
    if isinstance(item, tuple) and item and isinstance(item[0], str):
        return item[0]                          # (layer name, QuantLayer)
    layers = getattr(item, "layers", None)      # reconstruction Unit
    if layers is not None:
        return ",".join(str(n.target) for n in layers)
    return f"epoch {item}" if isinstance(item, int) else str(item)


def bitsplit_epochs() -> int:
    """Bit-split's refinement epochs per layer, the cap on ``QuantConfig.iterations``
    (``quant.bitsplit.bitsplit_layer``'s ``epochs``)."""
    import inspect

    from qaccel.quant.bitsplit import bitsplit_layer

    return inspect.signature(bitsplit_layer).parameters["epochs"].default


def method_steps(method: str, n_units: int, *, iters: int = METHOD_ITERS,
                 nwq_iters: int = NWQ_ITERS, qat_batches: int = 0) -> int:
    """Optimisation steps a method's budget amounts to (``n_units``: layers / blocks /
    epochs its loop went through)."""
    if method == "nearest":
        return 0
    if method == "nwq":
        return nwq_iters
    if method == "qat":
        return n_units * qat_batches
    if method == "bitsplit":
        return n_units * min(iters, bitsplit_epochs())
    if method in ("adaround", "brecq", "qdrop"):
        return n_units * iters
    raise ValueError(f"method: unknown {method!r}; choose from {', '.join(METHODS)}")


def timing_tables(per_net: list[tuple], per_unit: list[tuple]) -> list[str]:
    """Markdown of :func:`method_timing`'s rows: ``per_net`` ``(model, method, units,
    steps, cpu_s, accuracy)``, ``per_unit`` ``(model, method, unit, cpu_s, steps)``."""
    head = ["Model", "Method", "Units", "Budget (steps)", "CPU s", "it/s", "Accuracy %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, method, units, steps, cpu, acc in per_net:
        its = f"{steps / cpu:.0f}" if steps and cpu > 0 else "-"
        lines.append(f"| {model} | {METHOD_LABELS[method]} | {units} | {steps} | {cpu:.2f} | "
                     f"{its} | {acc:.2f} |")
    head = ["Model", "Method", "Unit", "CPU s", "it/s"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, method, unit, cpu, steps in per_unit:
        its = f"{steps / cpu:.0f}" if steps and cpu > 0 else "-"
        lines.append(f"| {model} | {METHOD_LABELS[method]} | {unit} | {cpu:.2f} | {its} |")
    return lines


def method_timing(models=("digits_cnn", "digits_mobilenet")) -> tuple[list, list]:
    """Every method of :data:`METHODS` on each model at :data:`METHOD_BITS`; the rows of
    :func:`timing_tables`."""
    from qaccel import quant
    from qaccel.quant import digits
    from qaccel.quant import qat as qat_mod
    from qaccel.quant import rounding as rounding_mod

    wb, ab = METHOD_BITS
    x_tr, y_tr, _, _ = digits.load_split()
    per_net, per_unit = [], []
    for name in models:
        model, calib, test = digits.get_model(name)
        for method in METHODS:
            cfg = quant.QuantConfig(w_bits=wb, a_bits=ab, per_channel=True, progress=False,
                                    rounding="nearest" if method == "qat" else method,
                                    iterations=NWQ_ITERS if method == "nwq" else METHOD_ITERS)
            with unit_clock(rounding_mod, qat_mod) as spans:
                t0 = time.process_time()
                if method == "qat":
                    train, val = qat_mod.train_val_loaders(x_tr, y_tr)
                    q = quant.prepare_qat(model, calib, quant.QatConfig(quant=cfg))
                    quant.train_qat(q, train, val, epochs=QAT_EPOCHS, lr=1e-3,
                                    patience=QAT_EPOCHS, progress=False)
                else:
                    q = quant.quantize(model, calib, cfg)
                cpu = time.process_time() - t0
            batches = len(train) if method == "qat" else 0
            steps = method_steps(method, len(spans), iters=METHOD_ITERS, nwq_iters=NWQ_ITERS,
                                 qat_batches=batches)
            per_net.append((name, method, len(spans) or "-", steps, cpu,
                            digits.evaluate(q, test)))
            per_unit += [(name, method, label, t, steps // len(spans))
                         for _, label, t in spans]
    return per_net, per_unit


def run(opts: BenchOptions | None = None) -> str:
    from qaccel import quant
    from qaccel.quant import adaround as ar
    from qaccel.quant import digits

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    rows: list[list[str]] = []
    pipe: list[list[str]] = []
    wall0 = time.perf_counter()
    try:
        x = digits.calib_images(256)
        warm = nn.Linear(4, 4)  # first-call overheads (autograd, Adam) out of the table
        ar.adaround_layer(warm, 0.1, torch.randn(8, 4), torch.randn(8, 4), w_bits=4,
                          iterations=3, progress=False)
        for name in ("digits_cnn", "digits_mobilenet"):       # the CNNs' conv layers
            model, calib, _ = digits.get_model(name)
            t_q, _ = _time(lambda m=model, c=calib: quant.quantize(m, c, quant.QuantConfig()))
            pipe.append([name, "W8A8 nearest (MSE ranges)", f"{t_q:.2f}"])
            for lname, layer in _layers(model):
                inp, _ = ar.collect_io(model, layer, [x])
                _bench_layer(f"{name}.{lname}", layer, inp, ada_iters=ADA_ITERS,
                             ada_batch=32, epochs=100, rows=rows)
        g = torch.Generator().manual_seed(0)
        conv = nn.Conv2d(256, 256, 3, padding=1)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.02)
        inp = torch.relu(torch.randn(64, 256, 14, 14, generator=g))
        _bench_layer("ResNet-shaped conv3x3 (random)", conv, inp, ada_iters=RESNET_ADA_ITERS,
                     ada_batch=8, epochs=RESNET_EPOCHS, rows=rows)
        wall = time.perf_counter() - wall0
        t_wall = time.perf_counter()
        per_net, per_unit = method_timing()
        timing_wall = time.perf_counter() - t_wall
    finally:
        torch.set_num_threads(prev)
    head = ["Layer", "Weights (C_out x K)", "AdaRound it/s", "ms / it", "patch rows",
            "im2col + Gram s", "Bit-split epochs", "Bit-split s (init + epochs)",
            "ms / epoch"]
    lines = ["# PTQ per-layer timing (AdaRound, Bit-split)", "",
             __doc__.split("\n\n", 1)[1].strip(), "",
             f"AdaRound: {ADA_ITERS} iterations per digits layer, {RESNET_ADA_ITERS} for the "
             "ResNet layer. Times are process CPU seconds (single thread), which equal wall "
             "time on an idle core; this whole bench took "
             f"{wall:.0f} s of wall time on the (shared) machine.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "| Model | quant.quantize config | CPU seconds |", "|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in pipe]
    lines += ["", f"## Every method, per network and per unit (W{METHOD_BITS[0]}A"
              f"{METHOD_BITS[1]}, per-channel weights)", "",
              f"Budgets: AdaRound {METHOD_ITERS} iterations per layer, Bit-split "
              f"{min(METHOD_ITERS, bitsplit_epochs())} refinement epochs per layer (its cap), "
              f"BRECQ / QDrop {METHOD_ITERS} per block, NWQ {NWQ_ITERS} for the whole network, QAT "
              f"{QAT_EPOCHS} epochs (Adam lr 1e-3, cosine). One thread; this part took "
              f"{timing_wall:.0f} s of wall time.", ""]
    lines += timing_tables(per_net, per_unit)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())
