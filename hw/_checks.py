"""Constructor argument checks shared by the RTL components (exact ``ValueError`` messages)."""

from __future__ import annotations

__all__ = ["check_int", "check_bool"]


def check_int(owner: str, name: str, value, lo: int, hi: int) -> int:
    """Return ``value`` if it is an ``int`` in ``[lo, hi]``, else raise ``ValueError``::

        <owner>.<name> must be an integer in [<lo>, <hi>], not <value!r>
    """
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{owner}.{name} must be an integer in [{lo}, {hi}], not {value!r}")
    return value


def check_bool(owner: str, name: str, value) -> bool:
    """Return ``value`` if it is a ``bool``, else raise ``ValueError``::

        <owner>.<name> must be a bool, not <value!r>
    """
    if not isinstance(value, bool):
        raise ValueError(f"{owner}.{name} must be a bool, not {value!r}")
    return value
