"""qaccel.flow: loading, the quantization cache, the network's cost with its own per-layer
bit-widths, and the integer network on the cycle model == the executor."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from qaccel.quant import QuantConfig
from qaccel.sim import ArrayConfig, executor
from qaccel.sim.network import IntNetwork
from qaccel.sim.schedule import gemm_cycles

from qaccel import flow, workspace

#: few AdaRound iterations and calibration images: the flow is under test, not AdaRound
QCFG = QuantConfig(w_bits=4, a_bits=8, per_channel=True, rounding="adaround", iterations=20)
ARRAY = ArrayConfig(rows=8, cols=8, acc_depth=256)

USER = "flow_models"            # tests/qaccel/flow_models.py: factory, loader


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    return flow.load_model("digits_cnn", n_calib=64)


@pytest.fixture(scope="module")
def quantized(digits, tmp_path_factory):
    before = workspace.current()
    workspace.use(tmp_path_factory.mktemp("ws"))
    try:
        yield flow.quantize_model(digits.model, digits.calib, QCFG)
    finally:
        workspace.use(before)


def _mixed(net: IntNetwork, layer: int, w_bits: int) -> IntNetwork:
    """``net`` with GEMM layer ``layer`` declared ``w_bits`` wide (its integers still fit)."""
    layers = list(net.layers)
    layers[layer] = dataclasses.replace(layers[layer], w_bits=w_bits)
    return dataclasses.replace(net, layers=tuple(layers))


def test_quantize_model_cache_hit_and_key(digits, tmp_workspace, monkeypatch):
    qm, net = flow.quantize_model(digits.model, digits.calib, QCFG)
    key = flow.network_cache_key(digits.model, digits.calib, QCFG)
    entry = tmp_workspace.root / "cache" / "networks" / key[:24]
    assert (entry / "net.npz").is_file() and (entry / "qmodel.pt").is_file()

    from qaccel import quant

    def boom(*a, **k):
        raise AssertionError("quantized again despite the cache")

    monkeypatch.setattr(quant, "quantize", boom)
    qm2, net2 = flow.quantize_model(digits.model, digits.calib, QCFG)
    assert len(net2.layers) == len(net.layers)
    for a, b in zip(net.layers, net2.layers):
        assert np.array_equal(a.weight, b.weight) if a.weight is not None else b.weight is None
    x = digits.test_set[0][:32]
    with torch.no_grad():
        assert torch.equal(qm(x), qm2(x))
    # every ingredient of the key changes it
    assert flow.network_cache_key(digits.model, digits.calib, QCFG.replace(seed=1)) != key
    assert flow.network_cache_key(digits.model, [b[:-1] for b in digits.calib], QCFG) != key
    other = flow.load_model("digits_mobilenet", n_calib=64).model
    assert flow.network_cache_key(other, digits.calib, QCFG) != key


def test_network_cost_cycles_are_the_analytic_sum_and_the_cycle_model(quantized):
    _, net = quantized
    cost = flow.network_cost(net, ARRAY, engine="cycle", area=False)
    # independent count: each GEMM layer's T from the executor's output shapes
    x = flow.network_sample_inputs(net)
    outs = executor.run(net, x, trace=True).outputs
    want = 0
    for i in net.gemm_layers():
        L = net.layers[i]
        T = int(np.prod(outs[i].shape[2:])) if L.kind == "conv2d" else 1
        K = L.weight[0].size
        cfg = ARRAY.replace(w_bits=L.w_bits, per_channel=True)
        want += L.groups * gemm_cycles(cfg, T, K, L.out_channels // L.groups)
    assert cost["array_cycles"] == want == sum(r["cycles"] for r in cost["layers"])
    assert [r["cycles_cycle_model"] for r in cost["layers"]] == [r["cycles"]
                                                               for r in cost["layers"]]
    # the vector unit (pooling, ReLU, ...: the executor's counts) is serialized with the array
    vec = cost["vector_unit"]
    costs = executor.vector_costs(net, x)
    assert [r["name"] for r in vec["layers"]] == [name for name, _, _ in costs] != []
    lanes = ARRAY.vector_unit_lanes
    assert vec["cycles"] == sum(-(-c.ops // lanes) for _, _, c in costs) > 0
    assert cost["cycles"] == want + vec["cycles"]
    assert cost["energy_j"] == pytest.approx(
        (sum(r["energy_pj"] for r in cost["layers"]) + vec["energy_pj"]) * 1e-12)
    assert vec["cycle_share"] == pytest.approx(vec["cycles"] / cost["cycles"])
    assert cost["latency_s"] == pytest.approx((want + vec["cycles"]) / 500e6)
    assert {(r["w_bits"], r["a_bits"]) for r in cost["layers"]} == {(4, 8)}


def test_per_layer_bits_reach_the_cost_model(quantized):
    _, net = quantized
    first = net.gemm_layers()[0]
    mixed = _mixed(net, first, 7)
    base = flow.network_cost(net, ARRAY, area=False)
    cost = flow.network_cost(mixed, ARRAY, area=False)
    assert [b["w_bits"] for b in cost["bits"]] == [7, 4, 4, 4]
    assert cost["hardware"]["w_bits"] == 7        # the array holds the widest layer
    l0, b0 = cost["layers"][0], base["layers"][0]
    # only the first layer's MAC and weight movement change: W7 costs more than W4
    assert l0["categories_pj"]["mac"] > b0["categories_pj"]["mac"]
    assert l0["cycles"] == b0["cycles"]
    for r, b in zip(cost["layers"][1:], base["layers"][1:]):
        assert r["energy_pj"] == pytest.approx(b["energy_pj"])


def test_cycle_engine_equals_executor(quantized, digits):
    _, net = quantized
    x, y = digits.test_set
    test = (x[:7], y[:7])
    log: dict = {}
    acc_eng, y_eng = flow.integer_accuracy(net, test, flow.engine_gemm_fn(net, ARRAY, "cycle",
                                                                          log), batch=4)
    y_ref = executor.run(net, net.input_q.quantize(x[:7].numpy()))
    assert np.array_equal(y_eng, y_ref)
    assert acc_eng == 100.0 * float((y_ref.argmax(1) == y[:7].numpy()).mean())
    assert sorted(log) == sorted(net.layers[i].name for i in net.gemm_layers())
    assert all(len(v) == 2 for v in log.values())       # two executor calls (4 + 3 images)


def test_mixed_input_output_bits_are_refused_by_the_engines(quantized):
    _, net = quantized
    i = net.gemm_layers()[0]
    L = net.layers[i]
    mixed = dataclasses.replace(L, out_q=dataclasses.replace(L.out_q, bits=6, zero_point=0))
    with pytest.raises(ValueError, match=repr(L.name)):
        flow.layer_config(ARRAY, net, mixed, strict=True)
    # the cost model takes it with its input width
    assert flow.layer_config(ARRAY, net, mixed).a_bits == L.in_q[0].bits


def test_run_user_factory_and_npz(tmp_workspace, tmp_path):
    cfg = flow.RunConfig(model=f"{USER}:factory", data=f"{USER}:loader",
                         quant=QuantConfig(w_bits=8, a_bits=8), array=ARRAY,
                         engine="cycle", area=False)
    rep = flow.run(cfg)
    acc = rep.accuracy
    assert rep.eval_images == 16
    assert acc["integer"] == acc["executor"] and acc["fp32"] is not None
    assert acc["fake_quant"] is not None
    path = rep.net.save(tmp_path / "tiny.npz")
    # the exported network alone: cost, no accuracy
    rep2 = flow.run(dataclasses.replace(cfg, model=str(path), data=None))
    assert rep2.accuracy == {"fp32": None, "fake_quant": None, "integer": None,
                             "executor": None}
    assert rep2.cost["cycles"] == rep.cost["cycles"]
    # with a loader it gets the integer accuracy (no float model, so no FP32)
    rep3 = flow.run(dataclasses.replace(cfg, model=str(path)))
    assert rep3.accuracy["integer"] == acc["integer"] and rep3.accuracy["fp32"] is None


@pytest.mark.parametrize("kw, field", [
    ({"model": "no_such_model"}, "RunConfig.model"),
    ({"model": "flow_models:factory"}, "RunConfig.data"),
    ({"model": "flow_models:not_a_model", "data": "flow_models:loader"},
     "RunConfig.model"),
    ({"model": "flow_models:factory", "data": "flow_models:nope"}, "RunConfig.data"),
    ({"model": "no/such/net.npz"}, "RunConfig.model"),
])
def test_load_errors_name_the_field(kw, field):
    cfg = flow.RunConfig(**kw)
    with pytest.raises(ValueError, match=field):
        flow.load_model(cfg.model, cfg.data)


@pytest.mark.parametrize("kw, field", [
    ({"engine": "fpga"}, "RunConfig.engine"), ({"clock_mhz": 0}, "RunConfig.clock_mhz"),
    ({"eval_images": 0}, "RunConfig.eval_images"), ({"data": "nocolon"}, "RunConfig.data"),
    ({"quant": "W4A8"}, "RunConfig.quant"), ({"sim": "xsim"}, "RunConfig.sim"),
])
def test_run_config_validation(kw, field):
    with pytest.raises(ValueError, match=field):
        flow.RunConfig(**kw)
