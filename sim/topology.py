"""SCALE-Sim topology files (numpy-free parser).

Two formats, both CSV with a header row and (usually) a trailing comma on every row:

* **conv**: ``Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width,
  Channels, Num Filter, Strides,``.
* **gemm**: ``Layer, M, N, K,`` -- ``[M x K] @ [K x N]``: ``M`` output rows (our ``T``),
  ``K`` the reduction, ``N`` output columns.

Topologies are read with SCALE-Sim's conventions so that our model and SCALE-Sim see the
same GEMMs: no padding, output size ``ceil((H - Fh) / S) + 1`` (a filter larger than the
input is an error), ``T = out_h * out_w``, ``K = Fh * Fw * Channels``, ``N = Num Filter``.
Every error names the file, the (1-based) row and the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .workload import ConvGeometry, GemmWorkload

__all__ = ["TopologyLayer", "read_topology", "parse_topology", "scalesim_out_size",
           "CONV_FIELDS", "GEMM_FIELDS"]

CONV_FIELDS = ("IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width", "Channels",
               "Num Filter", "Strides")
GEMM_FIELDS = ("M", "N", "K")


def scalesim_out_size(size: int, kernel: int, stride: int) -> int:
    """SCALE-Sim's output size: ``ceil((size - kernel) / stride) + 1``, no padding."""
    return -(-(size - kernel) // stride) + 1


@dataclass(frozen=True)
class TopologyLayer:
    """One row of a topology file, in conv terms (a GEMM row is ``M x 1`` input,
    ``1 x K`` filter... as SCALE-Sim itself converts it)."""

    name: str
    ifmap_h: int
    ifmap_w: int
    filter_h: int
    filter_w: int
    channels: int
    filters: int
    stride: int
    gemm: bool = False
    row: int = 0

    @property
    def out_h(self) -> int:
        return 1 if self.gemm else scalesim_out_size(self.ifmap_h, self.filter_h, self.stride)

    @property
    def out_w(self) -> int:
        return 1 if self.gemm else scalesim_out_size(self.ifmap_w, self.filter_w, self.stride)

    @property
    def T(self) -> int:
        return self.ifmap_h if self.gemm else self.out_h * self.out_w

    @property
    def K(self) -> int:
        return self.filter_w if self.gemm else self.filter_h * self.filter_w * self.channels

    @property
    def N(self) -> int:
        return self.filters

    def workload(self) -> GemmWorkload:
        if self.gemm:
            return GemmWorkload(name=self.name, T=self.T, K=self.K, N=self.N, op="gemm")
        geom = ConvGeometry(self.ifmap_h, self.ifmap_w, self.channels, self.filters,
                            self.filter_h, self.filter_w, (self.stride, self.stride), (0, 0),
                            (1, 1), 1, self.out_h, self.out_w)
        # input_elems from the geometry: the pixels a strided filter samples
        return GemmWorkload(name=self.name, T=self.T, K=self.K, N=self.N, op="conv2d",
                            geometry=geom)


def _fields(line: str) -> list[str]:
    parts = [p.strip() for p in line.split(",")]
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def parse_topology(text: str, source: str = "<topology>", gemm: bool | None = None
                   ) -> list[TopologyLayer]:
    """Parse topology ``text``. ``gemm=None`` detects the format from the header
    (``Layer, M, N, K``)."""
    lines = text.splitlines()
    rows = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip()
            .startswith("#")]
    if not rows:
        raise ValueError(f"{source}: empty topology file")
    hrow, header = rows[0]
    head = _fields(header)
    looks_gemm = [h.upper() for h in head[1:4]] == list(GEMM_FIELDS)
    if gemm is None:
        gemm = looks_gemm
    names = GEMM_FIELDS if gemm else CONV_FIELDS
    if len(head) < 1 + len(names) or (not gemm and looks_gemm):
        kind = "GEMM (Layer, M, N, K)" if gemm else "conv (" + ", ".join(CONV_FIELDS) + ")"
        raise ValueError(f"{source}: row {hrow}: header {header.strip()!r} is not a SCALE-Sim "
                         f"{kind} header")
    layers: list[TopologyLayer] = []
    seen: dict[str, int] = {}
    for lineno, line in rows[1:]:
        parts = _fields(line)
        if len(parts) != 1 + len(names):
            raise ValueError(f"{source}: row {lineno}: expected {1 + len(names)} fields "
                             f"(Layer name, {', '.join(names)}), got {len(parts)}: "
                             f"{line.strip()!r}")
        name = parts[0]
        if not name:
            raise ValueError(f"{source}: row {lineno}: field 'Layer name' is empty")
        if name in seen:
            name = f"{name}#{lineno}"
        seen[name] = lineno
        vals = {}
        for fname, raw in zip(names, parts[1:]):
            try:
                v = int(raw)
            except ValueError:
                raise ValueError(f"{source}: row {lineno}: field {fname!r} must be an integer, "
                                 f"not {raw!r}") from None
            if v < 1:
                raise ValueError(f"{source}: row {lineno}: field {fname!r} must be positive, "
                                 f"not {v}")
            vals[fname] = v
        if gemm:
            lay = TopologyLayer(name, vals["M"], vals["K"], 1, vals["K"], 1, vals["N"], 1,
                                gemm=True, row=lineno)
        else:
            lay = TopologyLayer(name, *(vals[f] for f in CONV_FIELDS), row=lineno)
            for dim, fdim in (("IFMAP Height", "Filter Height"), ("IFMAP Width", "Filter Width")):
                if vals[fdim] > vals[dim]:
                    raise ValueError(f"{source}: row {lineno}: field {fdim!r}={vals[fdim]} is "
                                     f"larger than {dim!r}={vals[dim]} (no padding)")
        layers.append(lay)
    if not layers:
        raise ValueError(f"{source}: no layers after the header")
    return layers


def read_topology(path: str | os.PathLike, gemm: bool | None = None) -> list[TopologyLayer]:
    """Read a SCALE-Sim topology file (conv, or GEMM with ``gemm=True`` / auto-detected)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"topology file {path!r} does not exist") from None
    return parse_topology(text, source=path, gemm=gemm)
