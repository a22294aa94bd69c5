"""``qaccel verilog``: writes Verilog for the requested array; bad values are CLI errors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from qaccel.sim import ArrayConfig

from qaccel.cli import main


def _port_width(text: str, name: str) -> int:
    m = re.search(rf"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):0\]\s+)?{name}\s*;",
                  text, re.M)
    assert m, f"port {name} not found"
    return int(m.group(2)) + 1 if m.group(2) else 1


def test_writes_verilog_for_the_requested_array(tmp_path, capsys):
    out = tmp_path / "sub" / "acc.v"
    rc = main(["verilog", "--rows", "3", "--cols", "5", "--w-bits", "2", "--a-bits", "4",
               "--acc-bits", "12", "--mult-bits", "10", "--per-channel", "-o", str(out)])
    assert rc == 0
    text = out.read_text()
    assert re.search(r"^module qaccel_top\s*\(", text, re.M)
    cfg = ArrayConfig(rows=3, cols=5, w_bits=2, a_bits=4, acc_bits=12, mult_bits=10,
                      per_channel=True)
    assert _port_width(text, "act__payload") == cfg.rows * cfg.a_bits
    assert _port_width(text, "weight__payload") == cfg.cols * cfg.w_bits
    assert _port_width(text, "out__payload") == cfg.cols * cfg.a_bits
    # per-channel params: bias, m and s (6 bits) per column
    assert _port_width(text, "params__payload") == cfg.cols * (cfg.acc_bits + cfg.mult_bits + 6)
    assert str(out) in capsys.readouterr().out


def test_per_tensor_and_signed_change_the_interface(tmp_path):
    a, b = tmp_path / "a.v", tmp_path / "b.v"
    assert main(["verilog", "--per-tensor", "-o", str(a)]) == 0
    assert main(["verilog", "--per-channel", "--a-signed", "-o", str(b)]) == 0
    ta, tb = a.read_text(), b.read_text()
    cfg = ArrayConfig()
    assert _port_width(ta, "params__payload") == cfg.cols * cfg.acc_bits
    assert _port_width(tb, "params__payload") == cfg.cols * (cfg.acc_bits + cfg.mult_bits + 6)
    # per-tensor (M, S) travel with the command instead
    assert _port_width(ta, "cmd__payload") == _port_width(tb, "cmd__payload") + 16 + 6


def test_module_name(tmp_path):
    out = tmp_path / "n.v"
    assert main(["verilog", "--rows", "2", "--cols", "2", "--name", "my_acc", "-o", str(out)]) == 0
    assert re.search(r"^module my_acc\s*\(", out.read_text(), re.M)


@pytest.mark.parametrize(("args", "message"), [
    (["--rows", "0"], "ArrayConfig.rows must be in [2, 256], not 0"),
    (["--w-bits", "17"], "ArrayConfig.w_bits must be in [2, 16], not 17"),
    (["--acc-bits", "10"], "ArrayConfig.acc_bits must be in [16, 46]"),
    (["--name", "3bad"], "--name must be a Verilog identifier"),
])
def test_bad_values_are_cli_errors(tmp_path, capsys, args, message):
    out = tmp_path / "x.v"
    rc = main(["verilog", *args, "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("qaccel: error: ")
    assert message in err
    assert not out.exists()


def test_console_entry_point_reports_errors(tmp_path):
    """Through the real entry point: exit status 2 and one clean line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "qaccel", "verilog", "--cols", "300", "-o",
                           str(tmp_path / "x.v")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "qaccel: error: ArrayConfig.cols must be in [2, 256], not 300"


def test_conflicting_scaling_flags_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["verilog", "--per-channel", "--per-tensor", "-o", str(tmp_path / "x.v")])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.rtl
@pytest.mark.xdist_group("yosys")
def test_check_lints_and_synthesizes(tmp_path, capsys, require_tool):
    """``--check``: Verilator lint without errors, then a full Yosys ``synth`` (small array;
    the same Verilog as tests/rtl/test_lint_synth.py, so the synthesis cache is shared)."""
    require_tool("verilator")
    require_tool("yosys")
    out = tmp_path / "small.v"
    rc = main(["verilog", "--rows", "2", "--cols", "2", "--w-bits", "4", "--a-bits", "4",
               "--acc-bits", "16", "--mult-bits", "8", "--per-channel", "--acc-depth", "2",
               "--check", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "verilator --lint-only -Wall: 0 errors" in text
    cells = int(re.search(r"yosys synth: ok, (\d+) cells", text).group(1))
    assert cells > 100
