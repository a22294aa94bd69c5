"""Mappings: the analytic cost of any mapping against the cycle model running its jobs and
transfers, the fixed nest as a mapping, compulsory traffic, and the mapper."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qaccel.sim.analytic import analyze_layer
from qaccel.sim.config import ArrayConfig
from qaccel.sim.cycle import run_mapping, simulate
from qaccel.sim.energy import counts_from_perf, layer_energy
from qaccel.sim.job import random_job
from qaccel.sim.mapper import _search, candidate_mappings, search_layer, search_mapping
from qaccel.sim.mapping import (
    INPUT_RESIDENCY,
    ORDERS,
    PARAMS_RESIDENCY,
    PSUM_RESIDENCY,
    WEIGHT_RESIDENCY,
    Mapping,
    buffer_needs,
    compulsory_bits,
    dram_bits,
    fixed_mapping,
    mapping_steps,
    plan,
)
from qaccel.sim.reference import reference_gemm
from qaccel.sim.workload import GemmWorkload, conv_workload

CAPS = ("weight_buffer_kib", "act_buffer_kib", "out_buffer_kib")


@st.composite
def layers(draw):
    """A small config, a layer (GEMM or convolution) and a valid mapping of it."""
    w_bits, a_bits = draw(st.sampled_from([4, 8, 16])), draw(st.sampled_from([4, 8, 16]))
    cfg = ArrayConfig(rows=draw(st.integers(2, 6)), cols=draw(st.integers(2, 6)),
                      w_bits=w_bits, a_bits=a_bits, acc_bits=max(32, w_bits + a_bits),
                      per_channel=draw(st.booleans()), acc_depth=draw(st.integers(1, 10)),
                      weight_buffer_kib=draw(st.integers(1, 3)),
                      act_buffer_kib=draw(st.integers(1, 3)),
                      out_buffer_kib=draw(st.integers(1, 3)))
    if draw(st.booleans()):
        w = GemmWorkload("g", draw(st.integers(1, 30)), draw(st.integers(1, 20)),
                         draw(st.integers(1, 14)))
        t_tile = draw(st.integers(1, w.T))
    else:
        k = draw(st.sampled_from([1, 2, 3]))
        d = draw(st.integers(1, 2)) if k > 1 else 1
        lo = d * (k - 1) + 1                   # the dilated kernel fits the unpadded map
        w = conv_workload("c", draw(st.integers(lo, 7)), draw(st.integers(lo, 7)),
                          draw(st.integers(1, 4)), draw(st.integers(1, 10)), k,
                          stride=draw(st.integers(1, 2)), padding=draw(st.integers(0, k - 1)),
                          dilation=d, batch=draw(st.integers(1, 2)))
        rows = w.T // w.geometry.out_w
        t_tile = draw(st.integers(1, rows)) * w.geometry.out_w
    n_tile = draw(st.integers(1, w.N))
    # K-split chains in about half the cases, sized so their sums usually fit the bank
    k_tile = draw(st.one_of(st.just(0), st.integers(1, w.K)))
    if k_tile and draw(st.booleans()):
        t_tile = min(t_tile, max(1, cfg.acc_depth // -(-n_tile // cfg.cols)))
        if w.geometry is not None and t_tile % w.geometry.out_w and t_tile != w.T:
            t_tile = w.geometry.out_w
    m = Mapping(t_tile=t_tile, n_tile=n_tile, order=draw(st.sampled_from(ORDERS)),
                weights=draw(st.sampled_from(WEIGHT_RESIDENCY)),
                inputs=draw(st.sampled_from(INPUT_RESIDENCY)), k_tile=k_tile,
                params=draw(st.sampled_from(PARAMS_RESIDENCY)),
                psums=draw(st.sampled_from(PSUM_RESIDENCY)))
    return cfg, w, m, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers())
def test_cycle_model_runs_a_mapping_like_the_analytic_model(case):
    """Whole-K and K-split mappings (chains sharing one accumulator bank, or spilling their
    sums to the output buffer; held or streamed params): the jobs give the unmapped
    layer's outputs, with cycles, jobs, MACs, DRAM bits and buffer peaks equal to the
    analytic model's, and on-chip psum traffic to what the spilled jobs move."""
    cfg, w, m, seed = case
    job = random_job(cfg, w.T, w.K, w.N, np.random.default_rng(seed))
    if m.splits(w) and not m.spills(w) and \
            min(m.t_tile, w.T) * -(-m.n_tile // cfg.cols) > cfg.acc_depth:
        with pytest.raises(ValueError, match=r"Mapping\(layer .*\)\.k_tile must be 0 .*"
                                             r"accumulator bank"):
            mapping_steps(cfg, w, m)
        return
    need = buffer_needs(cfg, w, m)
    fits = all(need[f] <= getattr(cfg, f) * 8192 for f in CAPS)
    steps = mapping_steps(cfg, w, m)
    if not fits:
        with pytest.raises(ValueError, match="ArrayConfig.*_buffer_kib.*overflows"):
            run_mapping(cfg, job, steps)
        return
    res = run_mapping(cfg, job, steps)
    whole = simulate(cfg, job)
    assert np.array_equal(res.y, whole.y)                     # same outputs as unmapped
    lp = analyze_layer(cfg, w, m)
    assert res.cycles == lp.cycles_per_job == lp.cycles       # repeat = 1
    assert res.jobs == lp.jobs
    assert res.useful_macs == lp.macs
    dram = dram_bits(cfg, w, m)
    assert res.dram_bits == {op: b for op, b in dram.items() if b}
    assert lp.traffic.reads("dram") + lp.traffic.writes("dram") == sum(dram.values())
    assert res.peak_bits == need                              # needs are exact peaks
    if m.spills(w):              # raw sums out and back: every chunk boundary, both ways
        p = plan(w, m)
        per_boundary = sum(t * -(-n // cfg.cols) * cfg.cols for t, _ in p.slabs
                           for n in p.ntiles) * cfg.acc_bits
        psums = lp.traffic["buffer", "psums"]
        assert psums.reads == psums.writes == (len(p.chunks) - 1) * per_boundary
    else:
        assert lp.traffic["buffer", "psums"].total == 0


@settings(max_examples=80, deadline=None)
@given(layers())
def test_dram_traffic_is_at_least_compulsory(case):
    cfg, w, m, _ = case
    d = dram_bits(cfg, w, m)
    assert d["weights"] + d["activations"] + d["outputs"] >= compulsory_bits(cfg, w)


def test_fixed_nest_is_a_mapping():
    cfg = ArrayConfig(rows=8, cols=8, acc_depth=16, weight_buffer_kib=1, act_buffer_kib=1)
    for w in (GemmWorkload("a", 100, 200, 40), conv_workload("b", 9, 9, 8, 20, 3, padding=1),
              GemmWorkload("c", 10, 20, 30)):
        m = fixed_mapping(cfg, w)
        assert (m.t_tile, m.n_tile) == (w.T, w.N)
        assert analyze_layer(cfg, w).traffic == analyze_layer(cfg, w, m).traffic
    # the 200 x 8 x 8 bit weight column does not fit 1 KiB: streamed per pass
    assert fixed_mapping(cfg, GemmWorkload("a", 100, 200, 40)).weights == "pass"


def test_hand_computed_slab_outer_and_n_outer():
    """T=8 (2 slabs of 4), K=4, N=8 (2 n-tiles of 4), 8-bit, array 4x4, depth 4."""
    cfg = ArrayConfig(rows=4, cols=4, acc_depth=4)
    w = GemmWorkload("h", 8, 4, 8)
    W, X, Y = 4 * 8 * 8, 8 * 4 * 8, 8 * 8 * 8
    so = Mapping(4, 4, "slab_outer", "tile", "slab")
    no = Mapping(4, 4, "n_outer", "tile", "slab")
    assert dram_bits(cfg, w, so)["weights"] == 2 * W        # once per slab
    assert dram_bits(cfg, w, so)["activations"] == X        # each slab once
    assert dram_bits(cfg, w, no)["weights"] == W            # each tile once
    assert dram_bits(cfg, w, no)["activations"] == 2 * X    # once per n-tile
    assert dram_bits(cfg, w, Mapping(4, 4, "slab_outer", "layer", "slab"))["weights"] == W
    assert dram_bits(cfg, w, Mapping(4, 4, "n_outer", "tile", "layer"))["activations"] == X
    for m in (so, no):
        assert dram_bits(cfg, w, m)["outputs"] == Y
        assert analyze_layer(cfg, w, m).jobs == 4
    # a conv slab re-reads its halo: 6x6 map, 3x3 kernel, slabs of 2 output rows of 4
    c = conv_workload("c", 6, 6, 1, 4, 3)
    m = Mapping(8, 4, "slab_outer", "tile", "slab")
    assert dram_bits(cfg, c, m)["activations"] == (4 + 4) * 6 * 8   # rows 0-3 and 2-5


def test_mapping_validation_names_the_field():
    with pytest.raises(ValueError, match="Mapping.order"):
        Mapping(1, 1, order="k_outer")
    with pytest.raises(ValueError, match="Mapping.weights"):
        Mapping(1, 1, weights="all")
    c = conv_workload("c", 6, 6, 1, 4, 3)
    with pytest.raises(ValueError, match=r"Mapping\(layer 'c'\)\.t_tile must be a multiple"):
        analyze_layer(ArrayConfig(), c, Mapping(3, 4))
    with pytest.raises(ValueError, match=r"Mapping\(layer 'c'\)\.n_tile"):
        analyze_layer(ArrayConfig(), c, Mapping(4, 5))


@pytest.mark.parametrize("objective", ["energy", "latency", "edp"])
def test_mapper_finds_the_best_fitting_candidate(objective):
    """The mapper's fast cost equals the full analytic + energy cost, and no fitting
    candidate of the space is better."""
    cfg = ArrayConfig(rows=8, cols=8, acc_depth=32, weight_buffer_kib=2, act_buffer_kib=2)
    for w in (conv_workload("c", 14, 14, 16, 40, 3, padding=1),
              conv_workload("d", 16, 16, 24, 48, 1, stride=2), GemmWorkload("g", 96, 200, 70)):
        res = search_layer(cfg, w, objective)
        costs = []
        for m in candidate_mappings(cfg, w):
            need = buffer_needs(cfg, w, m)
            if any(need[f] > getattr(cfg, f) * 8192 for f in CAPS):
                continue
            lp = analyze_layer(cfg, w, m)
            e = layer_energy(cfg, counts_from_perf(lp)).total_pj
            costs.append((m, e, lp.cycles))
        assert len(costs) == res.fitting
        best = [c for c in costs if c[0] == res.mapping][0]
        assert best[1] == pytest.approx(res.energy_pj, rel=1e-9)
        assert best[2] == res.cycles
        key = {"energy": lambda c: c[1], "latency": lambda c: c[2],
               "edp": lambda c: c[1] * c[2]}[objective]
        assert key(best) <= min(key(c) for c in costs) * (1 + 1e-9)


def test_mapper_beats_the_fixed_nest_where_it_refetches():
    """The weights fit, the input does not: the fixed nest re-reads the input for each of
    the 32 n-tiles; the searched mapping keeps the weights and streams input slabs, moving
    exactly the compulsory traffic plus the params."""
    cfg = ArrayConfig(rows=8, cols=8, acc_depth=32, weight_buffer_kib=40, act_buffer_kib=8)
    w = GemmWorkload("g", 512, 128, 256)        # input 64 KiB, weights 32 KiB
    fixed = analyze_layer(cfg, w)
    m = search_mapping(cfg, w)
    mapped = analyze_layer(cfg, w, m)
    assert fixed.acts_refetched and not mapped.acts_refetched
    assert fixed.traffic["dram", "activations"].reads == 32 * 512 * 128 * 8
    assert m.weights == "layer"
    params = mapped.traffic["dram", "params"].reads
    assert params == 256 * 32 + mapped.jobs * (16 + 6)     # bias once, (M, S) per job
    assert mapped.dram_bits - params == compulsory_bits(cfg, w)


def test_mapper_k_splits_when_no_whole_k_operand_fits():
    """Neither the 512 x 32 weights nor the 32 x 512 input fit 1 KiB: whole-K jobs re-read
    the input per 8-wide n-tile (4x); 16-wide K-split chains (32 x 2 sums in the 64-entry
    bank) hold 32-row input chunks and read the input twice, the weights once. (The 1 KiB
    output buffer cannot hold a wider chain's sums: no spilled chain.)"""
    cfg = ArrayConfig(rows=8, cols=8, acc_depth=64, weight_buffer_kib=1, act_buffer_kib=1,
                      out_buffer_kib=1)
    w = GemmWorkload("g", 32, 512, 32)
    W = X = 32 * 512 * 8
    m = search_mapping(cfg, w)
    assert m.splits(w) and m.n_tile == 16 and m.inputs == "slab" and m.order == "n_outer"
    d = dram_bits(cfg, w, m)
    assert (d["weights"], d["activations"]) == (W, 2 * X)
    whole = [dram_bits(cfg, w, c) for c in candidate_mappings(cfg, w) if not c.k_tile
             and all(b <= getattr(cfg, f) * 8192 for f, b in buffer_needs(cfg, w, c).items())]
    assert min(x["weights"] + x["activations"] for x in whole) == W + 4 * X
    lp = analyze_layer(cfg, w, m)
    assert lp.jobs == 2 * 512 // m.k_tile and lp.requant_ops == 32 * 32
    job = random_job(cfg, 32, 512, 32, np.random.default_rng(1))
    res = run_mapping(cfg, job, mapping_steps(cfg, w, m))
    assert np.array_equal(res.y, reference_gemm(cfg, job).y) and res.cycles == lp.cycles


def test_mapper_spills_partial_sums_when_the_bank_is_too_small():
    """The same layer with a 4 KiB output buffer: a chain over all 32 channels (32 x 4 bank
    entries > 64) passes its 32 x 32 sums through the output buffer (4 KiB at 32 bits):
    every weight and input read once. Its jobs send raw sums / load them, and run on the
    cycle model to the reference outputs in the analytic cycles."""
    cfg = ArrayConfig(rows=8, cols=8, acc_depth=64, weight_buffer_kib=1, act_buffer_kib=1,
                      out_buffer_kib=4, acc_bits=32)
    w = GemmWorkload("g", 32, 512, 32)
    W = X = 32 * 512 * 8
    m = search_mapping(cfg, w)
    assert m.spills(w) and m.n_tile == 32 and m.t_tile == 32
    d = dram_bits(cfg, w, m)
    assert (d["weights"], d["activations"]) == (W, X)
    assert buffer_needs(cfg, w, m)["out_buffer_kib"] == 32 * 32 * 32
    lp = analyze_layer(cfg, w, m)
    chunks = 512 // m.k_tile
    assert lp.jobs == chunks and lp.requant_ops == 32 * 32
    # every job but the last writes its raw sums, every job but the first reads them back
    psum_bits = (chunks - 1) * 32 * 32 * 32
    assert lp.traffic["buffer", "psums"].writes == psum_bits
    assert lp.traffic["buffer", "psums"].reads == psum_bits
    steps = mapping_steps(cfg, w, m)
    assert {s.psums for s in steps if s.kind == "job"} == {"spill"}
    job = random_job(cfg, 32, 512, 32, np.random.default_rng(2))
    res = run_mapping(cfg, job, steps)
    assert np.array_equal(res.y, reference_gemm(cfg, job).y) and res.cycles == lp.cycles
    assert res.peak_bits["out_buffer_kib"] == 32 * 32 * 32
    assert res.dram_bits == {op: b for op, b in d.items() if b}
    # with the bank chain's limit (acc_depth 64) and no spill, the input is read twice
    banked = search_layer(cfg.replace(out_buffer_kib=1), w).mapping
    assert dram_bits(cfg, w, banked)["activations"] == 2 * X


def test_streamed_params_free_the_weight_buffer():
    """A layer whose 8-bit weights fill the weight buffer exactly: held params do not fit
    beside them, streamed ones do -- the weights stay for the layer and the input is read
    once; every job reads its n-tile's params from DRAM (no weight-buffer traffic)."""
    cfg = ArrayConfig(rows=8, cols=8, acc_depth=64, weight_buffer_kib=2, act_buffer_kib=1,
                      per_channel=True)
    w = GemmWorkload("g", 256, 64, 32)         # weights 64 x 32 x 8 bit = 2 KiB exactly
    held = Mapping(32, 32, "slab_outer", "layer", "slab")
    streamed = Mapping(32, 32, "slab_outer", "layer", "slab", params="stream")
    assert buffer_needs(cfg, w, held)["weight_buffer_kib"] > 2 * 8192
    assert buffer_needs(cfg, w, streamed)["weight_buffer_kib"] == 2 * 8192
    m = search_mapping(cfg, w)
    assert m.params == "stream" and m.weights == "layer"
    d = dram_bits(cfg, w, m)
    assert d["weights"] == 64 * 32 * 8 and d["activations"] == 256 * 64 * 8
    lp = analyze_layer(cfg, w, m)
    pl = 32 + 16 + 6                                     # bias, M, S per channel
    assert d["params"] == lp.jobs * 32 * pl
    assert lp.traffic["buffer", "params"] == lp.traffic["buffer", "params"].__class__(0, 0)
    job = random_job(cfg, 256, 64, 32, np.random.default_rng(3))
    res = run_mapping(cfg, job, mapping_steps(cfg, w, m))
    assert np.array_equal(res.y, reference_gemm(cfg, job).y)
    assert res.peak_bits["weight_buffer_kib"] == 2 * 8192
    with pytest.raises(ValueError, match="Mapping.params"):
        Mapping(1, 1, params="fifo")
    with pytest.raises(ValueError, match="Mapping.psums"):
        Mapping(1, 1, psums="dram")


def _full_cost(cfg, w, m) -> float:
    return layer_energy(cfg, counts_from_perf(analyze_layer(cfg, w, m))).total_pj


def test_mapper_chooses_whole_channel_chunks_and_held_params_where_cheaper():
    """A 3x3 convolution's chain: the largest fitting k_tile (192) cuts an input channel,
    which is then read twice; the largest chunk of whole channels (144 = 16 x 9 taps) reads
    less and wins. And where held params fit at a smaller chunk, they beat streamed ones
    at a larger chunk (one read per chain instead of per job)."""
    cfg = ArrayConfig(rows=16, cols=16, w_bits=4, a_bits=8, per_channel=True, acc_depth=64,
                      weight_buffer_kib=4, act_buffer_kib=4, out_buffer_kib=4)
    w = conv_workload("c", 28, 28, 128, 256, 3, stride=2, padding=1)
    m = search_mapping(cfg, w)
    assert m.splits(w) and m.k_tile % 9 == 0
    cut = replace(m, k_tile=192)
    assert all(b <= getattr(cfg, f) * 8192 for f, b in buffer_needs(cfg, w, cut).items())
    assert dram_bits(cfg, w, cut)["activations"] > dram_bits(cfg, w, m)["activations"]
    assert _full_cost(cfg, w, m) < _full_cost(cfg, w, cut)
    cfg = ArrayConfig(rows=16, cols=16, acc_depth=64, weight_buffer_kib=16, act_buffer_kib=16,
                      out_buffer_kib=8)
    w = conv_workload("c", 28, 28, 128, 128, 3, padding=1)
    m = search_mapping(cfg, w)
    assert m.splits(w) and m.params == "held"


def test_streamed_params_where_they_cost_no_more_dram():
    """A single-slab layer with resident weights reads every param once either way:
    streaming them skips the weight buffer's fill and read, so the mapper streams them."""
    cfg = ArrayConfig(rows=32, cols=32, acc_depth=256)
    w = GemmWorkload("g", 128, 64, 128)
    m = search_mapping(cfg, w)
    held = replace(m, params="held")
    assert m.params == "stream" and m.t_tile == w.T
    assert dram_bits(cfg, w, m) == dram_bits(cfg, w, held)
    assert _full_cost(cfg, w, m) < _full_cost(cfg, w, held)


def test_mapper_spills_where_the_bank_costs_more_per_bit():
    """A 4096-deep bank costs more per partial-sum bit than a 4 KiB output buffer: where a
    chain's sums fit both, the spilled chain is in the space and is the cheaper one."""
    cfg = ArrayConfig(rows=8, cols=8, acc_depth=4096, weight_buffer_kib=1, act_buffer_kib=1,
                      out_buffer_kib=4)
    w = GemmWorkload("g", 32, 512, 32)
    m = search_mapping(cfg, w)
    assert m.spills(w)
    banked = [c for c in candidate_mappings(cfg, w) if c.splits(w) and not c.spills(w)
              and all(b <= getattr(cfg, f) * 8192 for f, b in buffer_needs(cfg, w, c).items())]
    assert banked and _full_cost(cfg, w, m) < min(_full_cost(cfg, w, c) for c in banked)


def test_mapper_error_names_layer_operand_and_buffer():
    cfg = ArrayConfig(rows=64, cols=64, w_bits=16, acc_bits=32, weight_buffer_kib=1)
    with pytest.raises(ValueError, match=r"layer 'L7': no mapping fits: the weights need at "
                                         r"least \d+ bits .*ArrayConfig\.weight_buffer_kib=1"):
        search_layer(cfg, GemmWorkload("L7", 100, 512, 512))
    with pytest.raises(ValueError, match="objective"):
        search_layer(ArrayConfig(), GemmWorkload("x", 4, 4, 4), "speed")


def test_mapper_caches_by_shape_and_config():
    cfg = ArrayConfig(rows=4, cols=4, acc_depth=8, weight_buffer_kib=3)
    a = search_layer(cfg, GemmWorkload("first", 37, 21, 19))
    hits = _search.cache_info().hits
    b = search_layer(cfg, GemmWorkload("second", 37, 21, 19))
    assert b is a and _search.cache_info().hits == hits + 1
    c = search_layer(cfg.replace(weight_buffer_kib=4), GemmWorkload("first", 37, 21, 19))
    assert _search.cache_info().hits == hits + 1 and c is not a
