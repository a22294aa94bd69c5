"""Quantization-aware training (whitepaper sec. 4): prepare -> train -> export.

- :func:`prepare_qat` runs the PTQ pipeline (:func:`quant.quantize`: BN folding, CLE,
  range setting, optionally AdaRound) and turns the result into a trainable model:
  every quantizer becomes an :class:`LsqQuantizer` (learnable scale, LSQ, Esser et al.
  2020; learnable zero-point for asymmetric quantizers, eq. 39-40), integer weights
  (AdaRound) become float weights again (the FP weights projected into the integers'
  rounding bins, :func:`_weights_in_bins`), and BN is modelled as :class:`QatConfig`
  ``bn_folding`` says (sec. 4.2):

  ``"static"``
      static folding (eq. 11-12): BN is folded once into the weights and bias, which are
      then trained; the BN disappears (whitepaper Table 7: on par or better).
  ``"running"``
      folding with running statistics (Jacob et al. 2018 / Krishnamoorthi 2018, "double
      forward"): each folded layer keeps BN parameters ``gamma``, ``beta`` and running
      statistics; its weights are ``W gamma / sqrt(var + eps)``, its bias
      ``beta + (b - mean) gamma / sqrt(var + eps)`` (a ``torch.nn.utils.parametrize``
      re-parametrization of the layer), and in training mode a first, float forward pass
      of the layer measures the batch statistics that update the running ones (momentum
      ``bn_momentum``). The batch-statistics correction factor of Jacob et al. is not
      applied: the weights are always folded with the running statistics, as inference
      does. The statistics start from the folded BN's (``mean = beta``, ``var = gamma^2``
      of the folded layer's output), so the prepared model equals the PTQ one.
  ``"per_channel"``
      BN kept as a separate per-channel scale, absorbed into the per-channel weight scale
      (sec. 4.2 eq. 41, Table 7's "keep original BN (per-channel)"; needs
      ``QuantConfig.per_channel``): BN parameters and running statistics as ``"running"``,
      but the BN factor ``f = gamma / sqrt(var + eps)`` does not move the weight grid: the
      weight quantizer's scale is ``s~ = s f`` with ``s`` the learned LSQ step, so the
      quantized weights are ``s~ round(W f / s~) = f q(W; s)`` -- BN applied after the
      quantized weights, as eq. 41 writes it. :func:`finalize` merges ``f`` into the
      per-channel scale (``s~`` becomes the step) and the BN into the bias for good; the
      exported integers are the trained ``round(W / s)``.

- :func:`train_qat`: Adam with a cosine learning-rate schedule, a tqdm bar, early stopping
  on the held-out split's loss (``patience`` epochs), the best epoch's weights restored,
  then :func:`finalize` (see below).
- :func:`quant.export` then gives the integer network, exact against ``sim.executor`` as
  for PTQ.

The forward value of an :class:`LsqQuantizer` is bit-identical to the plain
:class:`quant.quantizers.Quantizer` with the same ``(scale, round(z))``; only the backward
pass differs (STE, eq. 37-38 and 40; LSQ's gradient scale ``g = 1 / sqrt(N Q_p)``, ``N``
the elements one scale applies to -- a weight channel or tensor, one sample's features --
and ``Q_p`` the grid's positive limit). During training the bias grid ``s_w s_x`` follows
the learned input scale at every forward pass. :func:`finalize` (called by
:func:`train_qat`; call it yourself after your own loop) re-snaps the requantization
scales to ``M / 2^S`` (``QuantConfig.snap_scales``) and re-links the bias grids, so the
fake-quant model computes the integer network's arithmetic.

Threads: the loops run with the caller's ``torch.get_num_threads()``; on a busy 2-core
machine set ``torch.set_num_threads(1)`` (small convolutions run many times slower with
2 contended threads); ``qaccel qat`` does.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from qaccel.sim.validate import check_bool, check_choice, check_number, fail
from torch import fx, nn
from torch.nn.utils import parametrize

from .config import QuantConfig
from .lsq import LsqQuantizer, lsq_grad_scale
from .modules import QuantLayer, quant_layers
from .pipeline import quantize
from .progress import bar, check_progress
from .quantizers import Quantizer
from .scales import refresh_scales, source_quantizer

__all__ = ["BN_FOLDINGS", "QatConfig", "LsqQuantizer", "prepare_qat", "train_qat",
           "finalize", "finalize_qat", "QatHistory", "lsq_grad_scale", "train_val_loaders",
           "evaluate"]

BN_FOLDINGS = ("static", "running", "per_channel")


@dataclass(frozen=True)
class QatConfig:
    """Options of :func:`prepare_qat`.

    Parameters
    ----------
    quant : QuantConfig
        The PTQ initialisation (bits, per-channel, per-layer bits, ranges, CLE,
        ``rounding="adaround"`` for an AdaRound start) and the export settings.
        ``rounding`` must be ``"nearest"`` or ``"adaround"``.
    bn_folding : {"static", "running", "per_channel"}
        BN modelling during training (whitepaper sec. 4.2; see the module docstring).
        ``"per_channel"`` needs ``quant.per_channel=True``.
    learn_scales : bool
        LSQ step sizes for every weight and activation quantizer (else fixed PTQ scales).
    learn_offsets : bool
        Learnable zero-points of the asymmetric (activation) quantizers (eq. 39-40).
    bn_momentum : float
        Momentum of the running statistics (``"running"``), in (0, 1].
    """

    quant: QuantConfig = field(default_factory=QuantConfig)
    bn_folding: str = "static"
    learn_scales: bool = True
    learn_offsets: bool = True
    bn_momentum: float = 0.1

    def __post_init__(self):
        if not isinstance(self.quant, QuantConfig):
            raise fail("QatConfig", "quant", "a QuantConfig", self.quant)
        if self.quant.rounding not in ("nearest", "adaround"):
            raise fail("QatConfig", "quant.rounding", "'nearest' or 'adaround'",
                       self.quant.rounding, "the PTQ start of QAT")
        check_choice("QatConfig", "bn_folding", self.bn_folding, BN_FOLDINGS)
        if self.bn_folding == "per_channel" and not self.quant.per_channel:
            raise fail("QatConfig", "bn_folding", "'static' or 'running' with per-tensor "
                       "weights", self.bn_folding, "the BN scale is absorbed into "
                       "per-channel weight scales: use per-channel weights")
        for name in ("learn_scales", "learn_offsets"):
            object.__setattr__(self, name, check_bool("QatConfig", name, getattr(self, name)))
        m = check_number("QatConfig", "bn_momentum", self.bn_momentum, positive=True)
        if m > 1:
            raise fail("QatConfig", "bn_momentum", "in (0, 1]", self.bn_momentum)
        object.__setattr__(self, "bn_momentum", m)

    def replace(self, **changes) -> QatConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- BN folding with running statistics ---------------------------------------------------

class _RunningBN(nn.Module):
    """BN parameters and running statistics of one folded layer's output."""

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, eps: float, momentum: float):
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.register_buffer("running_mean", mean.detach().clone().float())
        self.register_buffer("running_var", var.detach().clone().float())
        self.gamma = nn.Parameter(torch.sqrt(self.running_var + eps))
        self.beta = nn.Parameter(self.running_mean.clone())

    def factor(self) -> torch.Tensor:
        return self.gamma / torch.sqrt(self.running_var + self.eps)


class _FoldWeight(nn.Module):
    def __init__(self, bn: _RunningBN):
        super().__init__()
        self.bn = bn

    def forward(self, w):
        return w * self.bn.factor().reshape((-1,) + (1,) * (w.dim() - 1))


class _FoldBias(nn.Module):
    def __init__(self, bn: _RunningBN):
        super().__init__()
        self.bn = bn

    def forward(self, b):
        return self.bn.beta + (b - self.bn.running_mean) * self.bn.factor()


@torch.no_grad()
def _update_running_stats(ql: QuantLayer, args) -> None:
    """Forward pre-hook of a running-folded layer: in training mode, the float forward pass
    of the unfolded layer on this batch updates the running statistics."""
    if not ql.training:
        return
    mod = ql.module
    bn = mod.parametrizations.weight[0].bn
    x = args[0]
    if ql.input_quantizer is not None:
        x = ql.input_quantizer(x)
    y = ql.linear_op(x, mod.parametrizations.weight.original,
                     mod.parametrizations.bias.original)
    dims = [d for d in range(y.dim()) if d != 1]
    mean, var = y.mean(dims), y.var(dims, unbiased=True)
    bn.running_mean.mul_(1 - bn.momentum).add_(bn.momentum * mean)
    bn.running_var.mul_(1 - bn.momentum).add_(bn.momentum * var)


class _BnScaledLsq(LsqQuantizer):
    """The per-channel weight quantizer of ``bn_folding="per_channel"``: scale
    ``s~ = step * f`` with the BN factor ``f`` of the layer's :class:`_RunningBN` (learned:
    ``f`` gets its gradient through the scale, ``step`` LSQ's scaled one)."""

    def __init__(self, q: Quantizer, bn: _RunningBN, **kw):
        super().__init__(q, **kw)
        object.__setattr__(self, "_bn", bn)     # registered with the parametrization
        with torch.no_grad():
            self.step.div_(bn.factor())

    def _factor(self) -> torch.Tensor:
        return self._bn.factor()

    @property
    def scale(self) -> torch.Tensor:
        return (self.step * self._factor()).detach()

    @scale.setter
    def scale(self, value) -> None:
        with torch.no_grad():
            self.step.copy_(torch.as_tensor(value, dtype=torch.float32) / self._factor())

    def set_qparams(self, scale, zero_point) -> None:
        self.scale = scale
        with torch.no_grad():
            self.offset.copy_(torch.as_tensor(zero_point, dtype=torch.float32))

    def _learned_scale(self, g: float) -> torch.Tensor:
        return super()._learned_scale(g) * self._factor()


def _fold_running(qmodel: nn.Module, momentum: float) -> list[str]:
    info = qmodel.qaccel_quant
    done = []
    for name, ql in quant_layers(qmodel):
        st = info.stats.get(name)
        if st is None:
            continue
        mod = ql.module
        if mod.bias is None:
            mod.bias = nn.Parameter(torch.zeros(mod.weight.shape[0]))
        bn = _RunningBN(st.beta, st.gamma.pow(2), 1e-5, momentum)
        parametrize.register_parametrization(mod, "weight", _FoldWeight(bn))
        parametrize.register_parametrization(mod, "bias", _FoldBias(bn))
        ql.qaccel_bn_hook = ql.register_forward_pre_hook(_update_running_stats)
        done.append(name)
    return done


# ---- prepare / finalize ----------------------------------------------------------------

def _link_bias_grids(gm: nn.Module, _args) -> None:
    """Forward pre-hook: every layer's bias grid follows its input quantizer's scale."""
    for layer, src in gm.qaccel_qat_links:
        ql, q = gm.get_submodule(layer), gm.get_submodule(src)
        ql.in_scale = q.scale.detach().clone()


@torch.no_grad()
def _weights_in_bins(ql: QuantLayer) -> None:
    """Float weights for QAT from a layer with fixed integers ``k`` (AdaRound): the FP
    weight projected into ``k``'s rounding bin, ``clamp(W, (k - 0.49) s, (k + 0.49) s)``
    (open-ended at the grid's ends), so round-to-nearest gives ``k`` again and every weight
    stays as close to its FP value as the integers allow. (Setting the weights to
    ``s k``, the bin centres, gives the same start but leaves QAT half a bin from any
    rounding change: measured on digits_cnn W2A4, the training loss then fell 0.92 ->
    0.24 in 8 epochs against 0.43 -> 0.016 from the same nearest start unsnapped.)"""
    k = ql.w_int
    s = ql._scale_view(ql.weight_scale())
    n, p = ql.weight_quantizer.grid
    lo = torch.where(k <= n, torch.tensor(-math.inf), (k - 0.49) * s)
    hi = torch.where(k >= p, torch.tensor(math.inf), (k + 0.49) * s)
    w = torch.maximum(torch.minimum(ql.module.weight, hi), lo)
    ql.clear_integer_weight()
    ql.module.weight.copy_(w)
    off = ql.weight_int() != k.to(torch.int64)          # float32 edge cases: bin centre
    if bool(off.any()):
        ql.module.weight.copy_(torch.where(off, s * k, w))


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def prepare_qat(model: nn.Module, calib_data, config: QatConfig | None = None) -> nn.Module:
    """A trainable fake-quantized copy of ``model``, initialised by PTQ.

    Parameters
    ----------
    model : nn.Module
        FP32 model (not modified); must trace with torch.fx (export needs the graph).
    calib_data : iterable of batches
        Calibration batches for the PTQ initialisation (as :func:`quant.quantize`).
    config : QatConfig, optional
        The options (default ``QatConfig()``).

    Returns
    -------
    torch.nn.Module
        The model in training mode, with ``qaccel_quant`` (as from :func:`quant.quantize`)
        and ``qaccel_qat`` (the :class:`QatConfig`). Train it with :func:`train_qat` or
        your own loop (then call :func:`finalize`), export with :func:`quant.export`.
    """
    cfg = config if config is not None else QatConfig()
    if not isinstance(cfg, QatConfig):
        raise TypeError(f"config must be a QatConfig, not {type(cfg).__name__}")
    if calib_data is None:
        raise ValueError("calib_data: prepare_qat needs calibration batches (the PTQ start "
                         "sets the ranges from them), got None")
    qmodel = quantize(model, calib_data, cfg.quant)
    info = qmodel.qaccel_quant
    if info.mode != "graph":
        raise ValueError("prepare_qat needs a torch.fx-traceable model (QAT exports the "
                         "integer network): " + "; ".join(info.fallbacks[:1]))
    for _, ql in quant_layers(qmodel):
        if ql.w_int is not None:              # AdaRound start: float weights in its bins
            _weights_in_bins(ql)
    folded = []
    if cfg.bn_folding in ("running", "per_channel"):
        folded = _fold_running(qmodel, cfg.bn_momentum)
        info.note("QAT: BN folded with running statistics%s in %s",
                  " into the per-channel weight scales" if cfg.bn_folding == "per_channel"
                  else "", ", ".join(folded) or "no layer")
    tied = {f"{n}.weight_quantizer": qmodel.get_submodule(n).module.parametrizations.weight[0]
            .bn for n in folded} if cfg.bn_folding == "per_channel" else {}
    for name, q in [(n, m) for n, m in qmodel.named_modules()
                    if type(m) is Quantizer and m.scale is not None]:
        kw = dict(learn_scale=cfg.learn_scales, learn_offset=cfg.learn_offsets)
        if name in tied and not q.per_channel:
            raise ValueError(f"QatConfig.bn_folding='per_channel': layer {name!r} has a "
                             "per-tensor weight quantizer")
        _set_submodule(qmodel, name, _BnScaledLsq(q, tied[name], **kw) if name in tied
                       else LsqQuantizer(q, **kw))
    links = []
    for node in qmodel.graph.nodes:
        ql = qmodel.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(ql, QuantLayer) and ql.quantize_bias:
            src = ql.input_quantizer if ql.input_quantizer is not None \
                else source_quantizer(qmodel, node.args[0])
            src_name = next(n for n, m in qmodel.named_modules() if m is src)
            links.append((str(node.target), src_name))
    qmodel.qaccel_qat_links = links
    qmodel.register_forward_pre_hook(_link_bias_grids)
    qmodel.qaccel_qat = cfg
    return qmodel.train()


def _check_qat_model(qmodel) -> QatConfig:
    cfg = getattr(qmodel, "qaccel_qat", None)
    if not isinstance(qmodel, fx.GraphModule) or cfg is None:
        raise ValueError("qmodel must be a model returned by quant.prepare_qat")
    return cfg


@torch.no_grad()
def finalize(qmodel: nn.Module) -> nn.Module:
    """Make a trained QAT model exportable exactly (in place; returns it in eval mode):
    scales kept positive (and a fused ReLU6's output range within 6), requantization
    scales re-snapped to ``M / 2^S`` and bias grids re-linked
    (:func:`quant.refresh_scales`). Training can continue afterwards."""
    _check_qat_model(qmodel)
    _absorb_bn_scales(qmodel)
    for m in qmodel.modules():
        if isinstance(m, LsqQuantizer):
            m.step.clamp_(min=1e-8)
    for _, ql in quant_layers(qmodel):          # a fused ReLU6 must cover the output grid
        q = ql.output_quantizer
        if ql.act == "relu6" and isinstance(q, LsqQuantizer):
            top = float(q.grid[1] - q.zero_point)
            if float(q.scale) * top > 6.0:
                q.step.fill_(6.0 / top)
    qmodel.eval()
    refresh_scales(qmodel)
    if _keep_bias_in_accumulator(qmodel):      # a step was raised: re-snap M / 2^S
        refresh_scales(qmodel)
    return qmodel


finalize_qat = finalize     # the name exported by ``qaccel.quant``


@torch.no_grad()
def _keep_bias_in_accumulator(qmodel: nn.Module) -> bool:
    """Raise a learned weight step ``s_w[c]`` just enough that the bias integer
    ``b[c] / (s_w[c] s_x)`` stays within a quarter of the accumulator range (the zero-point
    term and the sums need the rest). Under Adam a channel's step can shrink towards the
    1e-8 floor (every weight clamped, the channel pruned); its bias then no longer fits
    and export fails. The raised step is still tiny, so the channel's weights stay clamped
    and its output is unchanged up to ``|W| <= p s_w``; layers whose biases fit (every
    CNN of the tables) are untouched. Returns whether a step changed."""
    acc_bits = qmodel.qaccel_quant.config.acc_bits
    limit = 2.0 ** (acc_bits - 2)
    changed = False
    for _, ql in quant_layers(qmodel):
        wq, b = ql.weight_quantizer, ql.module.bias
        if b is None or ql.in_scale is None or not isinstance(wq, LsqQuantizer):
            continue
        floor = b.detach().abs().to(wq.step.dtype) / (float(ql.in_scale) * limit)
        if wq.step.dim() == 0:
            floor = floor.max()
        floor = floor.reshape(wq.step.shape)
        if bool((wq.step < floor).any()):
            wq.step.copy_(torch.maximum(wq.step, floor))
            changed = True
    return changed


@torch.no_grad()
def _absorb_bn_scales(qmodel: nn.Module) -> None:
    """``bn_folding="per_channel"``: merge each kept BN into its layer for good -- weight
    ``W f`` and bias ``beta + (b - mean) f`` (the parametrizations' values), weight scale
    ``|s~| = |step f|`` (a negative ``f`` flips the integers' sign, value unchanged) --
    and stop the statistics updates; the layer is statically folded from then on."""
    for _, ql in quant_layers(qmodel):
        wq = ql.weight_quantizer
        if not isinstance(wq, _BnScaledLsq):
            continue
        plain = LsqQuantizer(wq, learn_scale=wq.step.requires_grad, learn_offset=False)
        plain.step.abs_()
        ql.weight_quantizer = plain
        for attr in ("weight", "bias"):
            parametrize.remove_parametrizations(ql.module, attr, leave_parametrized=True)
        ql.qaccel_bn_hook.remove()
        del ql.qaccel_bn_hook


# ---- training --------------------------------------------------------------------------

@dataclass
class QatHistory:
    """What :func:`train_qat` did: the held-out loss of the start (epoch 0), per-epoch
    mean training loss, held-out loss and accuracy (%), the epoch whose weights were kept,
    and whether it stopped early."""

    initial_val_loss: float = float("nan")
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"epochs_run": self.epochs_run}


def _labelled(batch, name: str):
    """``(x, y)`` of a labelled batch, or ``ValueError`` naming ``name``."""
    if not (isinstance(batch, tuple | list) and len(batch) == 2
            and all(isinstance(t, torch.Tensor) for t in batch)):
        kind = f"a tensor of shape {tuple(batch.shape)}" if isinstance(batch, torch.Tensor) \
            else type(batch).__name__
        raise ValueError(f"{name}: QAT needs labelled batches (inputs, labels); got {kind}")
    x, y = batch
    if y.dim() != 1 or y.dtype not in (torch.int64, torch.int32) or len(y) != len(x):
        raise ValueError(f"{name}: labels must be a 1-D integer tensor with one label per "
                         f"input; got dtype {y.dtype}, shape {tuple(y.shape)} for "
                         f"{len(x)} inputs")
    return x, y


@torch.no_grad()
def evaluate(model: nn.Module, loader, name: str = "val_loader") -> tuple[float, float]:
    """``(mean cross-entropy, top-1 accuracy %)`` of ``model`` over ``(x, y)`` batches."""
    was = model.training
    model.eval()
    loss = correct = count = 0.0
    for batch in loader:
        x, y = _labelled(batch, name)
        out = model(x)
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        correct += float((out.argmax(1) == y).sum())
        count += len(y)
    model.train(was)
    if count == 0:
        raise ValueError("val_loader yields no sample")
    return loss / count, 100.0 * correct / count


def _check_positive_int(name: str, value, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"train_qat: {name} must be an integer >= {lo}, not {value!r}")
    return value


def train_qat(qmodel: nn.Module, train_loader, val_loader, epochs: int = 10,
              lr: float = 1e-4, patience: int = 3, progress="auto", *,
              weight_decay: float = 0.0) -> QatHistory:
    """Train a :func:`prepare_qat` model (in place) with cross-entropy.

    Parameters
    ----------
    qmodel : nn.Module
        From :func:`prepare_qat`.
    train_loader, val_loader : iterables of ``(x, y)`` batches
        Labelled training data and the held-out split watched for early stopping.
    epochs : int
        Maximum passes over ``train_loader``.
    lr : float
        Adam's peak learning rate, cosine-annealed to 0 over ``epochs``.
    patience : int
        Stop after this many epochs without a lower held-out loss; the best epoch's
        weights (lowest held-out loss, the PTQ start counting as epoch 0) are restored.
    progress : {"auto", True, False}
        tqdm bar over the epochs.
    weight_decay : float
        Adam's L2 weight decay on the weights (not on scales, offsets, biases).

    Returns
    -------
    QatHistory
        The model is left finalized (:func:`finalize`) and in eval mode.
    """
    _check_qat_model(qmodel)
    for name, loader in (("train_loader", train_loader), ("val_loader", val_loader)):
        if loader is None:
            raise ValueError(f"{name}: train_qat needs labelled (inputs, labels) batches"
                             + (" of a held-out split (early stopping watches its loss)"
                                if name == "val_loader" else "") + ", got None")
    epochs = _check_positive_int("epochs", epochs)
    patience = _check_positive_int("patience", patience)
    lr = check_number("train_qat", "lr", lr, positive=True)
    weight_decay = check_number("train_qat", "weight_decay", weight_decay)
    check_progress(progress, "train_qat: progress")
    decay = [p for n, p in qmodel.named_parameters() if p.requires_grad and p.dim() > 1]
    other = [p for n, p in qmodel.named_parameters() if p.requires_grad and p.dim() <= 1]
    opt = torch.optim.Adam([{"params": decay, "weight_decay": weight_decay},
                            {"params": other, "weight_decay": 0.0}], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    hist = QatHistory()
    best_loss, _ = evaluate(qmodel, val_loader)
    hist.initial_val_loss = best_loss
    best_state = {k: v.detach().clone() for k, v in qmodel.state_dict().items()}
    hist.best_epoch, since = 0, 0
    pbar = bar(range(1, epochs + 1), progress, desc="QAT", unit="epoch")
    for epoch in pbar:
        qmodel.train()
        total = n = 0.0
        for batch in train_loader:
            x, y = _labelled(batch, "train_loader")
            loss = F.cross_entropy(qmodel(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
            n += len(y)
        if n == 0:
            raise ValueError("train_loader yields no sample")
        sched.step()
        vl, va = evaluate(qmodel, val_loader)
        hist.train_loss.append(total / n)
        hist.val_loss.append(vl)
        hist.val_accuracy.append(va)
        if hasattr(pbar, "set_postfix"):
            pbar.set_postfix(loss=f"{total / n:.4f}", val_loss=f"{vl:.4f}", val_acc=f"{va:.1f}")
        if vl < best_loss:
            best_loss, hist.best_epoch, since = vl, epoch, 0
            best_state = {k: v.detach().clone() for k, v in qmodel.state_dict().items()}
        else:
            since += 1
            if since >= patience:
                hist.stopped_early = epoch < epochs
                break
    qmodel.load_state_dict(best_state)
    finalize(qmodel)
    return hist


def train_val_loaders(x: torch.Tensor, y: torch.Tensor, *, val_fraction: float = 0.2,
                      batch_size: int = 64, seed: int = 0):
    """``(train_loader, val_loader)``: a seeded random split of ``(x, y)`` into a shuffled
    training loader and a held-out validation loader."""
    from torch.utils.data import DataLoader, TensorDataset

    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), not {val_fraction!r}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    n_val = max(1, int(round(len(x) * val_fraction)))
    va, tr = perm[:n_val], perm[n_val:]
    train = DataLoader(TensorDataset(x[tr], y[tr]), batch_size=batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(seed + 1))
    val = DataLoader(TensorDataset(x[va], y[va]), batch_size=512)
    return train, val
