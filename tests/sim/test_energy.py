"""Energy model: table anchors, scaling laws, file validation, monotonicity, per-channel."""

from __future__ import annotations

import json
import math

import pytest
from qaccel.sim import ArrayConfig
from qaccel.sim.energy import (
    CATEGORIES,
    DEFAULT_TABLE_PATH,
    EnergyTableError,
    LayerCounts,
    default_table,
    extrapolated_buffers,
    layer_energy,
    load_table,
    network_energy,
    per_channel_terms,
)
from qaccel.sim.schedule import tiling


def gemm_counts(cfg: ArrayConfig, T: int, K: int, N: int, name: str = "g") -> LayerCounts:
    """A width-proportional traffic record for one GEMM (test fixture, independent of
    ``sim.analytic``; the product's counts come from the analytic model)."""
    til = tiling(cfg, T, K, N)
    w, a, acc = cfg.w_bits, cfg.a_bits, cfg.acc_bits
    R, C = cfg.rows, cfg.cols
    slots = til.NT * til.KT * T * R * C
    ms = cfg.mult_bits + 6
    lane = acc + (ms if cfg.per_channel else 0)
    vec = til.NT * T
    bits = {
        "pe.weights.write": 2 * til.passes * R * C * w,
        "pe.weights.read": slots * w,
        "pe.activations.write": slots * a,
        "pe.activations.read": slots * a,
        "pe.psums.write": slots * acc,
        "pe.psums.read": slots * acc,
        "acc.psums.read": vec * (til.KT - 1) * C * acc,
        "acc.psums.write": vec * (til.KT - 1) * C * acc,
        "acc.params.read": vec * C * acc + vec * ms * (C if cfg.per_channel else 1),
        "acc.params.write": til.NT * C * lane,
        "buffer.weights.read": til.passes * R * C * w,
        "buffer.weights.write": K * N * w,
        "buffer.activations.read": til.NT * til.KT * T * R * a,
        "buffer.activations.write": T * K * a,
        "buffer.outputs.write": vec * C * a,
        "buffer.outputs.read": T * N * a,
        "buffer.params.read": til.NT * C * lane + (0 if cfg.per_channel else ms),
        "buffer.params.write": N * lane + (0 if cfg.per_channel else ms),
        "dram.weights.read": K * N * w,
        "dram.activations.read": T * K * a,
        "dram.outputs.write": T * N * a,
        "dram.params.read": N * lane + (0 if cfg.per_channel else ms),
    }
    return LayerCounts(name=name, macs=T * K * N, acc_updates=vec * til.KT * C,
                       outputs=vec * C, cycles=0, bits=bits)


# ---- table anchors -------------------------------------------------------------------

def test_default_table_reproduces_horowitz_anchors():
    t = default_table()
    assert t.add_pj(8) == pytest.approx(0.03)
    assert t.add_pj(32) == pytest.approx(0.1)
    assert t.mult_pj(8, 8) == pytest.approx(0.2)
    assert t.mult_pj(32, 32) == pytest.approx(3.1)
    for size, e64 in ((8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0)):
        assert t.sram_bit_pj(size) * 64 == pytest.approx(e64)
    assert t.dram_64b_range == (1300.0, 2600.0)
    assert t.dram_64b_range[0] <= t.dram_bit_pj() * 64 <= t.dram_64b_range[1]


@pytest.mark.parametrize("use, expect", [("low", 1300.0), ("high", 2600.0), ("mid", 1950.0)])
def test_dram_point_selection(tmp_path, use, expect):
    data = json.loads(DEFAULT_TABLE_PATH.read_text())
    data["dram_64b"]["use"] = use
    p = tmp_path / "t.json"
    p.write_text(json.dumps(data))
    assert load_table(p).dram_bit_pj() * 64 == pytest.approx(expect)


def test_scaling_laws_are_monotone_and_positive():
    t = default_table()
    adds = [t.add_pj(b) for b in range(1, 65)]
    assert all(x > 0 for x in adds) and all(b > a for a, b in zip(adds, adds[1:]))
    # adders are affine in width: equal steps
    assert t.add_pj(16) - t.add_pj(12) == pytest.approx(t.add_pj(28) - t.add_pj(24))
    # multipliers follow the product w*a, not the individual widths
    assert t.mult_pj(4, 8) == pytest.approx(t.mult_pj(8, 4))
    assert t.mult_pj(2, 16) == pytest.approx(t.mult_pj(4, 8))
    prods = [t.mult_pj(w, a) for w, a in ((2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16),
                                          (16, 16), (32, 16), (32, 32))]
    assert all(b > a for a, b in zip(prods, prods[1:]))
    # close to linear in w*a between the anchors (exponent ln(15.5)/ln(16))
    beta = math.log(3.1 / 0.2) / math.log(16)
    assert t.mult_pj(16, 16) == pytest.approx(0.2 * 4 ** beta)
    sizes = [256, 1024, 8192, 16384, 32768, 65536, 1 << 20, 1 << 24]
    srams = [t.sram_bit_pj(s) for s in sizes]
    assert all(b > a for a, b in zip(srams, srams[1:]))
    # between 8 KB and 32 KB the law is a power law: the geometric mean at 16 KB
    assert t.sram_bit_pj(16384) * 64 == pytest.approx(math.sqrt(10.0 * 20.0))
    # below 8 KB extrapolated with the first segment's exponent (0.5), and reported
    assert t.sram_bit_pj(2048) * 64 == pytest.approx(5.0)
    assert t.sram_extrapolated(2048) and t.sram_extrapolated(2 << 20)
    assert not t.sram_extrapolated(8192) and not t.sram_extrapolated(1 << 20)
    cfg = ArrayConfig(weight_buffer_kib=4, act_buffer_kib=64, out_buffer_kib=2048)
    assert extrapolated_buffers(cfg, t) == ["weight_buffer_kib", "out_buffer_kib"]


# ---- file validation -----------------------------------------------------------------

def _write(tmp_path, mutate):
    data = json.loads(DEFAULT_TABLE_PATH.read_text())
    mutate(data)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    return p


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("mult"), "mult"),
    (lambda d: d["add"].update({"32": -1}), "add.32"),
    (lambda d: d["add"].update({"32": 0.01}), "add"),
    (lambda d: d["sram_read_64b"].update({"big": 3}), "sram_read_64b"),
    (lambda d: d.update({"register_bit": "cheap"}), "register_bit"),
    (lambda d: d["dram_64b"].update({"use": "typical"}), "dram_64b.use"),
    (lambda d: d.update({"dram_64b": {"low": 2600, "high": 1300}}), "dram_64b"),
    (lambda d: d.update({"colour": "blue"}), "colour"),
    (lambda d: d.update({"unit": "nJ"}), "unit"),
    (lambda d: d.update({"mult": {"8": 0.2}}), "mult"),
    (lambda d: d.update({"version": 2}), "'version' must be 1"),
    (lambda d: d.update({"version": "1"}), "'version' must be 1"),
    (lambda d: d.update({"version": True}), "'version' must be 1"),
    (lambda d: d.update({"format": "other-table"}), "'format' must be"),
])
def test_table_validation_names_file_and_field(tmp_path, mutate, field):
    p = _write(tmp_path, mutate)
    with pytest.raises(EnergyTableError) as exc:
        load_table(p)
    assert str(p) in str(exc.value)
    assert field in str(exc.value)


def test_table_not_json_and_missing_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{ not json")
    with pytest.raises(EnergyTableError, match="not valid JSON"):
        load_table(p)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_table(tmp_path / "nope.json")


def test_custom_table_changes_energy(tmp_path):
    cfg = ArrayConfig(rows=8, cols=8)
    c = gemm_counts(cfg, 50, 40, 30)
    p = _write(tmp_path, lambda d: d["mult"].update({"8": 0.4, "32": 6.2}))
    e_def = layer_energy(cfg, c)
    e_new = layer_energy(cfg, c, load_table(p))
    assert e_new.terms["mac.mult"] == pytest.approx(2 * e_def.terms["mac.mult"])
    assert e_new.terms["requant.mult"] == pytest.approx(2 * e_def.terms["requant.mult"])
    assert e_new.terms["dram.weights"] == e_def.terms["dram.weights"]


# ---- counts ----------------------------------------------------------------------------

def test_layer_counts_validation():
    with pytest.raises(ValueError, match="LayerCounts.macs"):
        LayerCounts(name="x", macs=-1, acc_updates=0, outputs=0)
    with pytest.raises(ValueError, match="sram.weights.read"):
        LayerCounts(name="x", macs=1, acc_updates=0, outputs=0,
                    bits={"sram.weights.read": 8})
    with pytest.raises(ValueError, match=r"bits\['dram.activations.read'\]"):
        LayerCounts(name="x", macs=1, acc_updates=0, outputs=0,
                    bits={"dram.activations.read": 1.5})


# ---- monotonicity --------------------------------------------------------------------

BITS = [(8, 8), (8, 4), (4, 8), (4, 4), (2, 8), (2, 4), (2, 2)]


@pytest.mark.parametrize("per_channel", [False, True])
def test_fewer_bits_less_mac_buffer_dram_energy(per_channel):
    shape = (196, 1152, 256)
    cats = {}
    for w, a in BITS:
        cfg = ArrayConfig(rows=16, cols=16, w_bits=w, a_bits=a, acc_bits=32,
                          per_channel=per_channel, acc_depth=64)
        e = layer_energy(cfg, gemm_counts(cfg, *shape))
        cats[(w, a)] = (e.by_category(), e.terms, e.total_pj)
    for (w1, a1) in BITS:
        for (w2, a2) in BITS:
            if (w2, a2) == (w1, a1) or w2 > w1 or a2 > a1:
                continue
            big, small = cats[(w1, a1)], cats[(w2, a2)]
            assert small[0]["mac"] < big[0]["mac"]
            assert small[0]["buffers"] < big[0]["buffers"]
            assert small[0]["dram"] < big[0]["dram"]
            assert small[2] < big[2]
            if w2 < w1:
                assert small[1]["dram.weights"] < big[1]["dram.weights"]
            if a2 < a1:
                assert small[1]["dram.activations"] < big[1]["dram.activations"]
                assert small[1]["dram.outputs"] < big[1]["dram.outputs"]


def test_requantizer_cost_follows_mult_and_acc_bits():
    base = ArrayConfig(rows=8, cols=8, acc_bits=32, mult_bits=16)
    c = gemm_counts(base, 64, 64, 64)

    def rq(cfg):
        return layer_energy(cfg, c).by_category()["requant"]

    assert rq(base.replace(mult_bits=8)) < rq(base) < rq(base.replace(mult_bits=24))
    assert rq(base.replace(acc_bits=20)) < rq(base) < rq(base.replace(acc_bits=40))
    # and not with the MAC widths
    assert rq(base.replace(w_bits=4)) == pytest.approx(rq(base))


def test_acc_bits_drive_mac_add_and_accumulator():
    c16 = ArrayConfig(rows=8, cols=8, acc_bits=16)
    c32 = c16.replace(acc_bits=32)
    counts = gemm_counts(c32, 64, 256, 64)
    e16, e32 = layer_energy(c16, counts), layer_energy(c32, counts)
    assert e16.terms["mac.add"] < e32.terms["mac.add"]
    assert e16.terms["acc.add"] < e32.terms["acc.add"]
    assert e16.terms["mac.mult"] == pytest.approx(e32.terms["mac.mult"])


# ---- per-channel vs per-tensor -------------------------------------------------------

@pytest.mark.parametrize("shape, rows, cols", [((49, 4608, 512), 16, 16), ((7, 9, 3), 4, 4),
                                               ((128, 768, 3072), 32, 32)])
def test_per_channel_costs_exactly_the_modelled_terms(shape, rows, cols):
    pt = ArrayConfig(rows=rows, cols=cols, per_channel=False)
    pc = pt.replace(per_channel=True)
    c_pt, c_pc = gemm_counts(pt, *shape), gemm_counts(pc, *shape)
    e_pt, e_pc = layer_energy(pt, c_pt), layer_energy(pc, c_pc)
    assert set(e_pt.terms) == set(e_pc.terms)
    extra = per_channel_terms()
    for k in e_pt.terms:
        if k not in extra:
            assert e_pc.terms[k] == e_pt.terms[k], k
    diff = sum(e_pc.terms[k] - e_pt.terms[k] for k in extra)
    assert e_pc.total_pj - e_pt.total_pj == pytest.approx(diff, rel=1e-12)
    assert e_pc.total_pj > e_pt.total_pj
    # each term is the extra (M, S) bits times that level's energy per bit
    t = default_table()
    ms = pt.mult_bits + 6
    N = shape[2]
    assert e_pc.terms["params.dram"] - e_pt.terms["params.dram"] == pytest.approx(
        (N - 1) * ms * t.dram_bit_pj())
    nt, vec = -(-N // cols), -(-N // cols) * shape[0]
    d_acc = (vec * ms * (cols - 1) + nt * cols * ms) * t.register_bit
    assert e_pc.terms["params.acc"] - e_pt.terms["params.acc"] == pytest.approx(d_acc)
    buf = 1024 * pt.weight_buffer_kib
    d_buf = (nt * cols * ms - ms) * t.sram_bit_pj(buf) + (N * ms - ms) * t.sram_bit_pj(buf, True)
    assert e_pc.terms["params.buffer"] - e_pt.terms["params.buffer"] == pytest.approx(d_buf)


def test_per_channel_overhead_grows_with_mult_bits():
    pc = ArrayConfig(rows=16, cols=16, per_channel=True, mult_bits=8)

    def over(cfg):
        pt = cfg.replace(per_channel=False)
        e_pc = layer_energy(cfg, gemm_counts(cfg, 100, 100, 100))
        e_pt = layer_energy(pt, gemm_counts(pt, 100, 100, 100))
        return e_pc.total_pj - e_pt.total_pj

    assert 0 < over(pc) < over(pc.replace(mult_bits=16)) < over(pc.replace(mult_bits=24))


# ---- aggregation ---------------------------------------------------------------------

def test_network_total_is_sum_of_layers_and_categories():
    cfg = ArrayConfig(rows=8, cols=8)
    layers = [gemm_counts(cfg, 10 * i + 1, 30, 20 + i, name=f"l{i}") for i in range(4)]
    per, total = network_energy(cfg, layers)
    assert [p.name for p in per] == ["l0", "l1", "l2", "l3"]
    assert total.total_pj == pytest.approx(sum(p.total_pj for p in per))
    assert total.macs == sum(c.macs for c in layers)
    cats = total.by_category()
    assert tuple(cats) == CATEGORIES
    assert sum(cats.values()) == pytest.approx(total.total_pj)
    assert all(v > 0 for c, v in cats.items() if c != "vector")
    assert cats["vector"] == 0.0                      # GEMM layers only


# ---- vector unit ----------------------------------------------------------------------

def test_vector_op_mix_covers_every_vector_op_and_sums_to_its_count():
    from qaccel.sim.energy import VECTOR_OP_MIX
    from qaccel.sim.vector import VECTOR_OPS

    assert set(VECTOR_OP_MIX) == set(VECTOR_OPS)
    for kind, terms in VECTOR_OPS.items():
        assert set(VECTOR_OP_MIX[kind]) == set(terms), kind
        for term, n in terms.items():
            assert sum(VECTOR_OP_MIX[kind][term].values()) == n, (kind, term)


def _vector_perf(cfg, kind, shape, **kw):
    from qaccel.sim.analytic import analyze_vector
    from qaccel.sim.workload import VectorWorkload

    n_in = 2 if kind == "add" else 1
    return analyze_vector(cfg, VectorWorkload("v", kind, (shape,) * n_in, shape, **kw))


def test_vector_energy_prices_each_operation_class_and_scales_with_elements():
    from qaccel.sim.energy import vector_energy, vector_op_pj

    cfg = ArrayConfig(rows=8, cols=8)
    t = default_table()
    pj = vector_op_pj(cfg, t)
    e = vector_energy(cfg, _vector_perf(cfg, "add", (4, 10, 16)), t)
    n = 4 * 10 * 16
    assert e.terms["vector.mult"] == pytest.approx(2 * n * t.mult_pj(cfg.acc_bits,
                                                                     cfg.mult_bits))
    assert e.terms["vector.shift"] == pytest.approx(n * pj["shift"])
    assert e.terms["vector.regs"] == pytest.approx(7 * n * cfg.acc_bits * t.register_bit)
    assert e.terms["vector.buffer"] == pytest.approx(
        2 * n * 8 * t.sram_bit_pj(64 * 1024) + n * 8 * t.sram_bit_pj(64 * 1024, write=True))
    assert set(e.by_category()) == set(CATEGORIES)
    assert e.by_category()["vector"] == pytest.approx(e.total_pj) and e.macs == 0
    for kind in ("softmax", "layernorm", "lut", "gelu", "relu"):
        small = vector_energy(cfg, _vector_perf(cfg, kind, (2, 6, 16)), t)
        big = vector_energy(cfg, _vector_perf(cfg, kind, (6, 6, 16)), t)
        assert big.total_pj == pytest.approx(3 * small.total_pj), kind
    # a wider accumulator makes every arithmetic class dearer; LayerNorm divides
    ln = vector_energy(cfg, _vector_perf(cfg, "layernorm", (2, 6, 16)), t)
    wide = vector_energy(cfg.replace(acc_bits=40),
                         _vector_perf(cfg.replace(acc_bits=40), "layernorm", (2, 6, 16)), t)
    for cls in ("mult", "add", "shift", "div"):
        assert 0 < ln.terms[f"vector.{cls}"] < wide.terms[f"vector.{cls}"], cls


def test_vector_energy_of_a_kind_without_a_mix_names_it():
    import dataclasses

    from qaccel.sim.energy import vector_energy

    cfg = ArrayConfig()
    vp = dataclasses.replace(_vector_perf(cfg, "lut", (2, 3)), kind="frobnicate")
    with pytest.raises(ValueError, match="'frobnicate'.*VECTOR_OP_MIX"):
        vector_energy(cfg, vp)


def test_workloads_energy_adds_the_vector_layers():
    from qaccel.sim.energy import vector_energy, workloads_energy
    from qaccel.sim.workload import GemmWorkload, VectorWorkload

    cfg = ArrayConfig(rows=8, cols=8, acc_depth=16)
    gemms = [GemmWorkload("a", 12, 16, 16), GemmWorkload("b", 12, 16, 8)]
    vecs = [VectorWorkload("sm", "softmax", ((2, 12, 12),), (2, 12, 12))]
    perf0, per0, tot0 = workloads_energy(cfg, gemms)
    perf, per, tot = workloads_energy(cfg, gemms, vectors=vecs)
    assert [p.name for p in per] == ["a", "b", "sm"]
    ve = vector_energy(cfg, perf.vectors[0])
    assert tot.total_pj == pytest.approx(tot0.total_pj + ve.total_pj)
    assert tot.by_category()["vector"] == pytest.approx(ve.total_pj)
    assert ve.total_pj > 0
    assert tot.cycles == perf.cycles == perf0.cycles + perf.vectors[0].cycles
