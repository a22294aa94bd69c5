"""Constructor argument checks shared by the RTL components (exact ``ValueError`` messages)."""

from __future__ import annotations

__all__ = ["fail", "check_int", "check_bool"]


def fail(owner, message: str) -> ValueError:
    """``ValueError(message)`` for the component ``owner`` under construction; silences
    Amaranth's "created but never used" warning for it, since it never will be."""
    owner._MustUse__silence = True
    return ValueError(message)


def check_int(owner, name: str, value, lo: int, hi: int) -> int:
    """Return ``value`` if it is an ``int`` in ``[lo, hi]``, else raise ``ValueError``::

        <Class>.<name> must be an integer in [<lo>, <hi>], not <value!r>
    """
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise fail(owner, f"{type(owner).__name__}.{name} must be an integer in [{lo}, {hi}], "
                          f"not {value!r}")
    return value


def check_bool(owner, name: str, value) -> bool:
    """Return ``value`` if it is a ``bool``, else raise ``ValueError``::

        <Class>.<name> must be a bool, not <value!r>
    """
    if not isinstance(value, bool):
        raise fail(owner, f"{type(owner).__name__}.{name} must be a bool, not {value!r}")
    return value
