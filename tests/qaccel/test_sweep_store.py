"""The SQLite store: round trip, failure rows, upsert keeps the row, identifier whitelist,
resume bookkeeping, CSV / parquet export; one in-process sweep end to end."""

import csv
import math
import sqlite3

import pytest

from qaccel.sweep.export import export_store
from qaccel.sweep.points import evaluate_batch
from qaccel.sweep.spec import parse_spec
from qaccel.sweep.store import Store
from qaccel.sweep.workload import prepare
from qaccel.workspace import Workspace

P1 = {"rows": 8, "cols": 16, "per_channel": True, "clock_mhz": 500.0, "energy_table": "default"}
M1 = {"cycles": 1234, "energy_j": 2.5e-3, "latency_s": 1234 / 500e6}


def test_round_trip_types_and_read_api(tmp_path):
    with Store(tmp_path / "r.sqlite") as st:
        i = st.put("h1", P1, M1, elapsed_s=0.25, workload="network:resnet18")
        j = st.put("h2", {**P1, "rows": 16}, {}, status="error", error="ValueError: boom",
                   elapsed_s=0.01, workload="network:resnet18")
        assert (i, j) == (1, 2)
    with Store(tmp_path / "r.sqlite") as st:           # reopened: everything persisted
        assert st.count() == 2 and st.count("ok") == 1 and st.count("error") == 1
        ok = st.rows(status="ok")
        assert len(ok) == 1
        r = ok[0]
        assert (r["config_hash"], r["rows"], r["cols"], r["per_channel"]) == ("h1", 8, 16, 1)
        assert r["cycles"] == 1234 and r["energy_j"] == pytest.approx(2.5e-3)
        assert r["status"] == "ok" and r["error"] is None and r["elapsed_s"] == 0.25
        assert st.params(r) == P1                      # exact types (bool stays bool)
        bad = st.rows(status="error")[0]
        assert bad["error"] == "ValueError: boom" and bad["cycles"] is None
        assert st.param_columns() == ["rows", "cols", "per_channel", "clock_mhz",
                                      "energy_table"]
        assert st.metric_columns() == ["cycles", "energy_j", "latency_s"]
        assert st.rows(workload="other") == []
        mode = st._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_upsert_keeps_the_row_id_and_unique_hash(tmp_path):
    with Store(tmp_path / "r.sqlite") as st:
        st.put("a", P1, {}, status="error", error="x")
        st.put("b", P1, M1)
        assert st.put("a", P1, M1) == 1                 # a retried point: same row
        assert [r["config_hash"] for r in st.rows()] == ["a", "b"]
        assert st.rows()[0]["status"] == "ok" and st.rows()[0]["error"] is None
        with pytest.raises(sqlite3.IntegrityError):
            st._db.execute("INSERT INTO points (config_hash, kind, workload, status, "
                           "params_json) VALUES ('a', 'sweep', '', 'ok', '{}')")


def test_finished_needs_the_requested_metrics(tmp_path):
    with Store(tmp_path / "r.sqlite") as st:
        st.put("a", P1, M1)
        st.put("b", P1, {"cycles": 5})
        st.put("c", P1, {}, status="error", error="x")
        assert st.finished(["cycles"]) == {"a", "b", "c"}
        assert st.finished(["cycles", "energy_j"]) == {"a", "c"}
        assert st.finished(["cycles"], errors=False) == {"a", "b"}
        assert st.finished(["area_cells"]) == {"c"}      # no such column yet: none is done


@pytest.mark.parametrize("name", ['rows"; DROP TABLE points; --', "Rows", "x y", "1a",
                                  "not_a_field"])
def test_column_names_are_whitelisted(tmp_path, name):
    with Store(tmp_path / "r.sqlite") as st:
        with pytest.raises(ValueError, match="column"):
            st.put("a", {name: 1}, {})
        with pytest.raises(ValueError, match="column"):
            st.put("a", {}, {name: 1})
        assert st.count() == 0 and "points" in {
            r[0] for r in st._db.execute("SELECT name FROM sqlite_master")}


def test_declared_extra_columns(tmp_path):
    with pytest.raises(ValueError, match="plain identifier"):
        Store(tmp_path / "x.sqlite", extra_params={"w_bits_conv1; --": "INTEGER"})
    with pytest.raises(ValueError, match="type must be"):
        Store(tmp_path / "x.sqlite", extra_metrics={"hv": "BLOB); DROP TABLE points"})
    with Store(tmp_path / "r.sqlite", extra_params={"w_bits_conv1": "INTEGER"},
               extra_metrics={"hypervolume": "REAL"}) as st:
        st.put("t1", {**P1, "w_bits_conv1": 4}, {"hypervolume": 0.5}, kind="search")
        assert "w_bits_conv1" in st.param_columns() and "hypervolume" in st.metric_columns()
        assert st.rows(kind="search")[0]["w_bits_conv1"] == 4
        assert st.rows(kind="sweep") == []


def test_values_are_parameters_not_sql(tmp_path):
    evil = "x'); DROP TABLE points; --"
    with Store(tmp_path / "r.sqlite") as st:
        st.put(evil, {**P1, "energy_table": evil}, M1, error=evil, status="error")
        assert st.rows()[0]["energy_table"] == evil and st.count() == 1


def _run_in_process(tmp_path, spec):
    """The worker function called directly, then rows stored as the runner does."""
    ws = Workspace(tmp_path / "ws")
    ctx = prepare(spec.workload, ws)
    res = evaluate_batch(ctx, spec.tables, spec.points, spec.metrics)
    with Store(tmp_path / "r.sqlite") as st:
        by = {p.config_hash: p for p in spec.points}
        for h, status, error, elapsed, m in res:
            st.put(h, by[h].params, m, status=status, error=error, elapsed_s=elapsed,
                   workload=ctx.label)
        return st.rows()


def test_cost_points_match_the_energy_command_and_failures_are_rows(tmp_path, topo):
    from qaccel.sim import ArrayConfig
    from qaccel.sim.analytic import analyze_network
    from qaccel.sim.energy import counts_from_perf, default_table, network_energy
    from qaccel.sim.topology import read_topology

    # a 1 KiB activation buffer cannot hold one 16-bit activation tile: those points fail
    spec = parse_spec({"workload": {"topology": topo.name},
                       "grid": {"rows": [4, 8], "act_buffer_kib": [1, 64]},
                       "fixed": {"w_bits": 16, "a_bits": 16, "acc_bits": 40}},
                      where="s.yaml", base_dir=topo.parent)
    rows = _run_in_process(tmp_path, spec)
    assert len(rows) == 4
    gemms = [x.workload() for x in read_topology(topo)]
    for r in rows:
        cfg = ArrayConfig(**{k: r[k] for k in ArrayConfig.__dataclass_fields__
                             if k not in ("a_signed", "per_channel")},
                          a_signed=bool(r["a_signed"]), per_channel=bool(r["per_channel"]))
        try:
            perf = analyze_network(cfg, gemms)
        except ValueError as exc:
            assert r["status"] == "error" and str(exc) in r["error"]
            continue
        assert r["status"] == "ok", r["error"]
        _, total = network_energy(cfg, [counts_from_perf(lp) for lp in perf.layers],
                                  default_table())
        assert r["cycles"] == perf.cycles and r["macs"] == perf.macs
        assert math.isclose(r["energy_j"], total.total_pj * 1e-12, rel_tol=1e-12)
        assert math.isclose(r["latency_s"], perf.cycles / 500e6, rel_tol=1e-12)
        assert r["dram_bits"] == perf.dram_bits
        assert 0 < r["utilization"] <= 1 and r["dram_bits"] > 0
    assert [r["status"] for r in rows] == ["error", "ok", "error", "ok"]


def test_export_csv_and_parquet_round_trip(tmp_path):
    import pyarrow.parquet as pq

    with Store(tmp_path / "r.sqlite") as st:
        st.put("a", P1, M1, elapsed_s=0.5)
        st.put("b", {**P1, "rows": 32}, {}, status="error", error="boom, \"quoted\"\nline")
        rows = st.rows()
        export_store(st, tmp_path / "x.csv")
        export_store(st, tmp_path / "x.parquet")
        cols = st.columns()
    with open(tmp_path / "x.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert [list(g) for g in got] == [cols, cols]
    assert got[1]["error"] == rows[1]["error"] and got[0]["cycles"] == "1234"
    assert float(got[0]["energy_j"]) == rows[0]["energy_j"] and got[1]["cycles"] == ""
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.column_names == cols
    assert table.to_pylist() == rows
