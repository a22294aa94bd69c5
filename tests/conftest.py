"""Fixtures shared by the whole suite: tool requirements and a private work directory.

``require_tool(name)`` / ``require_sim(sim)`` skip a test whose external tool (Verilator,
Icarus, Yosys) or cocotb simulator is missing -- and fail it instead when
``QACCEL_REQUIRE_SIMS=1`` (``make test``), so CI cannot pass without the tools the tests
are about.
"""

from __future__ import annotations

import pytest

from qaccel import workspace


def pytest_configure(config):
    # pytest-xdist registers ``xdist_group``; declare it too so that ``-p no:xdist`` (serial
    # runs of the RTL tests) works under --strict-markers
    config.addinivalue_line("markers", "xdist_group(name): run the group on one xdist worker")


def _skip_or_fail(what: str, reason: str | None) -> None:
    if reason is None:
        return
    if workspace.tools_required():
        pytest.fail(f"{what} required (QACCEL_REQUIRE_SIMS=1): {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def require_tool():
    """``require_tool("verilator" | "icarus" | "yosys")``: the executable must be found."""
    def need(tool: str) -> None:
        _skip_or_fail(tool, workspace.current().tool_missing(tool))
    return need


@pytest.fixture
def require_sim():
    """``require_sim("icarus" | "verilator")``: cocotb benches must be able to run on it."""
    def need(sim: str) -> None:
        from qaccel.rtl_build import simulator_missing

        _skip_or_fail(sim, simulator_missing(sim))
    return need


@pytest.fixture
def tmp_workspace(tmp_path):
    """A fresh, empty work directory made current for the test (restored afterwards)."""
    before = workspace.current()
    was_default = before == workspace.Workspace.default()
    ws = workspace.use(tmp_path / "workdir")
    yield ws
    workspace.use(None if was_default else before)
