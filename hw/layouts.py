"""Payload layouts of the accelerator's streams, built from :mod:`sim.streams`.

The ``cmd`` and ``params`` layouts are derived field by field from
:func:`sim.streams.cmd_fields` and :func:`sim.streams.params_fields`, so the RTL payloads match
the packers (:func:`sim.streams.pack_cmd`, :func:`sim.streams.pack_params`) bit for bit: fields
least significant first, array lanes little-endian (lane 0 in the least significant bits).
"""

from __future__ import annotations

from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data
from qaccel.sim.config import ArrayConfig
from qaccel.sim.streams import cmd_fields, params_fields

__all__ = ["act_shape", "cmd_layout", "params_layout", "weight_layout", "act_layout",
           "out_layout", "psum_layout"]


def _shape(bits: int, is_signed: bool) -> Shape:
    return signed(bits) if is_signed else unsigned(bits)


def act_shape(cfg: ArrayConfig) -> Shape:
    """One activation (input or output): ``a_bits``, signed iff ``cfg.a_signed``."""
    return _shape(cfg.a_bits, cfg.a_signed)


def cmd_layout(cfg: ArrayConfig) -> data.StructLayout:
    """``cmd`` payload: ``T, K, N, z_y, relu, accumulate, emit, load, raw`` (+ ``m, s``
    per-tensor), LSB first."""
    return data.StructLayout({name: _shape(bits, sgn) for name, bits, sgn in cmd_fields(cfg)})


def params_layout(cfg: ArrayConfig) -> data.StructLayout:
    """``params`` payload: ``bias[cols]`` (+ ``m[cols], s[cols]`` per-channel), LSB first."""
    return data.StructLayout({name: data.ArrayLayout(_shape(bits, sgn), cfg.cols)
                              for name, bits, sgn in params_fields(cfg)})


def weight_layout(cfg: ArrayConfig) -> data.ArrayLayout:
    """``weight`` payload: one PE row of ``cols`` signed ``w_bits`` weights."""
    return data.ArrayLayout(signed(cfg.w_bits), cfg.cols)


def act_layout(cfg: ArrayConfig) -> data.ArrayLayout:
    """``act`` payload: one activation vector of ``rows`` lanes."""
    return data.ArrayLayout(act_shape(cfg), cfg.rows)


def out_layout(cfg: ArrayConfig) -> data.ArrayLayout:
    """``out`` payload: one output vector of ``cols`` requantized lanes."""
    return data.ArrayLayout(act_shape(cfg), cfg.cols)


def psum_layout(cfg: ArrayConfig) -> data.ArrayLayout:
    """``psum_in`` / ``psum_out`` payload: one vector of ``cols`` signed ``acc_bits`` sums."""
    return data.ArrayLayout(signed(cfg.acc_bits), cfg.cols)
