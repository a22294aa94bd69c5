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
"""

from __future__ import annotations

import time

import torch
from torch import nn

from qaccel.benches import BenchOptions

ADA_ITERS = 300
RESNET_ADA_ITERS = 10
RESNET_EPOCHS = 10


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
    finally:
        torch.set_num_threads(prev)
    wall = time.perf_counter() - wall0
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
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())
