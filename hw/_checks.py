"""Constructor argument checks shared by the RTL components: :mod:`qaccel.sim.validate`'s
checks and message format, raised so that Amaranth does not warn about the component."""

from __future__ import annotations

from qaccel.sim import validate

__all__ = ["fail", "check_int", "check_bool"]


def fail(owner, message: str) -> ValueError:
    """``ValueError(message)`` for the component ``owner`` under construction; silences
    Amaranth's "created but never used" warning for it, since it never will be."""
    owner._MustUse__silence = True
    return ValueError(message)


def check_int(owner, name: str, value, lo: int, hi: int) -> int:
    """Return ``value`` if it is an ``int`` in ``[lo, hi]``, else raise the
    :func:`qaccel.sim.validate.check_int` ``ValueError``::

        <Class>.<name> must be in [<lo>, <hi>], not <value!r>
    """
    try:
        return validate.check_int(type(owner).__name__, name, value, lo, hi)
    except ValueError as exc:
        raise fail(owner, str(exc)) from None


def check_bool(owner, name: str, value) -> bool:
    """Return ``value`` if it is a ``bool``, else raise ``ValueError``::

        <Class>.<name> must be a bool, not <value!r>
    """
    try:
        return validate.check_bool(type(owner).__name__, name, value)
    except ValueError as exc:
        raise fail(owner, str(exc)) from None
