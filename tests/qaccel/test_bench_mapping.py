"""The mapping bench's pieces that need no ZigZag: the ZigZag layer and accelerator
descriptions, the cold-cache helper and the network totals."""

from __future__ import annotations

from qaccel.sim.mapper import _search, search_layer
from qaccel.sim.workload import GemmWorkload, conv_workload

from qaccel.benches.mapping import (
    BASE,
    clear_caches,
    network_costs,
    zigzag_accelerator,
    zigzag_layer,
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
