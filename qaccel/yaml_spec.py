"""Reading and checking the YAML files that drive sweeps and searches.

Both file kinds are read with ``yaml.safe_load`` only, and every error is a ``ValueError``
(or ``FileNotFoundError``) that names the file and the offending key, raised before
anything runs.
"""

from __future__ import annotations

import pathlib

import yaml

__all__ = ["read_yaml", "spec_error", "check_keys", "check_int"]


def spec_error(where: str, key: str, msg: str) -> ValueError:
    """``ValueError("<file>: <key>: <msg>")``."""
    return ValueError(f"{where}: {key}: {msg}")


def read_yaml(path, what: str):
    """The document of the YAML file ``path`` (a ``what`` file, e.g. ``"sweep"``)."""
    p = pathlib.Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ValueError(f"{p}: cannot read the {what} file ({reason})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: not valid YAML: {exc}") from None


def check_keys(data, where: str, known, what: str) -> dict:
    """``data`` is a mapping whose keys are all in ``known``; returns it."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: the {what} file must be a YAML mapping, not "
                         f"{type(data).__name__}")
    for k in data:
        if k not in known:
            raise spec_error(where, str(k), f"unknown key; known: {', '.join(known)}")
    return data


def check_int(where: str, key: str, v, lo: int, hi: int | None = None) -> int:
    """``v`` is an integer (not a bool) in ``[lo, hi]`` (``hi=None``: no upper bound)."""
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise spec_error(where, key, f"must be an integer {rng}, not {v!r}")
    return v
