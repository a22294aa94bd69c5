"""SCALE-Sim compat mode against SCALE-Sim 3.0.0's own COMPUTE_REPORTs, layer by layer."""

from __future__ import annotations

import csv
import pathlib
import re

import pytest
from qaccel.sim.scalesim_compat import compat_layer, compat_network, spatial_mapping
from qaccel.sim.topology import read_topology
from qaccel.sim.workload import GemmWorkload

PEER = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "peer" / "scalesim"
REPORT_RE = re.compile(r"(?P<topo>.+)_(?P<rows>\d+)x(?P<cols>\d+)_(?P<df>ws|os|is)_COMPUTE_REPORT")
REPORTS = sorted(PEER.glob("*_COMPUTE_REPORT.csv")) if PEER.is_dir() else []


def _read_report(path: pathlib.Path) -> tuple[list[str], list[list[float]]]:
    with open(path) as f:
        rows = [r for r in csv.reader(f) if r]
    header = [h.strip() for h in rows[0] if h.strip()]
    return header, [[float(x) for x in r if x.strip()] for r in rows[1:]]


@pytest.mark.shared
def test_peer_reports_present_or_skip():
    if not PEER.is_dir():
        pytest.skip(f"{PEER} not present")
    names = {p.name for p in REPORTS}
    assert {"resnet18_32x32_ws_COMPUTE_REPORT.csv", "resnet50_32x32_ws_COMPUTE_REPORT.csv",
            "small3_8x12_os_COMPUTE_REPORT.csv", "small3_8x12_is_COMPUTE_REPORT.csv",
            "small3_8x12_ws_COMPUTE_REPORT.csv"} <= names


@pytest.mark.shared
@pytest.mark.skipif(not REPORTS, reason="../shared/peer/scalesim not present")
@pytest.mark.parametrize("report", REPORTS, ids=lambda p: p.stem)
def test_compat_matches_every_layer_of_report(report):
    m = REPORT_RE.fullmatch(report.stem)
    assert m, report.name
    rows, cols, df = int(m["rows"]), int(m["cols"]), m["df"]
    layers = read_topology(PEER / f"{m['topo']}.csv")
    header, data = _read_report(report)
    col = {h: i for i, h in enumerate(header)}
    assert len(data) == len(layers)
    for lay, row in zip(layers, data):
        c = compat_layer(rows, cols, df, lay.workload())
        where = f"{report.name} layer {lay.name}"
        assert c.cycles == int(row[col["Total Cycles"]]), where
        assert row[col["Stall Cycles"]] == 0
        assert c.overall_util == pytest.approx(row[col["Overall Util %"]], rel=1e-12), where
        assert c.mapping_efficiency == pytest.approx(row[col["Mapping Efficiency %"]],
                                                     rel=1e-12), where
        assert c.compute_util == pytest.approx(row[col["Compute Util %"]], rel=1e-12), where


@pytest.mark.shared
@pytest.mark.skipif(not REPORTS, reason="../shared/peer/scalesim not present")
def test_resnet_totals_quoted_in_peer_readme():
    r18 = compat_network(32, 32, "ws", [x.workload() for x in read_topology(PEER / "resnet18.csv")])
    r50 = compat_network(32, 32, "ws", [x.workload() for x in read_topology(PEER / "resnet50.csv")])
    readme = (PEER / "README.md").read_text()
    assert f"{r18.cycles:,}" in readme and f"{r50.cycles:,}" in readme
    # SCALE-Sim's ws keeps ResNet-50's array about 59 % busy
    assert 0.55 < r50.utilization < 0.63


def test_formula_and_mappings():
    w = GemmWorkload("g", T=196, K=72, N=20)
    assert spatial_mapping("ws", 196, 72, 20) == (72, 20, 196, 2)
    assert spatial_mapping("os", 196, 72, 20) == (196, 20, 72, 1)
    assert spatial_mapping("is", 196, 72, 20) == (72, 196, 20, 2)
    ws = compat_layer(8, 12, "ws", w)
    assert ws.folds == 9 * 2 and ws.cycles == 18 * (16 + 12 + 196 - 2) - 1
    assert compat_layer(8, 12, "os", w).cycles == 25 * 2 * (8 + 12 + 72 - 2) - 1
    rep = compat_layer(8, 12, "ws", GemmWorkload("g", 196, 72, 20, repeat=3))
    assert rep.cycles == 3 * ws.cycles and rep.macs == 3 * ws.macs
    assert rep.overall_util == pytest.approx(ws.overall_util)
    with pytest.raises(ValueError, match="dataflow must be one of"):
        compat_layer(8, 8, "rs", w)
    with pytest.raises(ValueError, match=r"SCALE-Sim array\.rows must be"):
        compat_layer(0, 8, "ws", w)
