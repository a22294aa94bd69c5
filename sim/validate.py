"""Argument checks for every validated record, with one message format::

    <Owner>.<field> must be <allowed>[ (<why>)], not <value>

e.g. ``ArrayConfig.rows must be in [2, 256], not 0``. ``owner`` is the record's name as
the user knows it (``"ArrayConfig"``, ``"IntNetwork.layers[2]"``). Each check returns the
value as a plain Python value (numpy scalars are accepted) or raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["fail", "check_int", "check_bool", "check_choice", "check_number",
           "check_acc_bits", "PRODUCT_LIMIT"]

#: ``acc_bits + mult_bits`` must not exceed this: the requantizer product fits int64 (SPEC)
PRODUCT_LIMIT = 62


def fail(owner: str, field: str, allowed: str, value, why: str = "", *,
         shown: str | None = None) -> ValueError:
    """The ``ValueError`` ``<owner>.<field> must be <allowed> (<why>), not <value!r>``
    (``shown`` replaces ``value!r``, e.g. ``"dtype float64"`` or ``"shape (3,)"``)."""
    why = f" ({why})" if why else ""
    return ValueError(f"{owner}.{field} must be {allowed}{why}, "
                      f"not {repr(value) if shown is None else shown}")


def _bounds(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo}, {hi}]"
    if lo is not None:
        return f">= {lo}"
    return f"<= {hi}" if hi is not None else "any"


def check_int(owner: str, field: str, value, lo: int | None = None, hi: int | None = None,
              why: str = "") -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) in ``[lo, hi]`` (``None``:
    unbounded); the range must not be empty."""
    if lo is not None and hi is not None and lo > hi:
        raise AssertionError(f"{owner}.{field}: empty range [{lo}, {hi}]; check the fields "
                             "that bound it first")
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        allowed = "an integer" + ("" if lo is None and hi is None else " " + _bounds(lo, hi))
        raise fail(owner, field, allowed, value, why)
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise fail(owner, field, _bounds(lo, hi), value, why)
    return value


def check_bool(owner: str, field: str, value) -> bool:
    """``value`` as a ``bool`` if it is one (``True``/``False`` or a numpy bool)."""
    if not isinstance(value, bool | np.bool_):
        raise fail(owner, field, "a bool", value)
    return bool(value)


def check_choice(owner: str, field: str, value, choices: Iterable):
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if not any(value == c and type(value) is type(c) for c in choices):
        raise fail(owner, field, "one of " + ", ".join(map(repr, choices)), value)
    return value


def check_number(owner: str, field: str, value, *, positive: bool = False) -> float:
    """``value`` as a ``float`` if it is a finite real number (``> 0`` if ``positive``)."""
    ok = (not isinstance(value, bool | np.bool_)
          and isinstance(value, int | float | np.integer | np.floating)
          and math.isfinite(float(value)) and (not positive or float(value) > 0))
    if not ok:
        raise fail(owner, field, "a finite number" + (" > 0" if positive else ""), value)
    return float(value)


def check_acc_bits(owner: str, w_bits: int, a_bits: int, acc_bits: int, mult_bits: int,
                   product: str = "w_bits + a_bits") -> int:
    """The accumulator's two bounds, each blaming the right field: one product fits
    (``acc_bits >= w_bits + a_bits``) and the requantizer product fits int64
    (``acc_bits + mult_bits <= 62``). When no ``acc_bits`` can meet both, the message names
    the pair of fields whose combination is impossible instead of an empty range.
    ``product`` names ``w_bits + a_bits`` in the message (e.g. the largest over layers)."""
    need = w_bits + a_bits
    if need + mult_bits > PRODUCT_LIMIT:
        raise ValueError(
            f"{owner}.acc_bits + mult_bits must be <= {PRODUCT_LIMIT}: {product} = "
            f"{need} needs acc_bits >= {need}, so mult_bits must be <= "
            f"{PRODUCT_LIMIT - need}, not {mult_bits}")
    return check_int(owner, "acc_bits", acc_bits, need, PRODUCT_LIMIT - mult_bits,
                     why=f"{product} = {need} <= acc_bits <= {PRODUCT_LIMIT} - "
                         f"mult_bits = {PRODUCT_LIMIT - mult_bits}")
