"""The one place where qaccel touches the filesystem and external tools.

Everything that writes files or runs a tool -- the Verilog and simulator build cache, the
cocotb runs, synthesis, benches, paper tables, trained-model caches, sweep stores -- asks a
:class:`Workspace` for its directory. Nothing is ever written inside the installed package.

The directory is, in order of precedence:

1. ``--workdir DIR`` on the command line (``qaccel --workdir DIR ...``), or an explicit
   ``Workspace(DIR)`` from Python;
2. the ``QACCEL_HOME`` environment variable (the Makefile sets it to ``build/`` of the
   checkout);
3. ``$XDG_CACHE_HOME/qaccel``, i.e. ``~/.cache/qaccel`` by default.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

__all__ = ["Workspace", "default_root", "current", "use"]


def default_root() -> pathlib.Path:
    """``$QACCEL_HOME``, else ``$XDG_CACHE_HOME/qaccel``, else ``~/.cache/qaccel``."""
    home = os.environ.get("QACCEL_HOME")
    if home:
        return pathlib.Path(home).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(cache).expanduser() / "qaccel"


@dataclass(frozen=True)
class Workspace:
    """A work directory: builds, caches and run outputs live below ``root``.

    Parameters
    ----------
    root : path-like
        The work directory. It is created on first use, not on construction.
    """

    root: pathlib.Path

    def __post_init__(self):
        root = pathlib.Path(self.root).expanduser()
        if root.exists() and not root.is_dir():
            raise ValueError(f"workdir {str(root)!r} exists and is not a directory")
        object.__setattr__(self, "root", root.resolve())

    @classmethod
    def default(cls) -> Workspace:
        return cls(default_root())

    def dir(self, *parts: str) -> pathlib.Path:
        """``root/parts...``, created if missing."""
        path = self.root.joinpath(*parts)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"workdir {str(self.root)!r}: cannot create {str(path)!r} "
                             f"({exc.strerror})") from None
        return path


_current: Workspace | None = None


def current() -> Workspace:
    """The process-wide workspace: the one set by :func:`use`, else the default."""
    return _current if _current is not None else Workspace.default()


def use(ws: Workspace | str | os.PathLike | None) -> Workspace:
    """Make ``ws`` the process-wide workspace (``None``: back to the default)."""
    global _current
    _current = ws if isinstance(ws, Workspace) or ws is None else Workspace(ws)
    return current()
