"""The ``qaccel`` front door: --version, --workdir, help text with defaults, unavailable
subcommands, usage errors, and main()'s exit statuses (2 for files, 130 for Ctrl-C)."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys

import pytest

import qaccel
from qaccel import cli, workspace
from qaccel.cli import build_parser, main

OWNED = ("demo", "verilog", "perf", "energy", "synth")


@pytest.fixture
def default_workspace():
    """Leave the process-wide workspace as the default after the test."""
    yield
    workspace.use(None)


def _subparsers(parser):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_version_in_process_and_console(capsys, monkeypatch):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"qaccel {importlib.metadata.version('qaccel')}"
    proc = subprocess.run([sys.executable, "-m", "qaccel", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"qaccel {importlib.metadata.version('qaccel')}"

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)     # a bare source tree
    assert cli.package_version() == qaccel.__version__


def test_workdir_selects_the_workspace(tmp_path, topo, capsys, default_workspace):
    wd = tmp_path / "new" / "work"
    assert main(["--workdir", str(wd), "perf", "--topology", str(topo), "--rows", "8",
                 "--cols", "8"]) == 0
    assert wd.is_dir() and workspace.current().root == wd.resolve()


def test_workdir_refused_and_documented(tmp_path, capsys, monkeypatch, cli_error):
    afile = tmp_path / "f"
    afile.write_text("x")
    err = cli_error(["--workdir", str(afile), "perf", "--network", "resnet18"])
    assert "argument --workdir" in err and "not a directory" in err
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("QACCEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "400")
    text = " ".join(build_parser().format_help().split())
    assert "--workdir DIR" in text and "$QACCEL_HOME" in text and "~/.cache/qaccel" in text
    assert f"here: {tmp_path / 'home'}" in text


def _option_blocks(parser) -> dict[str, str]:
    """Rendered ``--help`` text of each option, by its last option string."""
    lines = parser.format_help().splitlines()
    blocks, key = {}, None
    for line in lines:
        stripped = line.strip()
        if line.startswith("  -"):
            invocation = re.split(r"\s{2,}", stripped)[0]       # "-o FILE.v, --output FILE.v"
            key = [w.rstrip(",") for w in invocation.split() if w.startswith("-")][-1]
            blocks[key] = stripped
        elif key and line.startswith("    ") and stripped:
            blocks[key] += " " + stripped
        else:
            key = None
    return blocks


def test_every_option_has_help_and_shows_its_default(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    subs = _subparsers(build_parser())
    checked = 0
    for cmd in OWNED:
        p = subs.choices[cmd]
        blocks = _option_blocks(p)
        for action in p._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (cmd, action.option_strings)
            text = blocks[action.option_strings[-1]]
            if action.default is not None and not isinstance(action.default, bool):
                assert "default" in text, (cmd, text)
                checked += 1
            if action.option_strings[-1] in ("--per-channel", "--per-tensor"):
                assert "(default: per-tensor)" in text
    assert checked >= 40
    text = " ".join(subs.choices["energy"].format_help().split())
    assert "--clock-mhz CLOCK_MHZ clock for the latency in ms (default: 500.0)" in text


def test_usage_errors_are_one_line_and_a_pointer(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["perf", "--network", "resnet18", "--rows", "many"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["qaccel: error: argument --rows: invalid int value: 'many'",
                                "(see 'qaccel perf --help')"]


BROKEN = "qaccel_cli_test_broken_cmd"


def test_unavailable_command_shows_module_and_import_error(tmp_path, monkeypatch, capsys,
                                                           cli_error):
    (tmp_path / f"{BROKEN}.py").write_text("raise ImportError('needs libfoo 9.9')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, BROKEN])
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    why = f"{BROKEN} failed to import (ImportError: needs libfoo 9.9)"
    assert f"{BROKEN} UNAVAILABLE: {why}" in out
    assert "perf" in out                      # the other commands are still there
    err = cli_error([BROKEN, "--any", "args"])
    assert err.strip() == f"qaccel: error: command {BROKEN!r} is unavailable: {why}"
    sys.modules.pop(BROKEN, None)


def test_interrupt_and_file_errors_and_closed_stdout(topo, monkeypatch, capsys):
    from qaccel.commands import perf

    argv = ["perf", "--topology", str(topo), "--rows", "8", "--cols", "8"]

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(perf, "analyze", interrupt)
    assert main(argv) == 130
    assert capsys.readouterr().err == "qaccel: interrupted\n"

    def denied(*a, **k):
        raise PermissionError(13, os.strerror(13), "/some/where.json")

    monkeypatch.setattr(perf, "analyze", denied)
    assert main(argv) == 2
    assert capsys.readouterr().err == f"qaccel: error: /some/where.json: {os.strerror(13)}\n"

    def closed(*a, **k):
        raise BrokenPipeError(32, os.strerror(32))

    monkeypatch.setattr(perf, "analyze", closed)
    assert main(argv) == 141
    assert capsys.readouterr().err == ""
