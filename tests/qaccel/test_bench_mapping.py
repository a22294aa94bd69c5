"""The mapping bench's pieces that need no ZigZag: the ZigZag layer and accelerator
descriptions, the cold-cache helper, the network totals, and the choice and weighting of the
ResNet-50 layers ZigZag runs on."""

from __future__ import annotations

import pytest
from qaccel.sim.mapper import _search, search_layer
from qaccel.sim.workload import GemmWorkload, conv_workload

from qaccel.benches.mapping import (
    BASE,
    ZIGZAG_R50_DEFAULT,
    clear_caches,
    layers_above,
    network_costs,
    weighted_totals,
    zigzag_accelerator,
    zigzag_layer,
    zigzag_threshold,
)


def test_zigzag_layer_describes_strided_padded_convolution():
    w = conv_workload("c", 9, 11, 4, 8, 3, stride=2, padding=1, batch=2)
    d = zigzag_layer(3, w, BASE.replace(w_bits=4))
    assert dict(zip(d["loop_dims"], d["loop_sizes"])) == {
        "B": 2, "K": 8, "C": 4, "OY": 5, "OX": 6, "FY": 3, "FX": 3}
    assert d["dimension_relations"] == ["ix=2*ox+1*fx", "iy=2*oy+1*fy"]
    assert d["pr_loop_sizes"] == [11, 9] and d["padding"] == [[1, 1], [1, 1]]
    assert d["operand_precision"] == {"W": 4, "I": 8, "O": 32, "O_final": 8}
    g = zigzag_layer(0, GemmWorkload("fc", 7, 512, 100), BASE)
    assert dict(zip(g["loop_dims"], g["loop_sizes"]))["OX"] == 7


def test_zigzag_accelerator_has_the_configured_buffers():
    cfg = BASE.replace(weight_buffer_kib=32, act_buffer_kib=128)
    acc = zigzag_accelerator(cfg)
    mem = acc["memories"]
    assert mem["w_buf"]["size"] == 32 * 8192 and mem["a_buf"]["size"] == 128 * 8192
    assert mem["o_buf"]["size"] == 64 * 8192
    assert acc["operational_array"]["sizes"] == [cfg.cols, cfg.rows]
    # a bigger SRAM costs more per access
    assert mem["a_buf"]["r_cost"] > mem["w_buf"]["r_cost"]


def test_clear_caches_makes_the_search_cold_and_costs_add_up():
    w = GemmWorkload("g", 300, 200, 100)
    search_layer(BASE, w)
    assert _search.cache_info().currsize > 0
    clear_caches()
    assert _search.cache_info().currsize == 0
    ws = [w, conv_workload("c", 14, 14, 16, 32, 3, padding=1)]
    s = network_costs(BASE, ws, "search")
    f = network_costs(BASE, ws, "fixed")
    assert s["comp"] == f["comp"] and len(s["layers"]) == 2
    assert s["pj"] <= f["pj"]


def test_whole_k_costs_leave_out_the_chains():
    """Where only K-split chains keep an input chunk (8x8 array, 1 KiB buffers), the
    bench's whole-K search moves more DRAM and costs more than the search."""
    from qaccel.sim.config import ArrayConfig

    from qaccel.benches.mapping import whole_k_costs

    cfg = ArrayConfig(rows=8, cols=8, acc_depth=64, weight_buffer_kib=1, act_buffer_kib=1)
    ws = [GemmWorkload("g", 32, 512, 32)]
    s, whole = network_costs(cfg, ws, "search"), whole_k_costs(cfg, ws)
    assert whole["dram"] - s["dram"] >= 2 * 32 * 512 * 8 - 32 * 8 * 22   # input read 2x less
    assert whole["pj"] > s["pj"]


def test_zigzag_threshold_parses_the_environment_value():
    assert zigzag_threshold(None) == zigzag_threshold(" ") == ZIGZAG_R50_DEFAULT
    assert zigzag_threshold("OFF") is None
    assert zigzag_threshold("0") == 0.0 and zigzag_threshold("1.25") == 1.25
    for bad in ("-1", "nan", "inf", "1.1x"):
        with pytest.raises(ValueError, match="QACCEL_ZIGZAG_RESNET50"):
            zigzag_threshold(bad)


def test_layers_above_groups_identical_shapes_and_weights_by_count():
    conv = [conv_workload(f"c{i}", 14, 14, 64, 64, 3, padding=1) for i in range(3)]
    strided = conv_workload("s", 14, 14, 64, 64, 3, stride=2, padding=1)
    ws = [conv[0], GemmWorkload("g", 49, 64, 32), conv[1], strided, conv[2]]
    net = network_costs(BASE.replace(act_buffer_kib=8, weight_buffer_kib=8), ws, "fixed")
    ratios = [L["dram_bits"] / L["compulsory_bits"] for L in net["layers"]]
    groups = layers_above(ws, net["layers"], 0.0)     # every layer
    assert [(g.workload.name, g.names) for g in groups] == [
        ("c0", ("c0", "c1", "c2")), ("g", ("g",)), ("s", ("s",))]
    assert groups[0].report is net["layers"][0] and groups[0].count == 3
    # only the layers strictly above the threshold
    cut = ratios[1]
    above = layers_above(ws, net["layers"], cut)
    assert 0 < len(above) < len(groups)               # the cut leaves some layers out
    assert {n for g in above for n in g.names} == {
        w.name for w, r in zip(ws, ratios) if r > cut}
    # weighted totals count each group's layers
    rows = [{"dram": g.report["dram_bits"], "comp": g.report["compulsory_bits"]}
            for g in groups]
    tot = weighted_totals(groups, rows)
    assert tot["dram"] == sum(L["dram_bits"] for L in net["layers"])
    assert tot["comp"] == net["comp"]
    with pytest.raises(ValueError, match="rows"):
        weighted_totals(groups, rows[:1])
    with pytest.raises(ValueError, match="layers"):
        layers_above(ws, net["layers"][:2], 1.0)


def test_weights_filling_the_buffer_stay_resident_with_streamed_params():
    """64 KiB of 8-bit weights fill the 64 KiB weight buffer; held params would overflow
    it, so the search streams the params (per job, DRAM -> parameter FIFO) and keeps the
    weights for the layer: weights and input read once."""
    from qaccel.sim.mapper import search_layer
    from qaccel.sim.mapping import buffer_needs, dram_bits

    edge = GemmWorkload("e", 784, 512, 128)
    cap = BASE.weight_buffer_kib * 8192
    assert edge.K * edge.N * BASE.w_bits == cap
    m = search_layer(BASE, edge).mapping
    assert m.weights == "layer" and m.params == "stream"
    assert buffer_needs(BASE, edge, m)["weight_buffer_kib"] == cap
    d = dram_bits(BASE, edge, m)
    assert d["weights"] == cap and d["activations"] == edge.input_elems * BASE.a_bits
