"""Cross-layer equalization (whitepaper sec. 3.2, eq. 20-22) and high-bias absorption
(eq. 23-24), on a BN-folded, activation-fused torch.fx graph.

Pairs ``(A, B)``: ``B`` consumes ``A``'s output through ops that commute with a positive
per-channel scale (max/avg pooling, dropout, identity; flatten when it keeps channels), and
``A`` has no other user. The activation between them must be positively homogeneous
(none or ReLU; ReLU6 is replaced by ReLU, as in Nagel et al. 2019, and logged).
Depthwise layers (``groups == channels``) take part on either side. The scaling
``s_i = sqrt(r1_i r2_i) / r2_i`` (eq. 22) with ``r`` the per-channel weight ranges gives
``W1 <- S^-1 W1``, ``b1 <- S^-1 b1``, ``W2 <- W2 S``; pairs are equalized repeatedly until
the scales converge (chains such as conv -> depthwise -> pointwise).

High-bias absorption moves ``c = max(0, beta - 3 gamma)`` (BN statistics of ``A``) from
``b1`` into ``b2 <- b2 + W2 c``. It is exact when ``A``'s pre-activation stays above ``c``
and ``B`` has no zero padding (at padded borders the padding sees ``0`` instead of ``c``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import fx, nn

from .graph import LayerStats, avgpool_spec, is_quantizable, module_of

log = logging.getLogger("quant")

__all__ = ["CLEPair", "find_pairs", "equalize_pair", "cross_layer_equalization",
           "absorb_high_bias"]


@dataclass
class CLEPair:
    first: str
    second: str


def _channel_safe(gm: fx.GraphModule, node: fx.Node) -> bool:
    m = module_of(gm, node)
    if isinstance(m, nn.MaxPool2d | nn.Dropout | nn.Identity | nn.Flatten):
        return True
    if avgpool_spec(gm, node) is not None:
        return True
    return node.op == "call_method" and node.target in ("flatten", "contiguous")


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) and m.groups > 1 \
        and m.groups == m.in_channels == m.out_channels


def find_pairs(gm: fx.GraphModule, acts: dict[str, str]) -> list[CLEPair]:
    pairs = []
    for node in gm.graph.nodes:
        mb = module_of(gm, node)
        if not is_quantizable(mb):
            continue
        cur = node.args[0]
        while isinstance(cur, fx.Node) and len(cur.users) == 1 and _channel_safe(gm, cur):
            cur = cur.args[0]
        ma = module_of(gm, cur) if isinstance(cur, fx.Node) else None
        if not is_quantizable(ma) or len(cur.users) != 1:
            continue
        if acts.get(cur.target, "none") not in ("none", "relu", "relu6"):
            continue
        if isinstance(mb, nn.Linear):
            if mb.in_features != ma.weight.shape[0]:
                log.info("CLE: skip %s -> %s (flatten mixes channels)", cur.target,
                         node.target)
                continue
        elif mb.groups != 1 and not _is_depthwise(mb):
            log.info("CLE: skip %s -> %s (grouped conv)", cur.target, node.target)
            continue
        if isinstance(ma, nn.Conv1d | nn.Conv2d | nn.Conv3d) and ma.groups != 1 \
                and not _is_depthwise(ma):
            continue
        pairs.append(CLEPair(cur.target, node.target))
    return pairs


def _out_range(w: torch.Tensor) -> torch.Tensor:
    return w.abs().reshape(w.shape[0], -1).max(1).values


def _in_range(m: nn.Module) -> torch.Tensor:
    w = m.weight
    if _is_depthwise(m):
        return _out_range(w)
    return w.abs().transpose(0, 1).reshape(w.shape[1], -1).max(1).values


def _scale_in(m: nn.Module, s: torch.Tensor) -> None:
    w = m.weight
    if _is_depthwise(m):
        w.mul_(s.reshape((-1,) + (1,) * (w.dim() - 1)))
    else:
        w.mul_(s.reshape((1, -1) + (1,) * (w.dim() - 2)))


@torch.no_grad()
def equalize_pair(m1: nn.Module, m2: nn.Module, stats1: LayerStats | None = None
                  ) -> torch.Tensor:
    """Apply eq. 22 to one pair in place; returns the scales ``s``."""
    r1, r2 = _out_range(m1.weight), _in_range(m2)
    s = torch.sqrt(r1 * r2) / r2
    s = torch.where((r1 > 0) & (r2 > 0) & torch.isfinite(s), s, torch.ones_like(s))
    w1 = m1.weight
    w1.div_(s.reshape((-1,) + (1,) * (w1.dim() - 1)))
    if m1.bias is not None:
        m1.bias.div_(s)
    _scale_in(m2, s)
    if stats1 is not None:
        stats1.beta = stats1.beta / s
        stats1.gamma = stats1.gamma / s
    return s


def cross_layer_equalization(gm: fx.GraphModule, acts: dict[str, str],
                             stats: dict[str, LayerStats], *, max_iter: int = 100,
                             tol: float = 1e-6) -> list[CLEPair]:
    """Equalize every pair of ``gm`` in place (iterated to convergence)."""
    pairs = find_pairs(gm, acts)
    for p in pairs:
        if acts.get(p.first) == "relu6":
            log.info("CLE: ReLU6 after %s replaced by ReLU (scaling equivariance)", p.first)
            acts[p.first] = "relu"
    for _ in range(max_iter):
        worst = 0.0
        for p in pairs:
            s = equalize_pair(gm.get_submodule(p.first), gm.get_submodule(p.second),
                              stats.get(p.first))
            worst = max(worst, float((s - 1).abs().max()))
        if worst < tol:
            break
    log.info("CLE: equalized %d layer pairs", len(pairs))
    return pairs


@torch.no_grad()
def absorb_high_bias(gm: fx.GraphModule, pairs: list[CLEPair], acts: dict[str, str],
                     stats: dict[str, LayerStats], n_sigma: float = 3.0) -> dict[str, float]:
    """Eq. 23-24 with the BN estimate ``c = max(0, beta - 3 gamma)``; returns the absorbed
    ``sum(c)`` per first layer."""
    done = {}
    for p in pairs:
        st = stats.get(p.first)
        if st is None or acts.get(p.first, "none") != "relu":
            continue
        m1, m2 = gm.get_submodule(p.first), gm.get_submodule(p.second)
        c = torch.clamp(st.beta - n_sigma * st.gamma, min=0.0)
        if not bool((c > 0).any()) or m1.bias is None:
            continue
        m1.bias.sub_(c)
        st.beta = st.beta - c
        w2 = m2.weight
        if _is_depthwise(m2):
            shift = w2.reshape(w2.shape[0], -1).sum(1) * c
        else:
            shift = w2.reshape(w2.shape[0], w2.shape[1], -1).sum(2) @ c
        if m2.bias is None:
            m2.bias = nn.Parameter(torch.zeros(w2.shape[0], dtype=w2.dtype))
        m2.bias.add_(shift)
        done[p.first] = float(c.sum())
    if done:
        log.info("high-bias absorption in %d layers", len(done))
    return done

