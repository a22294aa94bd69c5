"""The reconstruction engine shared by AdaRound, BRECQ, QDrop and NWQ.

One rounding parameterisation, one loss, one optimisation loop, one calibration-activation
cache; the methods differ only in the *unit* they reconstruct and in three switches:

=========  ======================  ==========================  ==========================
method     unit                    loss                        activations during recon.
=========  ======================  ==========================  ==========================
AdaRound   one layer (+ fused      ``||f_a(W x) - f_a(W~ x^)||``  off (weights only); inputs
           act), ``quant.adaround``  + ``lam f_reg(V)``             from the quantized model
BRECQ      a block of              Fisher-diagonal weighted    quantized, LSQ step sizes
           ``block_layers`` layers  MSE of the block output      learned jointly
           (Li et al. 2021)         + ``lam f_reg(V)``
QDrop      a block (Wei et al.     MSE of the block output     quantized, LSQ steps; each
           2022)                    + ``lam f_reg(V)``           activation element keeps its
                                                               FP value with prob. ``p``
NWQ        the whole network       ``L_quant + sum_i AR_i``    quantized, LSQ steps;
           (Wang et al. 2022,       (MSE of the logits + MSE of  annealing mixup
           the slides)              every intermediate layer    ``where(rand < p(t), x, x_q)``
                                    output); annealing softmax
                                    rounding instead of f_reg
=========  ======================  ==========================  ==========================

Rounding (AdaRound, Nagel et al. 2020, eq. 33): ``W~ = s clamp(floor(W / s) + h(V), n, p)``
with the rectified sigmoid ``h(V) = clip(sigmoid(V)(zeta - gamma) + gamma, 0, 1)`` and the
regulariser ``f_reg = sum 1 - |2 h(V) - 1|^beta`` (eq. 34, beta annealed 20 -> 2 after a
20 % warm start). NWQ's annealing softmax ``h^t(V) = softmax(V / tau^t)`` over the two
choices {floor, ceil} is ``sigmoid(V / tau^t)``; ``tau`` falls geometrically. At the end the
rounding is hard: ``floor(W / s) + [V >= 0]``.

Blocks: the quantized graph is cut where a single tensor is live (every later node reads
only it), and consecutive cut segments are grouped into blocks of ``block_layers``
quantized layers (2 by default: a depthwise-separable pair, or two convolutions); a
residual block is never cut inside.

Defaults and their sources (our choices where the sources give no number):

- AdaRound / BRECQ / QDrop: ``lam = 0.01``, ``beta`` 20 -> 2, warm start 0.2, batch 32
  (BRECQ and QDrop papers / reference code). Their Adam learning rates (1e-3 on ``V``,
  4e-5 on the step sizes) are for 20k iterations per block; for the budgets used here
  (hundreds to a few thousand) BRECQ / QDrop / NWQ use 1e-2 and 1e-3 (measured on
  digits_cnn W2A4, 500 iterations, 2 seeds: BRECQ 87.4 / 90.0 % -> 97.4 / 97.2 %).
  AdaRound keeps ``adaround_layer``'s defaults. Fisher weighting: ``(|dL/dz| + 1)^2``
  with ``L`` the KL divergence of the partially quantized network's output from the FP one (BRECQ
  reference code). QDrop's drop probability ``p = 0.5`` (QDrop paper), also applied to
  the block input (a mix of its FP and quantized values), as the QDrop reference code
  does (its ``input_prob`` and the drop in every activation quantizer of the block,
  the block output's included). That code also cosine-anneals the step sizes' learning
  rate to 0; measured on digits_cnn W2A4 (200 iterations, 3 seeds) it changes nothing
  (QDrop 95.6-96.9 %, BRECQ 97.2-98.1 %), so it is not done here. At 200 iterations per
  block the drop costs accuracy (QDrop 95.7-96.7 %, the same without the drop 96.8-98.0 %,
  BRECQ 97.2-98.0 %: the Fisher weighting changes nothing there); at 1000 the gap closes
  (QDrop 98.3-98.9 % / 14.3-14.8 dB, BRECQ 98.5-98.9 % / 15.5-16.0 dB).
- NWQ (the slides give the forms, not the numbers -- ours): ``tau`` from 1 to 0.01
  geometrically over the iterations, mixup ``p(t) = 0.5 (1 - t / T)`` (linear to 0),
  ``AR_i`` weight 1 (each a mean squared error, like ``L_quant``), the same learning rates.
- ``iterations`` is ``QuantConfig.iterations`` per unit (per layer, block or network).

Threads: the loops use ``torch.get_num_threads()``; on a shared 2-core machine use 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from qaccel.sim.validate import check_bool, check_choice, check_int, check_number, fail
from torch import fx, nn

from .calib_data import run_batch
from .graph import ValueRecorder, module_of
from .lsq import LsqQuantizer
from .modules import QuantLayer, quant_state
from .quantizers import Quantizer

__all__ = ["ZETA", "GAMMA", "rectified_sigmoid", "init_v", "beta_schedule", "round_regularizer",
           "SoftRounding", "optimize_rounding", "recon_loss", "ReconMethod", "METHODS",
           "ActivationCache", "find_units", "reconstruct"]

ZETA = 1.1
GAMMA = -0.1


# ---- rounding parameterisation -------------------------------------------------------------

def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def init_v(frac: torch.Tensor) -> torch.Tensor:
    """V with h(V) == frac for frac in [0, 1): inverse of the rectified sigmoid."""
    sig = (frac - GAMMA) / (ZETA - GAMMA)  # in (0.083, 0.917) for frac in [0, 1)
    return -torch.log(1.0 / sig - 1.0)


def beta_schedule(it: int, iterations: int, *, beta: tuple[float, float] = (20.0, 2.0),
                  warm_start: float = 0.2, schedule: str = "cosine") -> float:
    """Annealed beta of the rounding regulariser at iteration ``it`` (0-based).

    Before ``warm_start * iterations`` the regulariser is off and this returns the start
    value. Afterwards, with ``r = (it - warm) / (iterations - warm)`` in [0, 1]:
    cosine: ``end + (start - end) * (1 + cos(pi r)) / 2``; linear: ``start + (end - start) r``.
    """
    if schedule not in ("cosine", "linear"):
        raise ValueError(f"schedule: must be 'cosine' or 'linear', got {schedule!r}")
    start, end = float(beta[0]), float(beta[1])
    warm = warm_start * iterations
    if it < warm:
        return start
    r = (it - warm) / max(iterations - warm, 1e-12)
    r = min(max(r, 0.0), 1.0)
    if schedule == "cosine":
        return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * r))
    return start + (end - start) * r


def round_regularizer(v: torch.Tensor, beta: float) -> torch.Tensor:
    """f_reg(V) = sum(1 - |2 h(V) - 1|^beta) (eq. 34)."""
    return (1.0 - (2.0 * rectified_sigmoid(v) - 1.0).abs().pow(beta)).sum()


class SoftRounding(nn.Module):
    """Learnable rounding of ``weight`` on the grid ``scale`` (broadcastable), ``[n, p]``.

    ``kind="rectified"``: AdaRound's ``h(V)``; ``kind="softmax"``: NWQ's
    ``sigmoid(V / tau)`` (set :attr:`tau`). Doubles as the weight quantizer of a
    :class:`QuantLayer` during reconstruction (``forward`` ignores its argument and returns
    the soft weights; ``enabled`` and ``scale`` as :class:`Quantizer`).
    """

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, n: int, p: int, *,
                 kind: str = "rectified", layer_scale: torch.Tensor | None = None):
        super().__init__()
        if kind not in ("rectified", "softmax"):
            raise ValueError(f"kind must be 'rectified' or 'softmax', not {kind!r}")
        self.kind = kind
        self.n, self.p = int(n), int(p)
        self.enabled = True
        self.tau = 1.0
        self.register_buffer("s", scale.detach())
        self.register_buffer("w_floor", torch.floor(weight.detach() / self.s))
        self.scale = layer_scale            # the Quantizer-style scale (0-d or [C])
        frac = weight.detach() / self.s - self.w_floor
        if kind == "rectified":
            v = init_v(frac)
        else:
            v = torch.logit(frac.clamp(0.01, 0.99))
        self.v = nn.Parameter(v.clone())

    def h(self) -> torch.Tensor:
        if self.kind == "rectified":
            return rectified_sigmoid(self.v)
        return torch.sigmoid(self.v / self.tau)

    def soft_weight(self) -> torch.Tensor:
        return self.s * torch.clamp(self.w_floor + self.h(), self.n, self.p)

    def forward(self, _weight=None) -> torch.Tensor:
        return self.soft_weight()

    def regularizer(self, beta: float) -> torch.Tensor:
        return round_regularizer(self.v, beta)

    @torch.no_grad()
    def hard_int(self) -> torch.Tensor:
        return torch.clamp(self.w_floor + (self.v >= 0).to(self.w_floor.dtype), self.n, self.p)


def recon_loss(out: torch.Tensor, target: torch.Tensor,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """The one reconstruction loss: squared error summed over the feature / channel dim
    (dim 1), averaged over batch and positions; ``weight`` (same shape) multiplies the
    squared error elementwise (BRECQ's Fisher diagonal)."""
    err = (out - target).pow(2)
    if weight is not None:
        err = err * weight
    return err.sum(1).mean()


def optimize_rounding(loss_fn: Callable[[torch.Tensor, int], torch.Tensor],
                      roundings: list[SoftRounding], iterations: int, num: int, *,
                      batch_size: int = 32, seed: int = 0, lr: float = 1e-3,
                      lam: float = 0.01, beta: tuple[float, float] = (20.0, 2.0),
                      warm_start: float = 0.2, schedule: str = "cosine",
                      regularize: bool = True, extra_params: list | tuple = (),
                      extra_lr: float = 4e-5, desc: str = "reconstruction",
                      progress: bool = False) -> None:
    """The one optimisation loop: each iteration draws ``batch_size`` rows (seeded) of
    the ``num`` cached samples, ``loss_fn(idx, it)``, adds ``lam * f_reg`` (annealed beta,
    after the warm start) when ``regularize``, and steps Adam on the ``V`` s (``lr``) and on
    ``extra_params`` (step sizes, ``extra_lr``)."""
    opt = torch.optim.Adam([r.v for r in roundings], lr=lr)
    extra = [p for p in extra_params if p.requires_grad]
    opt_extra = torch.optim.Adam(extra, lr=extra_lr) if extra else None
    gen = torch.Generator().manual_seed(seed)
    bs = min(batch_size, num)
    warm = warm_start * iterations
    it_range = range(iterations)
    if progress:
        from tqdm.auto import tqdm

        it_range = tqdm(it_range, desc=desc, leave=False, mininterval=0.5)
    for it in it_range:
        idx = torch.randint(0, num, (bs,), generator=gen)
        loss = loss_fn(idx, it)
        if regularize and it >= warm:
            b = beta_schedule(it, iterations, beta=beta, warm_start=warm_start,
                              schedule=schedule)
            loss = loss + lam * sum(r.regularizer(b) for r in roundings)
        opt.zero_grad(set_to_none=True)
        if opt_extra is not None:
            opt_extra.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if opt_extra is not None:
            opt_extra.step()
            with torch.no_grad():
                for p in extra:
                    p.clamp_(min=1e-8)


# ---- methods, units, cache ---------------------------------------------------------------

@dataclass(frozen=True)
class ReconMethod:
    """The switches of one reconstruction method (see the module docstring)."""

    name: str
    unit: str                   # "block" | "network"
    fisher: bool = False        # BRECQ's Fisher-diagonal output weighting
    drop_p: float = 0.0         # QDrop: probability of keeping the FP activation
    mixup_p0: float = 0.0       # NWQ: annealing mixup start probability (linear to 0)
    softmax: bool = False       # NWQ: annealing softmax rounding instead of f_reg
    tau: tuple[float, float] = (1.0, 0.01)
    act_reg: bool = False       # NWQ: sum of AR_i over intermediate layer outputs
    block_layers: int = 2
    lam: float = 0.01
    lr: float = 1e-2
    step_lr: float = 1e-3
    batch_size: int = 32

    def __post_init__(self):
        own = f"ReconMethod({self.name!r})"
        check_choice(own, "unit", self.unit, ("block", "network"))
        for f in ("fisher", "softmax", "act_reg"):
            check_bool(own, f, getattr(self, f))
        for f in ("drop_p", "mixup_p0"):
            v = check_number(own, f, getattr(self, f))
            if not 0 <= v <= 1:
                raise fail(own, f, "in [0, 1]", v)
        check_int(own, "block_layers", self.block_layers, 1, None)
        check_int(own, "batch_size", self.batch_size, 1, None)
        check_number(own, "lr", self.lr, positive=True)
        for f in ("lam", "step_lr"):
            if check_number(own, f, getattr(self, f)) < 0:
                raise fail(own, f, ">= 0", getattr(self, f))
        t0, t1 = (check_number(own, "tau", t, positive=True) for t in self.tau)
        if t1 > t0:
            raise fail(own, "tau", "(start, end) with end <= start", self.tau)


METHODS = {
    "brecq": ReconMethod("BRECQ", "block", fisher=True),
    "qdrop": ReconMethod("QDrop", "block", drop_p=0.5),
    "nwq": ReconMethod("NWQ", "network", mixup_p0=0.5, softmax=True, act_reg=True),
}


class ActivationCache:
    """Values of graph nodes over the calibration batches, from the FP model (all
    quantizers off) or the model as it is now (``quantized=True``)."""

    def __init__(self, gm: fx.GraphModule, batches: list):
        self.gm = gm
        self.batches = batches
        self._fp: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def _run(self, names: set[str]) -> dict[str, torch.Tensor]:
        got: dict[str, list] = {n: [] for n in names}
        for b in self.batches:
            rec = ValueRecorder(self.gm)
            rec.run(*(b if isinstance(b, tuple | list) else (b,)))
            for node, v in rec.values.items():
                if node.name in got and isinstance(v, torch.Tensor):   # not x.shape
                    got[node.name].append(v.detach())
        return {n: torch.cat(v) for n, v in got.items() if v}

    def fp(self, names) -> dict[str, torch.Tensor]:
        """FP values (computed once for every node, then kept)."""
        if self._fp is None:
            with quant_state(self.gm, weights=False, acts=False):
                self._fp = self._run({n.name for n in self.gm.graph.nodes
                                      if n.op not in ("output",)})
        return {n: self._fp[n] for n in names}

    def quantized(self, names) -> dict[str, torch.Tensor]:
        return self._run(set(names))


@dataclass
class Unit:
    """A reconstruction unit: the graph nodes from ``start`` (exclusive: its input) to the
    last node, and the :class:`QuantLayer` nodes among them."""

    start: fx.Node
    nodes: list[fx.Node]
    layers: list[fx.Node]


def _is_layer(gm, node) -> bool:
    return isinstance(module_of(gm, node), QuantLayer)


def find_units(gm: fx.GraphModule, kind: str, block_layers: int = 2) -> list[Unit]:
    """Blocks (cut where one tensor is live, ``block_layers`` layers each) or the whole
    network (from the placeholder) as one unit."""
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    ph = [n for n in nodes if n.op == "placeholder"]
    if len(ph) != 1:
        raise ValueError(f"reconstruction needs a single-input graph, got {len(ph)} inputs")
    body = [n for n in nodes if n.op != "placeholder"]
    if kind == "network":
        return [Unit(ph[0], body, [n for n in body if _is_layer(gm, n)])]
    pos = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((pos[u] for u in n.users if u in pos), default=len(nodes))
                for n in nodes}
    cuts = [i for i in range(len(nodes))
            if sum(1 for n in nodes[:i + 1] if last_use[n] > i) == 1]
    units, start, cur = [], nodes[cuts[0]], []
    for i in range(cuts[0] + 1, len(nodes)):
        cur.append(nodes[i])
        n_layers = sum(_is_layer(gm, n) for n in cur)
        if i in cuts and (n_layers >= block_layers or i == len(nodes) - 1):
            units.append(Unit(start, cur, [n for n in cur if _is_layer(gm, n)]))
            start, cur = nodes[i], []
    if cur:
        if units and not any(_is_layer(gm, n) for n in cur):
            units[-1].nodes.extend(cur)
        else:
            units.append(Unit(start, cur, [n for n in cur if _is_layer(gm, n)]))
    return [u for u in units if u.layers]


def _unit_module(gm: fx.GraphModule, unit: Unit, outputs: list[fx.Node]) -> fx.GraphModule:
    """A GraphModule over ``gm``'s own submodules computing ``outputs`` from the unit input."""
    g = fx.Graph()
    env = {unit.start: g.placeholder("x")}
    for n in unit.nodes:
        env[n] = g.node_copy(n, lambda a: env[a])
    g.output(tuple(env[o] for o in outputs))
    return fx.GraphModule(gm, g)


class _Mix(nn.Module):
    """An activation quantizer whose output keeps each FP element with probability ``p``
    (QDrop's drop, NWQ's annealing mixup)."""

    def __init__(self, q: nn.Module, gen: torch.Generator):
        super().__init__()
        self.q = q
        self.p = 0.0
        self.gen = gen

    def forward(self, x):
        xq = self.q(x)
        if self.p <= 0 or not isinstance(x, torch.Tensor):
            return xq
        keep = torch.rand(x.shape, generator=self.gen) < self.p
        return torch.where(keep, x, xq)


def _act_quantizer_slots(gm, unit: Unit) -> list[tuple[nn.Module, str]]:
    """``(owner, attribute)`` of every activation quantizer the unit's nodes apply."""
    slots = []
    for n in unit.nodes:
        m = module_of(gm, n)
        if isinstance(m, Quantizer):
            parent, _, name = n.target.rpartition(".")
            slots.append((gm.get_submodule(parent) if parent else gm, name))
        elif isinstance(getattr(m, "output_quantizer", None), Quantizer):
            slots.append((m, "output_quantizer"))
    return slots


def _fisher(gm, unit: Unit, out_node: fx.Node, batches: list, fp_logits: torch.Tensor
            ) -> torch.Tensor:
    """BRECQ's ``(|dL/dz| + 1)^2`` at the unit output ``z``, ``L`` = KL(FP || quantized)."""
    grads, got = [], {}
    m = gm.get_submodule(out_node.target)

    def hook(_m, _i, out):
        out.retain_grad()
        got["z"] = out

    h = m.register_forward_hook(hook)
    row = 0
    try:
        for b in batches:
            out = run_batch(gm, b)
            ref = fp_logits[row:row + len(out)]
            row += len(out)
            loss = F.kl_div(F.log_softmax(out, 1), F.softmax(ref, 1), reduction="batchmean")
            loss.backward()
            grads.append(got["z"].grad.detach())
            gm.zero_grad(set_to_none=True)
    finally:
        h.remove()
    return (torch.cat(grads).abs() + 1.0).pow(2)


def reconstruct(gm: fx.GraphModule, batches: list, cfg, method: str, *,
                progress: bool = False, bar=None, spec: ReconMethod | None = None) -> None:
    """BRECQ / QDrop / NWQ on a quantized graph module whose weight and activation ranges
    are set: learns each unit's weight rounding (fixed as integers on the layers) and
    activation step sizes / zero-points (set on the quantizers), in network order.
    ``spec`` overrides ``METHODS[method]`` (e.g. ``dataclasses.replace`` of it)."""
    spec = METHODS[method] if spec is None else spec
    if not isinstance(gm, fx.GraphModule):
        raise ValueError(f"rounding={method!r} reconstructs blocks of the torch.fx graph; "
                         "the model does not trace (use 'adaround' or 'bitsplit')")
    units = find_units(gm, spec.unit, spec.block_layers)
    cache = ActivationCache(gm, batches)
    out_node = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    fp_logits = cache.fp([out_node.name])[out_node.name]
    gen = torch.Generator().manual_seed(cfg.seed)
    its = cfg.iterations
    for k, unit in enumerate(units if bar is None else bar(units)):
        final = unit.nodes[-1]
        outs = [n for n in unit.layers if n is not final] + [final] if spec.act_reg \
            else [final]
        fp = cache.fp([unit.start.name] + [o.name for o in outs])
        x_fp = fp[unit.start.name]
        x_q = x_fp if unit.start.op == "placeholder" else \
            cache.quantized([unit.start.name])[unit.start.name]
        targets = [fp[o.name] for o in outs]
        fisher = _fisher(gm, unit, final, batches, fp_logits) \
            if spec.fisher and final.op == "call_module" else None
        # rounding of every layer of the unit, LSQ steps of its activation quantizers
        roundings = []
        for n in unit.layers:
            ql = gm.get_submodule(n.target)
            wq = ql.weight_quantizer
            s = ql._scale_view(wq.scale)
            r = SoftRounding(ql.module.weight, s, *wq.grid, layer_scale=wq.scale,
                             kind="softmax" if spec.softmax else "rectified")
            roundings.append((ql, wq, r))
            ql.weight_quantizer = r
        slots = []
        for owner, attr in _act_quantizer_slots(gm, unit):
            q = getattr(owner, attr)
            if q.scale is None or not q.enabled:
                continue
            lq = LsqQuantizer(q)
            mix = _Mix(lq, gen)
            slots.append((owner, attr, q, lq, mix))
            setattr(owner, attr, mix)
        net = _unit_module(gm, unit, outs)
        mixes = [s[4] for s in slots]

        def loss_fn(idx, it, net=net, x_fp=x_fp, x_q=x_q, targets=targets, fisher=fisher,
                    roundings=roundings, mixes=mixes, first=unit.start.op == "placeholder"):
            p = spec.drop_p if spec.drop_p else spec.mixup_p0 * (1 - it / max(its, 1))
            for mx in mixes:
                mx.p = p
            if spec.softmax:
                t = it / max(its - 1, 1)
                tau = spec.tau[0] * (spec.tau[1] / spec.tau[0]) ** t
                for _, _, r in roundings:
                    r.tau = tau
            x = x_q[idx]
            if p > 0 and not first:
                keep = torch.rand(x.shape, generator=gen) < p
                x = torch.where(keep, x_fp[idx], x)
            got = net(x)
            w = fisher[idx] if fisher is not None else None
            loss = recon_loss(got[-1], targets[-1][idx], w)
            for o, t in zip(got[:-1], targets[:-1]):      # NWQ's AR_i
                loss = loss + recon_loss(o, t[idx])
            return loss

        names = ",".join(n.target for n in unit.layers)
        optimize_rounding(loss_fn, [r for _, _, r in roundings], its, len(x_q),
                          batch_size=spec.batch_size, seed=cfg.seed + k, lr=spec.lr,
                          lam=spec.lam, regularize=not spec.softmax,
                          extra_params=[p for s in slots for p in (s[3].step, s[3].offset)],
                          extra_lr=spec.step_lr, desc=f"{spec.name} {names}",
                          progress=progress)
        with torch.no_grad():
            for ql, wq, r in roundings:
                ql.weight_quantizer = wq
                ql.set_integer_weight(r.hard_int())
            for owner, attr, q, lq, _ in slots:
                q.set_qparams(lq.scale, lq.zero_point)
                setattr(owner, attr, q)
