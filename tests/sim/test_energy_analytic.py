"""The energy model on the analytic model's traffic (sim.analytic -> sim.energy adapter)."""

from __future__ import annotations

import numpy as np
import pytest
from qaccel.sim import ArrayConfig
from qaccel.sim.analytic import analyze_layer
from qaccel.sim.energy import (
    buffer_bytes,
    counts_from_perf,
    default_table,
    layer_energy,
    per_channel_terms,
    workloads_energy,
)
from qaccel.sim.traffic import LEVELS, OPERANDS
from qaccel.sim.workload import conv_workload, linear_workload, matmul_workload


def _net():
    return [conv_workload("conv1", 32, 32, 16, 32, 3, stride=1, padding=1),
            conv_workload("dw", 16, 16, 32, 32, 3, stride=2, padding=1, groups=32),
            linear_workload("fc", 4, 512, 100),
            matmul_workload("qk", 64, 64, 64, repeat=4)]


def test_buffer_of_each_operand():
    """The energy model prices each operand's buffer traffic at the buffer the traffic
    model charges it to (sim.traffic.BUFFER_OF)."""
    cfg = ArrayConfig(weight_buffer_kib=8, act_buffer_kib=16, out_buffer_kib=32)
    assert {op: buffer_bytes(cfg, op) // 1024 for op in OPERANDS} == \
        {"weights": 8, "params": 8, "activations": 16, "outputs": 32, "psums": 32}
    with pytest.raises(ValueError, match="operand must be one of"):
        buffer_bytes(cfg, "bias")


def test_adapter_keeps_every_bit_and_count():
    cfg = ArrayConfig(rows=8, cols=8, acc_depth=32)
    for w in _net():
        lp = analyze_layer(cfg, w)
        c = counts_from_perf(lp)
        assert c.macs == lp.macs and c.cycles == lp.cycles
        assert c.acc_updates == lp.acc_adds and c.outputs == lp.requant_ops
        for lv in LEVELS:
            for op in OPERANDS:
                assert c.b(lv, op, "read") == lp.traffic[lv, op].reads
                assert c.b(lv, op, "write") == lp.traffic[lv, op].writes


@pytest.mark.parametrize("wa", [(8, 8), (4, 8), (4, 4)])
def test_per_channel_minus_per_tensor_is_params_only(wa):
    w, a = wa
    pt = ArrayConfig(rows=16, cols=16, w_bits=w, a_bits=a, acc_depth=64)
    pc = pt.replace(per_channel=True)
    _, _, e_pt = workloads_energy(pt, _net())
    _, _, e_pc = workloads_energy(pc, _net())
    for k in e_pt.terms:
        if k not in per_channel_terms():
            assert e_pc.terms[k] == pytest.approx(e_pt.terms[k], rel=1e-12), k
    assert e_pc.total_pj > e_pt.total_pj
    diff = sum(e_pc.terms[k] - e_pt.terms[k] for k in per_channel_terms())
    assert e_pc.total_pj - e_pt.total_pj == pytest.approx(diff, rel=1e-9)


def test_fewer_bits_less_energy_on_analytic_traffic():
    res = {}
    for w, a in [(8, 8), (8, 4), (4, 8), (4, 4), (2, 8)]:
        cfg = ArrayConfig(rows=16, cols=16, w_bits=w, a_bits=a, acc_depth=64)
        _, _, tot = workloads_energy(cfg, _net())
        res[(w, a)] = tot.by_category()
    for small, big in [((4, 8), (8, 8)), ((8, 4), (8, 8)), ((4, 4), (4, 8)), ((2, 8), (4, 8))]:
        for cat in ("mac", "buffers", "dram"):
            assert res[small][cat] < res[big][cat], (small, big, cat)


def test_network_total_matches_hand_sum():
    cfg = ArrayConfig(rows=8, cols=8, acc_depth=32)
    perf, per, total = workloads_energy(cfg, _net())
    t = default_table()
    mac = sum(lp.macs for lp in perf.layers) * (t.mult_pj(8, 8) + t.add_pj(32))
    assert total.by_category()["mac"] == pytest.approx(mac)
    dram_bits = sum(lp.dram_bits for lp in perf.layers)
    dram_e = sum(v for k, v in total.terms.items() if k.startswith("dram.")) \
        + total.terms["params.dram"]
    assert dram_e == pytest.approx(dram_bits * t.dram_bit_pj())
    assert total.total_pj == pytest.approx(sum(layer_energy(cfg, counts_from_perf(lp)).total_pj
                                               for lp in perf.layers))


def test_random_shapes_per_channel_and_bits_properties():
    """On random GEMMs and arrays: per-channel differs only in params terms, and halving
    a bit-width never increases MAC, buffer or DRAM energy."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        T, K, N = (int(v) for v in rng.integers(1, 300, size=3))
        rows, cols = (int(v) for v in rng.choice([2, 4, 8, 16, 32], size=2))
        depth = int(rng.choice([8, 32, 64, 256]))
        w, a = (int(v) for v in rng.choice([4, 8, 16], size=2))
        cfg = ArrayConfig(rows=rows, cols=cols, acc_depth=depth, w_bits=w, a_bits=a,
                          acc_bits=40, weight_buffer_kib=256, act_buffer_kib=int(
                              rng.choice([16, 64, 256])), out_buffer_kib=256)
        wl = matmul_workload("g", T, K, N, repeat=int(rng.integers(1, 4)))
        e_pt = layer_energy(cfg, counts_from_perf(analyze_layer(cfg, wl)))
        pc = cfg.replace(per_channel=True)
        e_pc = layer_energy(pc, counts_from_perf(analyze_layer(pc, wl)))
        for k in e_pt.terms:
            if k not in per_channel_terms():
                assert e_pc.terms[k] == pytest.approx(e_pt.terms[k], rel=1e-12), k
        assert e_pc.total_pj > e_pt.total_pj
        small = cfg.replace(w_bits=w // 2, a_bits=a // 2)
        e_small = layer_energy(small, counts_from_perf(analyze_layer(small, wl)))
        for cat in ("mac", "buffers", "dram"):
            assert e_small.by_category()[cat] < e_pt.by_category()[cat], cat
        assert sum(e_pt.by_category().values()) == pytest.approx(e_pt.total_pj)
