"""Memory traffic in bits per (level, operand): the vocabulary the analytic model counts in
and the energy model prices (:mod:`sim.analytic`, :mod:`sim.energy`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LEVELS", "OPERANDS", "BUFFER_OF", "Access", "Traffic"]

#: memory levels, innermost first: PE registers, accumulator banks / parameter registers,
#: on-chip buffers, DRAM
LEVELS = ("pe", "acc", "buffer", "dram")
#: operands moved between the levels
OPERANDS = ("weights", "activations", "psums", "outputs", "params")
#: which on-chip buffer (``ArrayConfig`` field) holds each operand at the ``buffer`` level
#: (psums reach it only in spilled K-split chains, :class:`sim.mapping.Mapping` ``psums``)
BUFFER_OF = {"weights": "weight_buffer_kib", "params": "weight_buffer_kib",
             "activations": "act_buffer_kib", "outputs": "out_buffer_kib",
             "psums": "out_buffer_kib"}

_L = {name: i for i, name in enumerate(LEVELS)}
_O = {name: i for i, name in enumerate(OPERANDS)}


@dataclass(frozen=True)
class Access:
    reads: int
    writes: int

    @property
    def total(self) -> int:
        return self.reads + self.writes


class Traffic:
    """Reads and writes in bits per ``(level, operand)``; ``bits[level, operand, 0/1]``."""

    __slots__ = ("bits",)

    def __init__(self, bits: np.ndarray | None = None):
        self.bits = (np.zeros((len(LEVELS), len(OPERANDS), 2), dtype=np.int64)
                     if bits is None else np.asarray(bits, dtype=np.int64))

    def add(self, level: str, operand: str, reads: int = 0, writes: int = 0) -> None:
        self.bits[_L[level], _O[operand], 0] += reads
        self.bits[_L[level], _O[operand], 1] += writes

    def __getitem__(self, key: tuple[str, str]) -> Access:
        level, operand = key
        r, w = self.bits[_L[level], _O[operand]]
        return Access(int(r), int(w))

    def reads(self, level: str, operand: str | None = None) -> int:
        ops = slice(None) if operand is None else _O[operand]
        return int(np.sum(self.bits[_L[level], ops, 0]))

    def writes(self, level: str, operand: str | None = None) -> int:
        ops = slice(None) if operand is None else _O[operand]
        return int(np.sum(self.bits[_L[level], ops, 1]))

    def total(self, level: str) -> int:
        return int(self.bits[_L[level]].sum())

    def __mul__(self, k: int) -> Traffic:
        return Traffic(self.bits * int(k))

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.bits + other.bits)

    def __eq__(self, other) -> bool:
        return isinstance(other, Traffic) and bool(np.array_equal(self.bits, other.bits))

    def to_dict(self) -> dict:
        """``{level: {operand: {"reads": bits, "writes": bits}}}``."""
        return {lv: {op: {"reads": int(self.bits[i, j, 0]), "writes": int(self.bits[i, j, 1])}
                     for j, op in enumerate(OPERANDS)} for i, lv in enumerate(LEVELS)}
