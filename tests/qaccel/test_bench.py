"""``python -m qaccel.bench``: tables go to ``--out`` (never into the package), the SCALE-Sim
reference directory is an explicit option with a clean skip, bad options exit 2."""

from __future__ import annotations

import pathlib

import pytest

import qaccel
from qaccel.bench import main
from qaccel.benches import BenchOptions, scalesim_peer_dir

PEER = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "peer" / "scalesim"


def _package_files() -> set[pathlib.Path]:
    root = pathlib.Path(qaccel.__file__).parent
    return {p for p in root.rglob("*") if "__pycache__" not in p.parts}


def test_scalesim_bench_without_peer_writes_only_to_out(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("QACCEL_SCALESIM_PEER", raising=False)
    monkeypatch.chdir(tmp_path)                  # relative defaults would land here
    before = _package_files()
    out, figs = tmp_path / "tables", tmp_path / "figs"
    assert main(["scalesim", "--out", str(out), "--figures", str(figs)]) == 0
    text = (out / "scalesim.md").read_text()
    assert "Not run: no SCALE-Sim 3.0.0 reports given" in text
    assert "qaccel ws, double-buffered weights | 256 |" in text
    assert "- [scalesim](scalesim.md)" in (out / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs", "tables"]
    assert _package_files() == before
    assert str(out / "scalesim.md") in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["nosuch"], "unknown bench(es) nosuch; choose from scalesim"),
    (["scalesim", "--scalesim-peer", "/nonexistent"], "'/nonexistent' is not a directory"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "README.md").exists()


def test_peer_from_environment_is_validated(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QACCEL_SCALESIM_PEER", str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        main(["scalesim", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "QACCEL_SCALESIM_PEER: " in capsys.readouterr().err
    with pytest.raises(ValueError, match="scalesim_peer: .* has no resnet50.csv"):
        BenchOptions(tmp_path, tmp_path, scalesim_peer=tmp_path)


@pytest.mark.shared
@pytest.mark.skipif(not PEER.is_dir(), reason="../shared/peer/scalesim not present")
def test_scalesim_bench_with_peer_compares_the_reports(tmp_path):
    from qaccel.benches import scalesim

    text = scalesim.run(BenchOptions(tmp_path, tmp_path, scalesim_peer=scalesim_peer_dir(PEER)))
    assert "### SCALE-Sim's resnet50.csv (no padding, same GEMMs for both)" in text
    assert "SCALE-Sim's own report sums to" in text
