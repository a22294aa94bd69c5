"""Verilog generation for an :class:`~sim.config.ArrayConfig`."""

from __future__ import annotations

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring
from qaccel.sim.config import ArrayConfig

from .accelerator import Accelerator

__all__ = ["generate_verilog", "top_ports"]


def generate_verilog(cfg: ArrayConfig, name: str = "qaccel_top") -> str:
    """Verilog source of ``Accelerator(cfg)`` as module ``name``.

    Ports (Amaranth's names for the flattened signature): ``clk``, ``rst``, then
    ``<stream>__valid``, ``<stream>__ready`` and ``<stream>__payload`` for ``cmd``, ``weight``,
    ``act``, ``params``, ``psum_in`` (inputs), ``out`` and ``psum_out`` (outputs), and ``busy``.
    See :func:`top_ports` and ``hw/README.md``.
    """
    if not isinstance(cfg, ArrayConfig):
        raise ValueError(f"generate_verilog: cfg must be an ArrayConfig, not {cfg!r}")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"generate_verilog: name must be a Verilog identifier, not {name!r}")
    return verilog.convert(Accelerator(cfg), name=name, emit_src=False)


def top_ports(cfg: ArrayConfig) -> list[tuple[str, str, int]]:
    """``(name, direction, width)`` of every top-level Verilog port, in signature order."""
    ports = [("clk", "input", 1), ("rst", "input", 1)]
    top = Accelerator(cfg)
    top._MustUse__silence = True        # only the signature is wanted, never elaborated
    for path, member, _value in top.signature.flatten(top):
        name = "__".join(str(p) for p in path)
        direction = "input" if member.flow == wiring.In else "output"
        ports.append((name, direction, Shape.cast(member.shape).width))
    return ports

