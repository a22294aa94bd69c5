"""Sweep files: validation names the offending key before anything runs; points, hashes,
random samples."""

import dataclasses
import sqlite3

import pytest
import yaml
from qaccel.sim import ArrayConfig

from qaccel.cli import main
from qaccel.sweep.fields import ARRAY_FIELDS, PARAM_TYPES, QUANT_FIELDS, SHARED_FIELDS
from qaccel.sweep.spec import ARRAY_BASE, load_spec, parse_spec

NET = {"network": "resnet18"}


def spec(**kw):
    return parse_spec({"workload": NET, **kw}, where="s.yaml")


def err(data, base_dir=".") -> str:
    with pytest.raises(ValueError) as e:
        parse_spec(data, where="s.yaml", base_dir=base_dir)
    msg = str(e.value)
    assert msg.startswith("s.yaml: ")
    return msg


def test_grid_is_the_cartesian_product_and_hashes_are_unique():
    s = spec(grid={"rows": [8, 16], "cols": {"start": 8, "stop": 24, "step": 8},
                   "per_channel": [False, True]})
    assert len(s.points) == 2 * 3 * 2
    assert {(p.array.rows, p.array.cols, p.array.per_channel) for p in s.points} == {
        (r, c, pc) for r in (8, 16) for c in (8, 16, 24) for pc in (False, True)}
    assert len({p.config_hash for p in s.points}) == 12
    p = s.points[0]
    assert p.array == ArrayConfig(**{**ARRAY_BASE, "rows": 8, "cols": 8})
    assert set(p.params) == set(ARRAY_FIELDS) | {"clock_mhz", "energy_table", "mapping",
                                                 "objective"}
    assert (p.mapping, p.params["mapping"], p.params["objective"]) == ("fixed", "fixed", None)
    assert s.swept == ("rows", "cols", "per_channel")


def test_hash_depends_on_workload_and_every_parameter():
    a = spec(grid={"rows": [8]}).points[0].config_hash
    assert a == spec(grid={"rows": [8]}).points[0].config_hash            # deterministic
    assert a == spec(fixed={"rows": 8}).points[0].config_hash             # grid or fixed
    assert a != spec(fixed={"rows": 8, "clock_mhz": 400}).points[0].config_hash
    other = parse_spec({"workload": {"network": "resnet50"}, "fixed": {"rows": 8}})
    assert a != other.points[0].config_hash


def test_random_samples_distinct_points_reproducibly():
    grid = {"rows": [4, 8, 16, 32], "cols": [4, 8, 16, 32], "w_bits": [2, 4, 8]}
    a = spec(grid=grid, random=10, seed=3)
    b = spec(grid=grid, random=10, seed=3)
    c = spec(grid=grid, random=10, seed=4)
    ha = [p.config_hash for p in a.points]
    assert len(set(ha)) == 10 and ha == [p.config_hash for p in b.points]
    assert ha != [p.config_hash for p in c.points]
    full = {p.config_hash for p in spec(grid=grid).points}
    assert set(ha) <= full


@pytest.mark.parametrize("data, key", [
    ({"workload": NET, "grdi": {"rows": [8]}}, "grdi: unknown key"),
    ({"workload": NET, "grid": {"rowz": [8]}}, "grid.rowz: unknown parameter"),
    ({"workload": NET, "grid": {"rows": [1, 8]}}, "grid.rows: value 1: ArrayConfig.rows"),
    ({"workload": NET, "grid": {"w_bits": [8, 17]}}, "grid.w_bits: value 17: ArrayConfig.w_bits"),
    ({"workload": NET, "grid": {"per_channel": [0, 1]}}, "grid.per_channel: value 0"),
    ({"workload": NET, "grid": {"rows": []}}, "grid.rows: empty list"),
    ({"workload": NET, "grid": {"rows": {"start": 8, "stop": 4}}}, "grid.rows: empty range"),
    ({"workload": NET, "grid": {"rows": {"start": 8, "stop": 9, "step": 0}}},
     "grid.rows.step: must be >= 1"),
    ({"workload": NET, "grid": {"clock_mhz": [500, -1]}}, "grid.clock_mhz: must be a positive"),
    ({"workload": NET, "grid": {"energy_table": ["missing.json"]}}, "grid.energy_table: "),
    ({"workload": NET, "grid": {"rounding": ["nearest"]}}, "grid.rounding: a QuantConfig field"),
    ({"workload": NET, "grid": {"mapping": ["fixed", "serach"]}},
     "grid.mapping: must be one of fixed, search, not 'serach'"),
    ({"workload": NET, "fixed": {"mapping": "search", "objective": "power"}},
     "fixed.objective: must be one of energy, edp, latency, not 'power'"),
    ({"workload": NET, "fixed": {"mapping": ["search"]}}, "fixed.mapping: must be one value"),
    ({"workload": NET, "fixed": {"rows": 8}, "grid": {"rows": [8]}}, "grid.rows: also set"),
    ({"workload": NET, "fixed": {"acc_bits": 12}}, "fixed: ArrayConfig.acc_bits"),
    ({"workload": NET, "grid": {"w_bits": [8, 16], "a_bits": [8, 16], "acc_bits": [24]}},
     "grid: point {w_bits: 16, a_bits: 16, acc_bits: 24}: ArrayConfig.acc_bits"),
    ({"workload": NET, "grid": {"rows": [8, 16]}, "random": 3}, "random: 3 samples"),
    ({"workload": NET, "random": 0}, "random: must be a positive"),
    ({"workload": NET, "metrics": ["accuracy"]}, "metrics: accuracy needs a workload"),
    ({"workload": NET, "metrics": ["speed"]}, "metrics: unknown metric group 'speed'"),
    ({"workload": {"network": "vgg"}}, "workload.network: unknown network 'vgg'"),
    ({"workload": {"network": "resnet50", "seq_len": 64}}, "workload.seq_len: applies"),
    ({"workload": {"network": "resnet50", "batch": 0}}, "workload.batch: must be a positive"),
    ({"workload": {"network": "resnet50", "topology": "x.csv"}}, "workload: needs exactly one"),
    ({"workload": {"topology": "nope.csv"}}, "workload.topology: file 'nope.csv' does not"),
    ({"workload": {"model": "digits_cnn", "colour": 1}}, "workload.colour: unknown key"),
    ({"grid": {"rows": [8]}}, "workload: missing"),
])
def test_bad_sweeps_are_rejected_naming_the_key(data, key):
    assert key in err(data)


def test_skip_invalid_drops_only_rejected_combinations():
    s = spec(grid={"w_bits": [8, 16], "a_bits": [8, 16], "acc_bits": [24, 32]},
             skip_invalid=True)
    kept = {(p.array.w_bits, p.array.a_bits, p.array.acc_bits) for p in s.points}
    assert kept == {(w, a, acc) for w in (8, 16) for a in (8, 16) for acc in (24, 32)
                    if acc >= w + a}
    assert s.skipped == 8 - len(kept)


def test_energy_table_paths_are_relative_to_the_sweep_file(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text('{"add": {"8": 0.03}}')
    msg = err({"workload": NET, "grid": {"energy_table": ["t.json"]}}, base_dir=tmp_path)
    assert "grid.energy_table" in msg and "missing field" in msg


def test_topology_workload_and_yaml_file(tmp_path, topo):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"workload": {"topology": topo.name},
                                 "grid": {"rows": [4, 8]}}))
    s = load_spec(f)
    assert s.workload.kind == "topology" and len(s.points) == 2
    f.write_text("workload: {network: resnet18}\ngrid: {rows: [8\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_spec(f)
    f.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(ValueError, match="not valid YAML"):         # safe_load only
        load_spec(f)


def test_quant_fields_match_quantconfig():
    from qaccel.quant import QuantConfig

    scalar = {f.name for f in dataclasses.fields(QuantConfig)
              if str(f.type) in ("int", "bool", "str", "float")}
    assert set(QUANT_FIELDS) == scalar
    assert set(SHARED_FIELDS) == set(ARRAY_FIELDS) & scalar
    assert set(PARAM_TYPES) == set(ARRAY_FIELDS) | scalar | {"clock_mhz", "energy_table",
                                                              "mapping", "objective"}


def test_mapping_and_objective_are_parameters_hashed_only_when_searched():
    base = spec(fixed={"rows": 8}).points[0]
    s = spec(fixed={"rows": 8}, grid={"mapping": ["fixed", "search"],
                                      "objective": ["energy", "edp", "latency"]})
    # the fixed nest has no objective: its three combinations are one point, hashed as a
    # point of a sweep that does not name mapping (stores from before these keys resume)
    assert len(s.points) == 1 + 3
    fixed = [p for p in s.points if p.mapping == "fixed"]
    assert [p.config_hash for p in fixed] == [base.config_hash]
    assert {p.params["objective"] for p in s.points if p.mapping == "search"} == {
        "energy", "edp", "latency"}
    assert len({p.config_hash for p in s.points}) == 4


def test_swept_mapping_and_buffers_reach_the_cost_model():
    """Cost-only points with ``mapping: search`` are the mapper's: the same numbers as
    ``network_energy_report`` with that mapping; with small buffers the energy-optimal
    mapping beats the fixed nest, and no searched point is worse than the fixed nest on
    its own objective."""
    from qaccel.sim.energy import load_table

    from qaccel import flow, workspace
    from qaccel.sweep.points import evaluate_batch
    from qaccel.sweep.workload import prepare

    s = spec(fixed={"rows": 16, "cols": 16},
             grid={"weight_buffer_kib": [16, 512], "act_buffer_kib": [16, 512],
                   "mapping": ["fixed", "search"], "objective": ["energy", "latency"]})
    assert len(s.points) == 4 * 3
    ctx = prepare(s.workload, workspace.current())
    results = evaluate_batch(ctx, s.tables, s.points, s.metrics)
    assert [r[1] for r in results] == ["ok"] * len(s.points), [r[2] for r in results]
    res = {h: m for h, _, _, _, m in results}
    got = {(p.array.weight_buffer_kib, p.array.act_buffer_kib, p.params["objective"]):
           res[p.config_hash] for p in s.points}
    for p in s.points:
        rep = flow.network_energy_report(p.array, ctx.gemms, load_table(None),
                                         mapping=p.mapping, objective=p.objective,
                                         vectors=ctx.vectors(p.array))["total"]
        m = res[p.config_hash]
        assert (m["cycles"], m["dram_bits"]) == (rep["cycles"], rep["dram_bits"])
        assert m["energy_j"] == pytest.approx(rep["total_pj"] * 1e-12, rel=1e-12)
    for wb in (16, 512):
        for ab in (16, 512):
            fixed = got[wb, ab, None]
            assert got[wb, ab, "energy"]["energy_j"] <= fixed["energy_j"] * (1 + 1e-12)
            assert got[wb, ab, "latency"]["cycles"] <= fixed["cycles"]
    # all weights of a layer fit the 512 KiB weight buffer but its input does not fit the
    # 16 KiB activation buffer: the search keeps the weights resident and reads the input
    # once, the fixed nest re-reads the input per n-tile (measured: -25.7 % energy)
    assert got[512, 16, "energy"]["energy_j"] < 0.9 * got[512, 16, None]["energy_j"]
    assert got[16, 16, "energy"]["dram_bits"] < got[16, 16, None]["dram_bits"]
    # the buffers change the fixed nest's costs too (energy of the buffer accesses)
    assert got[512, 512, None]["energy_j"] != got[16, 16, None]["energy_j"]


def test_cli_rejects_a_bad_sweep_before_anything_runs(tmp_path, cli_error):
    f = tmp_path / "s.yaml"
    f.write_text("workload: {network: resnet18}\ngrid: {rows: [8], colls: [8]}\n")
    store = tmp_path / "r.sqlite"
    err_text = cli_error(["sweep", str(f), "--store", str(store)])
    assert "grid.colls: unknown parameter" in err_text
    assert not store.exists()
    with pytest.raises(SystemExit) as e:          # argparse: the export suffix
        main(["sweep", str(f), "--store", str(store), "--export", str(tmp_path / "x.json")])
    assert e.value.code == 2
    assert not store.exists()


def test_store_file_that_is_not_sqlite_is_an_error(tmp_path, cli_error):
    f = tmp_path / "s.yaml"
    f.write_text("workload: {network: resnet18}\nfixed: {rows: 8}\n")
    store = tmp_path / "r.sqlite"
    store.write_text("not a database, " * 100)
    assert "not a usable SQLite database" in cli_error(["sweep", str(f), "--store", str(store)])
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(store).execute("SELECT * FROM points")


def test_cached_network_gemms_are_the_mapped_ones(tmp_path):
    """The workspace's GEMM cache returns the same workloads as mapping the network, conv
    geometry included (a cache that dropped it changed the analytic input traffic of
    strided convolutions between a sweep's first and later runs)."""
    from qaccel.sim.analytic import analyze_layer
    from qaccel.sim.config import ArrayConfig

    from qaccel.networks import network_workloads
    from qaccel.sweep.workload import network_gemms
    from qaccel.workspace import Workspace

    ws = Workspace(tmp_path)
    fresh = tuple(network_workloads("resnet18"))
    first = network_gemms("resnet18", ws)
    cached = network_gemms("resnet18", ws)
    assert list((tmp_path / "sweep" / "workloads").glob("resnet18-*.json"))
    assert sum(g.geometry is not None and g.geometry.stride != (1, 1) for g in fresh) >= 3
    cfg = ArrayConfig(rows=16, cols=16, act_buffer_kib=16)
    for a, b, c in zip(fresh, first, cached, strict=True):
        assert a == b == c and a.geometry == b.geometry == c.geometry
        assert a.input_elems == c.input_elems
        assert analyze_layer(cfg, a).traffic == analyze_layer(cfg, c).traffic
