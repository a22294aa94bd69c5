"""SCALE-Sim topology parser: both formats, conventions, and errors naming file/row/field."""

from __future__ import annotations

import pathlib

import pytest
from qaccel.sim.topology import parse_topology, read_topology, scalesim_out_size

PEER = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "peer" / "scalesim"

CONV = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
        "Num Filter, Strides,\n") + """Conv1,224,224,7,7,3,64,2,
FC,1,1,1,1,512,1000,1,
"""


def test_conv_rows_to_gemms():
    layers = parse_topology(CONV, "net.csv")
    c1, fc = layers
    assert (c1.out_h, c1.out_w) == (110, 110)               # ceil(217/2) + 1, no padding
    assert (c1.T, c1.K, c1.N) == (110 * 110, 7 * 7 * 3, 64)
    assert (fc.T, fc.K, fc.N) == (1, 512, 1000)
    w = c1.workload()
    assert (w.T, w.K, w.N, w.op) == (12100, 147, 64, "conv2d")
    assert w.input_elems == 224 * 224 * 3 and w.geometry.padding == (0, 0)


def test_gemm_format_detected_and_forced():
    text = "Layer, M, N, K,\nqk, 128, 128, 64,\npv,128,64,128,\n"
    layers = parse_topology(text, "g.csv")
    assert [(x.T, x.K, x.N) for x in layers] == [(128, 64, 128), (128, 128, 64)]
    assert all(x.gemm for x in layers)
    assert parse_topology(text, "g.csv", gemm=True)[1].workload().op == "gemm"
    with pytest.raises(ValueError, match="g.csv: row 1: header .* not a SCALE-Sim conv"):
        parse_topology(text, "g.csv", gemm=False)


def test_out_size_convention():
    assert scalesim_out_size(12, 3, 2) == 6                 # ceil(9/2) + 1
    assert scalesim_out_size(7, 7, 1) == 1


@pytest.mark.parametrize("row, match", [
    ("L1,12,12,3,3,16,40,", r"bad.csv: row 3: expected 8 fields"),
    ("L1,12,12,3,x,16,40,2,", r"bad.csv: row 3: field 'Filter Width' must be an integer"),
    ("L1,12,12,3,3,0,40,2,", r"bad.csv: row 3: field 'Channels' must be positive, not 0"),
    ("L1,12,12,3,3,16,-4,2,", r"bad.csv: row 3: field 'Num Filter' must be positive"),
    ("L1,2,12,3,3,16,4,2,", r"bad.csv: row 3: field 'Filter Height'=3 is larger"),
    (",12,12,3,3,16,4,2,", r"bad.csv: row 3: field 'Layer name' is empty"),
])
def test_malformed_rows_name_file_row_field(row, match):
    text = CONV.splitlines()[0] + "\nL0,16,16,3,3,8,20,1,\n" + row + "\n"
    with pytest.raises(ValueError, match=match):
        parse_topology(text, "bad.csv")


def test_gemm_errors_and_empty(tmp_path):
    with pytest.raises(ValueError, match=r"g.csv: row 2: field 'K' must be positive, not 0"):
        parse_topology("Layer, M, N, K,\nx, 4, 4, 0,\n", "g.csv")
    with pytest.raises(ValueError, match="empty topology"):
        parse_topology("\n\n", "e.csv")
    with pytest.raises(ValueError, match="no layers after the header"):
        parse_topology(CONV.splitlines()[0] + "\n", "h.csv")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_topology(tmp_path / "nope.csv")


@pytest.mark.shared
@pytest.mark.skipif(not PEER.is_dir(), reason="../shared/peer/scalesim not present")
@pytest.mark.parametrize("name, count", [("resnet18", 21), ("resnet50", 54), ("small3", 3),
                                         ("mobilenet", None)])
def test_peer_topologies_parse(name, count):
    layers = read_topology(PEER / f"{name}.csv")
    if count is not None:
        assert len(layers) == count
    assert all(x.T >= 1 and x.K >= 1 and x.N >= 1 for x in layers)
