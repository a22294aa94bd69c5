"""``qaccel pareto``: the front of a results store, printed and plotted."""

import json

import pytest

from qaccel.cli import main
from qaccel.sweep.store import Store

# (energy_j, accuracy, latency_s, w_bits): the front in (energy, accuracy) is rows 0, 1, 3
POINTS = [(1.0, 90.0, 5.0, 4), (2.0, 95.0, 3.0, 6), (3.0, 94.0, 1.0, 7), (4.0, 97.0, 4.0, 8),
          (2.5, 91.0, 6.0, 5)]


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "results.sqlite"
    with Store(path) as st:
        for i, (e, a, lat, w) in enumerate(POINTS):
            st.put(f"h{i}", {"w_bits": w, "rows": 8}, {"energy_j": e, "accuracy": a,
                                                      "latency_s": lat},
                   workload="model:digits_cnn")
        st.put("bad", {"w_bits": 2, "rows": 8}, {}, status="error", error="boom",
               workload="model:digits_cnn")
    return path


def test_front_printed_plotted_and_json(store, tmp_path, capsys):
    png, js = tmp_path / "front.png", tmp_path / "front.json"
    assert main(["pareto", str(store), "--x", "energy", "--y", "accuracy", "-o", str(png),
                 "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 non-dominated of 5 points (energy_j min, accuracy max)")
    lines = out.splitlines()
    assert lines[1].split() == ["energy_j", "accuracy", "w_bits"]
    assert [ln.split()[2] for ln in lines[2:5]] == ["4", "6", "8"]      # their configurations
    assert png.read_bytes()[:4] == b"\x89PNG"
    doc = json.loads(js.read_text())
    assert [p["config_hash"] for p in doc["front"]] == ["h0", "h1", "h3"]


def test_three_objectives(store, tmp_path, capsys):
    assert main(["pareto", str(store), "--x", "energy", "--y", "accuracy", "--z", "latency",
                 "-o", str(tmp_path / "f3.png")]) == 0
    out = capsys.readouterr().out
    # (3.0, 94, 1.0) has the lowest latency: on the 3-D front; (2.5, 91, 6.0) is dominated
    assert out.startswith("4 non-dominated of 5 points")


def test_bad_input_exit_2(store, tmp_path, cli_error):
    assert "no column 'area_cells'" in cli_error(["pareto", str(store), "--x", "area"])
    assert "unknown objective 'speed'" in cli_error(["pareto", str(store), "--x", "speed"])
    assert "no finished point" in cli_error(["pareto", str(store), "--workload", "nope"])
    assert "same column twice" in cli_error(["pareto", str(store), "--x", "energy",
                                             "--y", "energy_j"])
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database" * 100)
    assert "not a usable SQLite database" in cli_error(["pareto", str(junk)])
    with pytest.raises(SystemExit) as exc:
        main(["pareto", str(tmp_path / "missing.sqlite")])
    assert exc.value.code == 2
