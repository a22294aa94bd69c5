"""Progress bars for the long quantization steps (AdaRound, Bit-split, sensitivity).

``progress`` settings: ``"auto"`` (default: a tqdm bar on stderr when stderr is a TTY),
``True`` (always) or ``False`` (never).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

__all__ = ["PROGRESS", "check_progress", "bar"]

PROGRESS = ("auto", True, False)


def check_progress(value, name: str = "progress") -> None:
    """``ValueError`` naming ``name`` unless ``value`` is ``"auto"``, ``True`` or ``False``."""
    if not (value == "auto" and isinstance(value, str) or isinstance(value, bool)):
        raise ValueError(f"{name} must be 'auto', True or False; got {value!r}")


def bar(iterable: Iterable, progress, *, desc: str, total: int | None = None,
        unit: str = "it", leave: bool = True):
    """``iterable`` wrapped in a tqdm bar on stderr according to ``progress``."""
    check_progress(progress)
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, file=sys.stderr,
                mininterval=0.5, disable=None if progress == "auto" else not progress)
