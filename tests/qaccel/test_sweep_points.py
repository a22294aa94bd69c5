"""Design points with data (digits model: accuracy + cost of the quantized network), an
exported integer network, and area (Yosys, cached per bit-width configuration)."""

import pytest

from qaccel import flow, workspace
from qaccel.sweep.points import evaluate_batch
from qaccel.sweep.spec import parse_spec
from qaccel.sweep.workload import prepare

QUANT = {"weight_range": "minmax", "act_range": "minmax", "rounding": "nearest"}


def _evaluate(spec):
    ctx = prepare(spec.workload, workspace.current())
    res = evaluate_batch(ctx, spec.tables, spec.points, spec.metrics)
    for _h, status, error, _, _ in res:
        assert status == "ok", error
    return {h: m for h, _, _, _, m in res}


@pytest.fixture(scope="module")
def digits_points():
    spec = parse_spec({"workload": {"model": "digits_cnn", "calib": 64}, "fixed": QUANT,
                       "grid": {"w_bits": [4, 8], "rows": [8, 16]}})
    assert spec.metrics == ("cost", "accuracy")
    return spec, _evaluate(spec)


def test_accuracy_points_are_the_flows_numbers(digits_points):
    from qaccel.quant import QuantConfig, digits

    spec, got = digits_points
    lm = flow.load_model("digits_cnn", n_calib=64)
    fp32 = digits.evaluate(lm.model, lm.test_set)
    for p in spec.points:
        m = got[p.config_hash]
        assert p.quant == QuantConfig(w_bits=p.array.w_bits, **QUANT)
        qmodel, net = flow.quantize_model(lm.model, lm.calib, p.quant)     # cached
        assert m["accuracy"] == flow.integer_accuracy(net, lm.test_set)[0]
        assert m["accuracy_fake_quant"] == digits.evaluate(qmodel, lm.test_set)
        assert m["accuracy_fp32"] == fp32
        cost = flow.network_cost(net, p.array, p.clock_mhz, None, area=False)
        assert (m["cycles"], m["macs"]) == (cost["cycles"], cost["macs"])
        assert m["energy_j"] == pytest.approx(cost["energy_j"], rel=1e-12)
        assert m["dram_bits"] > 0 and m["buffer_bits"] > m["dram_bits"]
    by = {(p.array.w_bits, p.array.rows): got[p.config_hash] for p in spec.points}
    # same quantized network on both arrays; more rows, fewer cycles; W8 close to FP32
    assert by[8, 8]["accuracy"] == by[8, 16]["accuracy"]
    assert by[8, 16]["cycles"] < by[8, 8]["cycles"]
    assert by[8, 8]["accuracy"] > fp32 - 2.0
    assert by[4, 8]["energy_j"] < by[8, 8]["energy_j"]


def test_int_network_workload(tmp_path, digits_points):
    from qaccel.quant import QuantConfig

    lm = flow.load_model("digits_cnn", n_calib=64)
    _, net = flow.quantize_model(lm.model, lm.calib, QuantConfig(w_bits=4, **QUANT))
    net.save(tmp_path / "net.npz")
    spec = parse_spec({"workload": {"int_network": "net.npz"}, "grid": {"rows": [8]}},
                      base_dir=tmp_path)
    got = _evaluate(spec)
    with pytest.raises(ValueError, match="workload.seq_len: .*token networks only"):
        parse_spec({"workload": {"int_network": "net.npz", "seq_len": 8}}, base_dir=tmp_path)
    with pytest.raises(ValueError, match="grid.w_bits: set by each layer"):
        parse_spec({"workload": {"int_network": "net.npz"}, "grid": {"w_bits": [4, 8]}},
                   base_dir=tmp_path)
    spec_d, got_d = digits_points
    same = next(p for p in spec_d.points if (p.array.w_bits, p.array.rows) == (4, 8))
    (m,) = got.values()
    for k in ("cycles", "energy_j", "dram_bits", "buffer_bits", "utilization"):
        assert m[k] == got_d[same.config_hash][k], k


def test_area_is_the_datapath_cells_per_array(topo, require_tool):
    from qaccel.dse.isoarea import datapath_cells

    require_tool("yosys")

    spec = parse_spec({"workload": {"topology": topo.name}, "grid": {"rows": [4, 8]},
                       "fixed": {"cols": 4}, "metrics": ["area"]}, base_dir=topo.parent)
    got = _evaluate(spec)
    cells = [got[p.config_hash]["area_cells"] for p in spec.points]
    assert cells == [round(datapath_cells(p.array)) for p in spec.points]
    assert cells[1] > cells[0]
    assert set(got[spec.points[0].config_hash]) == {"area_cells"}


def test_tasks_hold_one_quantization_config_each(digits_points):
    from qaccel.sweep.runner import make_batches

    spec, _ = digits_points
    batches = make_batches(list(spec.points), 1, by_quant=True)
    assert sorted(len(b) for b in batches) == [2, 2]         # w_bits 4 / 8, rows 8 and 16
    for b in batches:
        assert len({p.quant for p in b}) == 1
    assert [len(b) for b in make_batches(list(spec.points), 3)] == [3, 1]


def test_vector_lanes_change_the_cost(tmp_path, digits_points):
    """A swept vector_lanes changes cycles by exactly the vector unit's ceil(ops / lanes):
    an integer network's pooling layers (executor.vector_costs), bert_base's softmax,
    LayerNorms, GELU and residual adds."""
    from qaccel.quant import QuantConfig
    from qaccel.sim import executor

    from qaccel.networks.bert import bert_vector_workloads

    lm = flow.load_model("digits_cnn", n_calib=64)
    _, net = flow.quantize_model(lm.model, lm.calib, QuantConfig(w_bits=4, **QUANT))  # cached
    net.save(tmp_path / "net.npz")
    ops = [c.ops for _, _, c in executor.vector_costs(net, flow.network_sample_inputs(net))]
    bert = [v.cost.ops for v in bert_vector_workloads(1, 16)]
    for workload, want in (({"int_network": "net.npz"}, ops),
                           ({"network": "bert_base", "seq_len": 16}, bert)):
        spec = parse_spec({"workload": workload, "grid": {"vector_lanes": [1, 8]}},
                          base_dir=tmp_path)
        got = _evaluate(spec)
        by = {p.array.vector_lanes: got[p.config_hash] for p in spec.points}
        assert want and by[1]["cycles"] - by[8]["cycles"] == \
            sum(want) - sum(-(-n // 8) for n in want)
        assert by[1]["energy_vector_j"] > 0 and by[1]["macs"] == by[8]["macs"]
