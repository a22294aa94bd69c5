"""``qaccel demo``: cycle model and RTL agree on a random quantized GEMM."""

from __future__ import annotations

import re

import pytest
from qaccel.sim import ArrayConfig
from qaccel.sim.schedule import gemm_cycles

from qaccel.cli import main


@pytest.mark.rtl
@pytest.mark.xdist_group("rtl-icarus-default")
def test_demo_agrees_on_icarus(capsys, require_sim):
    require_sim("icarus")
    T, K, N = 13, 9, 6
    rc = main(["demo", "--sim", "icarus", "-T", str(T), "-K", str(K), "-N", str(N),
               "--seed", "7"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "AGREE" in out and "DISAGREE" not in out
    cycles = gemm_cycles(ArrayConfig(), T, K, N)          # independent closed form
    assert re.search(rf"^rtl\s+{cycles} cycles, {-(-N // 4) * T} output beats", out, re.M), out
    assert re.search(rf"^model\s+{cycles} cycles", out, re.M), out
    assert f"all {T * N} output integers identical" in out
    util = float(re.search(r"utilization ([\d.]+)%", out).group(1))
    assert 0 < util <= 100


def test_demo_rejects_bad_shape(cli_error):
    assert "argument -T: must be a positive integer, not 0" in cli_error(
        ["demo", "--sim", "icarus", "-T", "0"])


def test_demo_rejects_bad_config(cli_error):
    assert "ArrayConfig.rows must be in [2, 256], not 1" in cli_error(["demo", "--rows", "1"])
