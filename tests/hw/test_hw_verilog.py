"""Verilog generation: ports as documented, and the output lints with Verilator."""

from __future__ import annotations

import re

import pytest
from qaccel.hw.generate import generate_verilog, top_ports
from qaccel.sim.config import ArrayConfig
from qaccel.sim.streams import cmd_fields, params_fields

from qaccel.rtl_build import lint_verilog


def _module_ports(text: str, name: str) -> dict[str, tuple[str, int]]:
    """``{port: (direction, width)}`` of module ``name`` in Verilog ``text``."""
    body = text[text.index(f"module {name}("):]
    body = body[:body.index("endmodule")]
    ports = {}
    for m in re.finditer(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):0\]\s+)?"
                         r"\\?([\w$]+)\s*;", body, re.M):
        ports[m.group(3)] = (m.group(1), int(m.group(2)) + 1 if m.group(2) else 1)
    return ports


@pytest.mark.parametrize("cfg", [
    ArrayConfig(),
    ArrayConfig(rows=3, cols=5, w_bits=2, a_bits=4, acc_bits=12, per_channel=True,
                acc_depth=16, dim_bits=10),
])
def test_verilog_top_ports_match_layouts(cfg):
    text = generate_verilog(cfg, name="qaccel_top")
    ports = _module_ports(text, "qaccel_top")
    listed = {name: (d, w) for name, d, w in top_ports(cfg)}
    assert ports == listed
    assert listed["cmd__payload"] == ("input", sum(b for _n, b, _s in cmd_fields(cfg)))
    assert listed["params__payload"] == ("input",
                                         cfg.cols * sum(b for _n, b, _s in params_fields(cfg)))
    assert listed["weight__payload"] == ("input", cfg.cols * cfg.w_bits)
    assert listed["act__payload"] == ("input", cfg.rows * cfg.a_bits)
    assert listed["out__payload"] == ("output", cfg.cols * cfg.a_bits)
    assert listed["psum_in__payload"] == ("input", cfg.cols * cfg.acc_bits)
    assert listed["psum_out__payload"] == ("output", cfg.cols * cfg.acc_bits)
    assert [n for n, _d, _w in top_ports(cfg)] == [
        "clk", "rst", *(f"{s}__{m}" for s in ("cmd", "weight", "act", "params", "psum_in")
                        for m in ("payload", "valid", "ready")),
        *(f"{s}__{m}" for s in ("out", "psum_out") for m in ("payload", "valid", "ready")),
        "busy"]
    for stream, d in (("cmd", "input"), ("weight", "input"), ("act", "input"),
                      ("params", "input"), ("psum_in", "input"), ("out", "output"),
                      ("psum_out", "output")):
        assert listed[f"{stream}__valid"] == (d, 1)
        assert listed[f"{stream}__ready"][0] != d
    assert listed["busy"] == ("output", 1)
    assert {"clk", "rst"} <= set(listed)


def test_generate_verilog_name_and_errors():
    assert "module my_acc(" in generate_verilog(ArrayConfig(rows=2, cols=2, acc_depth=2),
                                                  name="my_acc")
    with pytest.raises(ValueError, match=r"^generate_verilog: cfg must be an ArrayConfig"):
        generate_verilog({"rows": 2})
    with pytest.raises(ValueError,
                       match=r"^generate_verilog: name must be a Verilog identifier, not '1x'$"):
        generate_verilog(ArrayConfig(), name="1x")


@pytest.mark.parametrize("cfg", [
    ArrayConfig(),
    ArrayConfig(rows=3, cols=5, w_bits=2, a_bits=4, acc_bits=12, per_channel=True,
                a_signed=True, acc_depth=1),
])
def test_verilator_lint_has_no_errors(cfg, tmp_path, require_tool):
    """Verilator is required under QACCEL_REQUIRE_SIMS=1 (make test)."""
    require_tool("verilator")
    src = tmp_path / "qaccel_top.v"
    src.write_text(generate_verilog(cfg))
    res = lint_verilog(src)
    assert res.returncode == 0 and not res.errors, "\n".join(res.errors[:20])
