"""Analytic latency/traffic model: equality with the cycle model, stream counts, reuse policy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qaccel.sim import ArrayConfig, random_job
from qaccel.sim.analytic import analyze_layer, analyze_network, param_lane_bits
from qaccel.sim.schedule import beat_cycles, tiling
from qaccel.sim.streams import job_beats
from qaccel.sim.traffic import LEVELS, OPERANDS, Access, Traffic
from qaccel.sim.workload import GemmWorkload, conv_workload


@st.composite
def configs(draw, max_dim=12):
    rows = draw(st.integers(2, 9))
    cols = draw(st.integers(2, 9))
    w_bits = draw(st.integers(2, 8))
    a_bits = draw(st.integers(2, 8))
    acc_bits = draw(st.integers(w_bits + a_bits, 40))
    return ArrayConfig(rows=rows, cols=cols, w_bits=w_bits, a_bits=a_bits,
                       a_signed=draw(st.booleans()), acc_bits=acc_bits,
                       mult_bits=draw(st.integers(1, min(32, 62 - acc_bits))),
                       per_channel=draw(st.booleans()), acc_depth=draw(st.integers(1, 12)))


shapes = st.tuples(st.integers(1, 30), st.integers(1, 30), st.integers(1, 30))


def _cycles_by_recurrence(cfg: ArrayConfig, T: int, K: int, N: int) -> int:
    """The schedule's per-pass recurrence (not the closed form): last output beat."""
    return int(beat_cycles(cfg, T, K, N)["out"][-1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs(), shape=shapes, seed=st.integers(0, 2**31))
def test_cycles_equal_cycle_model(cfg, shape, seed):
    from qaccel.sim.cycle import simulate

    T, K, N = shape
    job = random_job(cfg, T, K, N, np.random.default_rng(seed))
    res = simulate(cfg, job)
    lp = analyze_layer(cfg, GemmWorkload("g", T, K, N))
    assert lp.cycles == res.cycles
    assert lp.busy == res.useful_macs == int(res.busy.sum())
    assert lp.utilization == pytest.approx(res.utilization, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(cfg=configs(), shape=shapes, repeat=st.integers(1, 4))
def test_cycles_equal_pass_recurrence_and_repeat(cfg, shape, repeat):
    T, K, N = shape
    lp = analyze_layer(cfg, GemmWorkload("g", T, K, N, repeat=repeat))
    per_job = _cycles_by_recurrence(cfg, T, K, N)
    assert lp.cycles_per_job == per_job
    assert lp.cycles == repeat * per_job
    assert lp.macs == repeat * T * K * N
    assert 0 < lp.utilization <= 1
    assert lp.utilization == pytest.approx(lp.macs / (cfg.rows * cfg.cols * lp.cycles))


@settings(max_examples=40, deadline=None)
@given(cfg=configs(), shape=shapes, seed=st.integers(0, 2**31))
def test_buffer_reads_equal_stream_beats(cfg, shape, seed):
    """On-chip buffer reads/writes equal the beats ``sim.streams.job_beats`` produces."""
    T, K, N = shape
    beats = job_beats(cfg, random_job(cfg, T, K, N, np.random.default_rng(seed)))
    tr = analyze_layer(cfg, GemmWorkload("g", T, K, N)).traffic
    assert tr["buffer", "weights"].reads == beats.weight.size * cfg.w_bits
    assert tr["buffer", "activations"].reads == beats.act.size * cfg.a_bits
    assert tr["buffer", "outputs"].writes == beats.out.size * cfg.a_bits
    pt = 0 if cfg.per_channel else cfg.mult_bits + 6
    assert tr["buffer", "params"].reads == beats.bias.shape[0] * cfg.cols * param_lane_bits(
        cfg) + pt
    # what reaches the PEs: every weight beat lands in a shadow row, then swaps to active
    assert tr["pe", "weights"].writes == 2 * beats.weight.size * cfg.w_bits
    # PE token slots = activation beats x all PEs
    assert tr["pe", "activations"].writes == beats.act.shape[0] * cfg.rows * cfg.cols * cfg.a_bits


@settings(max_examples=40, deadline=None)
@given(cfg=configs(), shape=shapes)
def test_traffic_structure(cfg, shape):
    T, K, N = shape
    til = tiling(cfg, T, K, N)
    lp = analyze_layer(cfg, GemmWorkload("g", T, K, N))
    tr = lp.traffic
    # partial sums never leave the chip; accumulator bank used only for K > rows
    assert tr["dram", "psums"].total == 0 and tr["buffer", "psums"].total == 0
    assert (tr["acc", "psums"].reads > 0) == (til.KT > 1)
    assert tr["acc", "psums"].reads == tr["acc", "psums"].writes
    # buffer fills are the DRAM reads; output drain is the DRAM writes
    for op in ("weights", "activations", "params"):
        assert tr["buffer", op].writes == tr["dram", op].reads
    assert tr["buffer", "outputs"].reads == tr["dram", "outputs"].writes == T * N * cfg.a_bits
    # default 64 KiB buffers hold these small jobs: every tensor crosses DRAM exactly once
    assert tr["dram", "weights"].reads == K * N * cfg.w_bits
    assert tr["dram", "activations"].reads == T * K * cfg.a_bits
    assert lp.requant_ops == til.NT * T * cfg.cols
    assert lp.acc_adds == til.NT * til.KT * T * cfg.cols


def test_bit_widths_scale_traffic():
    base = ArrayConfig(rows=8, cols=8, w_bits=8, a_bits=8, acc_bits=32, acc_depth=16)
    w = GemmWorkload("g", 100, 70, 50)
    t8 = analyze_layer(base, w).traffic
    t4 = analyze_layer(base.replace(w_bits=4), w).traffic
    a4 = analyze_layer(base.replace(a_bits=4), w).traffic
    for lv in ("pe", "buffer", "dram"):
        assert 2 * t4[lv, "weights"].reads == t8[lv, "weights"].reads
        assert t4[lv, "activations"] == t8[lv, "activations"]
        assert 2 * a4[lv, "activations"].reads == t8[lv, "activations"].reads
    assert 2 * a4["dram", "outputs"].writes == t8["dram", "outputs"].writes
    acc24 = analyze_layer(base.replace(acc_bits=24), w).traffic
    assert 24 * t8["acc", "psums"].reads == 32 * acc24["acc", "psums"].reads
    # per-channel scaling adds M (mult_bits) and S (6) per output channel
    pc = analyze_layer(base.replace(per_channel=True), w).traffic
    assert pc["dram", "params"].reads - t8["dram", "params"].reads == \
        50 * (16 + 6) - (16 + 6)
    assert pc["acc", "params"].reads > t8["acc", "params"].reads


def test_reuse_policy_spills_to_dram():
    cfg = ArrayConfig(rows=16, cols=16, acc_depth=32, weight_buffer_kib=1, act_buffer_kib=1)
    # weight column 600 x 16 x 8 bits = 9.4 KiB > 1 KiB: re-fetched per T-tile
    w = GemmWorkload("big", 200, 600, 40)
    lp = analyze_layer(cfg, w)
    til = tiling(cfg, 200, 600, 40)
    assert lp.weights_refetched and lp.acts_refetched
    assert lp.traffic["dram", "weights"].reads == til.TT * 600 * 40 * 8
    assert lp.traffic["dram", "activations"].reads == til.NT * 200 * 600 * 8
    roomy = analyze_layer(cfg.replace(weight_buffer_kib=64, act_buffer_kib=256), w)
    assert not roomy.weights_refetched and not roomy.acts_refetched
    assert roomy.traffic["dram", "weights"].reads == 600 * 40 * 8
    assert roomy.traffic["dram", "activations"].reads == 200 * 600 * 8
    assert roomy.cycles == lp.cycles                  # buffers never change timing


def test_conv_dram_counts_feature_map_not_im2col():
    cfg = ArrayConfig(rows=16, cols=16, acc_depth=64, act_buffer_kib=1024)
    w = conv_workload("c", 28, 28, 32, 64, 3, padding=1)
    lp = analyze_layer(cfg, w)
    assert (w.T, w.K, w.N) == (28 * 28, 9 * 32, 64)
    assert lp.traffic["dram", "activations"].reads == 28 * 28 * 32 * 8
    assert lp.traffic["buffer", "activations"].reads == 4 * 18 * 784 * 16 * 8


def test_grouped_conv_runs_groups_as_consecutive_jobs():
    cfg = ArrayConfig(rows=8, cols=8, acc_depth=32)
    dw = conv_workload("dw", 14, 14, 24, 24, 3, padding=1, groups=24)
    assert (dw.op, dw.repeat, dw.K, dw.N) == ("depthwise", 24, 9, 1)
    single = analyze_layer(cfg, GemmWorkload("one", dw.T, 9, 1, input_elems=14 * 14))
    lp = analyze_layer(cfg, dw)
    assert lp.cycles == 24 * single.cycles
    assert lp.traffic == single.traffic * 24
    assert lp.macs == 14 * 14 * 9 * 24


@pytest.mark.parametrize("field_, kib, cfg_kw", [
    ("weight_buffer_kib", 1, dict(rows=64, cols=64, w_bits=8)),
    ("act_buffer_kib", 1, dict(rows=64, cols=8, acc_depth=1024)),
    ("out_buffer_kib", 1, dict(rows=8, cols=64, acc_depth=1024)),
])
def test_buffer_too_small_for_one_tile(field_, kib, cfg_kw):
    cfg = ArrayConfig(**cfg_kw, **{field_: kib})
    with pytest.raises(ValueError, match=rf"layer 'L3'.*ArrayConfig\.{field_}=1"):
        analyze_layer(cfg, GemmWorkload("L3", 4096, 512, 512))


def test_dimension_beyond_dim_bits():
    cfg = ArrayConfig(dim_bits=8)
    with pytest.raises(ValueError, match="layer 'x'.*T=300.*dim_bits=8"):
        analyze_layer(cfg, GemmWorkload("x", 300, 4, 4))


def test_network_totals_and_serialisation():
    cfg = ArrayConfig(rows=8, cols=8, acc_depth=16)
    ws = [GemmWorkload("a", 50, 30, 20), conv_workload("b", 8, 8, 4, 8, 3, padding=1)]
    net = analyze_network(cfg, ws)
    assert net.cycles == sum(analyze_layer(cfg, w).cycles for w in ws)
    assert net.macs == 50 * 30 * 20 + 64 * 36 * 8
    d = net.to_dict()
    assert set(d["totals"]["traffic_bits"]) == set(LEVELS)
    assert set(d["layers"][0]["traffic_bits"]["dram"]) == set(OPERANDS)
    assert d["totals"]["dram_bits"] == sum(lp.dram_bits for lp in net.layers)
    assert isinstance(net.traffic, Traffic)
    with pytest.raises(ValueError, match="no layers"):
        analyze_network(cfg, [])


# ---- vector unit ----------------------------------------------------------------------

def _encoder_vectors(batch: int, seq: int, hidden: int = 16, heads: int = 2):
    """The vector-unit layers of a small encoder layer, by shape (as a network describes
    them): softmax per head, residual add, LayerNorm, GELU table."""
    from qaccel.sim.workload import VectorWorkload

    tok, sc = (batch, seq, hidden), (batch, heads, seq, seq)
    return [VectorWorkload("sm", "softmax", (sc,), sc),
            VectorWorkload("res", "add", (tok, tok), tok),
            VectorWorkload("ln", "layernorm", (tok,), tok, params=2 * hidden),
            VectorWorkload("act", "lut", ((batch, seq, 4 * hidden),), (batch, seq, 4 * hidden))]


def test_vector_cycles_are_ops_over_lanes_and_traffic_is_elements_times_bits():
    from qaccel.sim.analytic import analyze_vector
    from qaccel.sim.workload import VectorWorkload

    v = VectorWorkload("ln", "layernorm", ((3, 5, 16),), (3, 5, 16), params=32,
                       in_bits=(12,), out_bits=6)
    for cfg, lanes in ((ArrayConfig(rows=4, cols=8), 8),
                       (ArrayConfig(rows=4, cols=8, vector_lanes=5), 5)):
        vp = analyze_vector(cfg, v)
        assert vp.lanes == lanes and vp.ops == v.cost.ops
        assert vp.cycles == -(-vp.ops // lanes) and (vp.cycles - 1) * lanes < vp.ops
        assert vp.traffic["buffer", "activations"].reads == 3 * 5 * 16 * 12
        assert vp.traffic["buffer", "params"].reads == 32 * cfg.acc_bits
        assert vp.traffic["buffer", "outputs"].writes == 3 * 5 * 16 * 6
        assert vp.traffic.total("dram") == 0 and vp.traffic.total("pe") == 0
    # without widths of its own a workload takes the array's a_bits
    cfg = ArrayConfig(a_bits=5)
    vp = analyze_vector(cfg, VectorWorkload("a", "add", ((2, 7), (2, 7)), (2, 7)))
    assert vp.traffic["buffer", "activations"].reads == 2 * 14 * 5
    assert vp.traffic["buffer", "outputs"].writes == 14 * 5


def test_vector_costs_scale_with_batch_and_tokens():
    from qaccel.sim.analytic import analyze_vector
    from qaccel.sim.vector import VECTOR_OPS

    cfg = ArrayConfig(rows=8, cols=8)
    ops = {(b, s): [analyze_vector(cfg, v) for v in _encoder_vectors(b, s)]
           for b, s in ((1, 6), (3, 6), (1, 12))}
    for one, three in zip(ops[1, 6], ops[3, 6]):               # batch: every count x3
        assert three.ops == 3 * one.ops and three.writes == 3 * one.writes
        assert three.cycles >= 3 * one.cycles - 2
    for one, two in zip(ops[1, 6][1:], ops[1, 12][1:]):       # per-token ops: x2
        params = one.traffic["buffer", "params"].reads             # LayerNorm's gamma, beta
        assert params == (2 * 16 * cfg.acc_bits if one.kind == "layernorm" else 0)
        assert two.ops == 2 * one.ops and two.buffer_bits - params == 2 * (
            one.buffer_bits - params)
    # softmax: seq x seq scores per head, a per-row division: ops(2s) = 4 ops(s) - 2 b s
    sm1, sm2 = ops[1, 6][0], ops[1, 12][0]
    per_row = VECTOR_OPS["softmax"]["per_row"] * 2 * 6         # heads x rows at seq 6
    assert sm2.ops == 4 * sm1.ops - 2 * per_row
    assert sm2.writes == 4 * sm1.writes


def test_network_cycles_include_the_serialized_vector_unit():
    cfg = ArrayConfig(rows=8, cols=8, acc_depth=32)
    gemms = [GemmWorkload("q", 6, 16, 16), GemmWorkload("ff", 6, 16, 64)]
    plain = analyze_network(cfg, gemms)
    both = analyze_network(cfg, gemms, vectors=_encoder_vectors(1, 6))
    assert plain.vectors == () and plain.vector_cycles == 0
    assert both.array_cycles == plain.cycles
    assert both.cycles == plain.cycles + sum(v.cycles for v in both.vectors) > plain.cycles
    assert both.utilization < plain.utilization
    assert both.traffic.total("dram") == plain.traffic.total("dram")
    assert both.traffic.total("buffer") == plain.traffic.total("buffer") + sum(
        v.buffer_bits for v in both.vectors)
    doc = both.to_dict()
    assert [r["kind"] for r in doc["vector_unit"]] == ["softmax", "add", "layernorm", "lut"]
    assert doc["totals"]["vector_cycles"] == both.vector_cycles
    # more lanes, fewer vector cycles; the array's cycles do not change
    wide = analyze_network(cfg.replace(vector_lanes=64), gemms, vectors=_encoder_vectors(1, 6))
    assert wide.array_cycles == plain.cycles and wide.vector_cycles < both.vector_cycles


@pytest.mark.parametrize("value", [-1, 4097, 2.5, True])
def test_bad_vector_lanes_is_a_value_error_naming_the_field(value):
    with pytest.raises(ValueError, match="ArrayConfig.vector_lanes"):
        ArrayConfig(vector_lanes=value)


def test_vector_lanes_default_to_columns_and_do_not_change_the_rtl():
    cfg = ArrayConfig(rows=4, cols=12)
    assert cfg.vector_unit_lanes == 12 and cfg.replace(cols=6).vector_unit_lanes == 6
    assert cfg.replace(vector_lanes=3).vector_unit_lanes == 3
    assert cfg.replace(vector_lanes=3).rtl_key() == cfg.rtl_key()
    assert ArrayConfig.from_dict(cfg.replace(vector_lanes=3).to_dict()).vector_lanes == 3


@pytest.mark.parametrize("field, value", [("in_shapes", ()), ("out_shape", (0, 3)),
                                          ("kind", "conv2d"), ("in_bits", (8, 8))])
def test_bad_vector_workload_names_the_field(field, value):
    from qaccel.sim.workload import VectorWorkload

    kw = {"name": "v", "kind": "lut", "in_shapes": ((2, 3),), "out_shape": (2, 3)}
    kw[field] = value
    with pytest.raises(ValueError, match=f"VectorWorkload\\('v'\\).{field}"):
        VectorWorkload(**kw)


def test_embedding_rows_are_fetched_from_dram():
    """An embedding table is a network parameter too large for a buffer: every looked-up
    element crosses DRAM once (params), the other vector kinds never touch DRAM."""
    from qaccel.sim.analytic import TABLE_KINDS, analyze_vector
    from qaccel.sim.workload import VectorWorkload

    cfg = ArrayConfig(rows=4, cols=4)
    for kind in TABLE_KINDS:
        vp = analyze_vector(cfg, VectorWorkload("e", kind, ((2, 9),), (2, 9, 32),
                                                in_bits=(16,), out_bits=6))
        assert vp.traffic["dram", "params"].reads == 2 * 9 * 32 * 6
        assert vp.traffic["buffer", "params"] == Access(2 * 9 * 32 * 6, 2 * 9 * 32 * 6)
        assert vp.traffic["buffer", "activations"].reads == 2 * 9 * 16
