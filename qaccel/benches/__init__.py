"""Benchmarks run by ``make bench`` (``python -m qaccel.bench``, see ``qaccel/bench.py``).

Every bench module exposes ``run(opts: BenchOptions) -> str``, returning a markdown section.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

__all__ = ["BenchOptions", "SCALESIM_REPORTS", "scalesim_peer_dir"]

#: what a SCALE-Sim 3.0.0 reference directory must hold for the scalesim bench
SCALESIM_REPORTS = ("resnet50.csv", "resnet50_32x32_ws_COMPUTE_REPORT.csv")


@dataclass(frozen=True)
class BenchOptions:
    """Where a bench writes and what it may read.

    Parameters
    ----------
    out_dir : pathlib.Path
        Directory of the markdown tables.
    figures_dir : pathlib.Path
        Directory of the figures the tables link to (relative links).
    scalesim_peer : pathlib.Path or None
        A directory with SCALE-Sim 3.0.0's ``resnet50.csv`` topology and its 32x32 ws
        compute report; ``None``: the comparison with SCALE-Sim's own reports is skipped
        (the table says so).
    """

    out_dir: pathlib.Path
    figures_dir: pathlib.Path
    scalesim_peer: pathlib.Path | None = None

    def __post_init__(self):
        for name in ("out_dir", "figures_dir"):
            object.__setattr__(self, name, pathlib.Path(getattr(self, name)))
        if self.scalesim_peer is not None:
            object.__setattr__(self, "scalesim_peer",
                               scalesim_peer_dir(self.scalesim_peer, "scalesim_peer"))


def scalesim_peer_dir(value: str | os.PathLike, field: str | None = None) -> pathlib.Path:
    """``value`` as a SCALE-Sim reference directory; :class:`ValueError` (starting with
    ``field: `` when given) naming the directory or the missing file otherwise."""
    path = pathlib.Path(value).expanduser()
    prefix = f"{field}: " if field else ""
    if not path.is_dir():
        raise ValueError(f"{prefix}{str(path)!r} is not a directory")
    missing = [f for f in SCALESIM_REPORTS if not (path / f).is_file()]
    if missing:
        raise ValueError(f"{prefix}{str(path)!r} has no {', '.join(missing)} "
                         f"(SCALE-Sim 3.0.0's reports)")
    return path
