"""The peer-library bench (AIMET, Brevitas) and the per-method timing bench: their table
assembly, skip messages and the subprocess fallback, without the peers' long runs."""

from __future__ import annotations

import sys
import types

import pytest

from qaccel.benches import peers, ptq
from qaccel.benches.peers import Result


def _r(library, acc, sqnr, cpu, method="nearest", iters=0, model="digits_cnn"):
    return Result(model, "W4A8 per-tensor", method, library, acc, sqnr, cpu, cpu * 2, iters)


def test_setting_labels():
    assert peers.setting(4, 8, False) == "W4A8 per-tensor"
    assert peers.setting(8, 8, True) == "W8A8 per-channel"


def test_skip_message_names_the_module_the_interpreter_and_the_error():
    msg = peers.skip_message("aimet", "/venv/bin/python", "ModuleNotFoundError: no aimet")
    assert msg.startswith("- AIMET skipped: `aimet_torch` is not importable with "
                          "`/venv/bin/python` (ModuleNotFoundError: no aimet)")
    assert "PEER_PYTHON" in msg
    assert "`brevitas`" in peers.skip_message("brevitas", "py", "")
    with pytest.raises(ValueError, match="peer: unknown 'tvm'"):
        peers.skip_message("tvm", "py", "x")


def test_results_table_and_comparison_pick_our_best_row():
    rows = [_r("qaccel (mse)", 94.62, 8.18, 0.3), _r("qaccel (output_mse)", 97.59, 10.12, 0.4),
            _r("AIMET (min_max, default)", 96.85, 10.65, 0.2),
            _r("qaccel (output_mse)", 98.14, 11.37, 5.0, "AdaRound", 8000),
            _r("AIMET (min_max)", 97.22, 12.73, 10.0, "AdaRound", 8000)]
    table = peers.results_table(rows, {"digits_cnn": 99.07})
    assert len(table) == 2 + len(rows)
    assert "| qaccel (mse) | 94.62 | -4.45 | 8.18 | 0.30 | 0.60 | - |" in table[2]
    assert table[5].endswith("| 5.00 | 10.00 | 1600 |")            # 8000 steps / 5 CPU s
    cmp = peers.comparison(rows)
    assert len(cmp) == 4                                            # head, rule, 2 peers
    assert ("| digits_cnn | W4A8 per-tensor | nearest | qaccel (output_mse) | "
            "AIMET (min_max, default) | +0.74 | -0.53 | 0.5 |") in cmp
    assert cmp[3].endswith("| +0.92 | -1.36 | 2.0 |")
    assert peers.comparison(rows[:2]) == []                         # no peer row


def _report(**extra):
    rep = {"python": "/p/python", "versions": {"torch": "2.13.0"}, "fp32": {"digits_cnn": 99.0},
           "results": [], "skipped": {}, "notes": []}
    rep.update(extra)
    return rep


def test_render_lists_skips_and_notes_before_the_table():
    rep = _report(results=[vars(_r("qaccel (mse)", 98.0, 20.0, 1.0))],
                  skipped={"aimet": peers.skip_message("aimet", "/p/python", "ImportError: x")},
                  notes=["torchvision patched"])
    text = peers.render(rep)
    assert "FP32: digits_cnn 99.00 %." in text
    assert text.index("- torchvision patched") < text.index("- AIMET skipped") \
        < text.index("| Model | Setting |")
    assert "qaccel against each peer" not in text
    assert f"AdaRound {peers.ADA_ITERS} iterations per layer" in text


def test_run_with_a_broken_peer_interpreter_skips_both_peers(tmp_path, monkeypatch):
    monkeypatch.setenv("QACCEL_HOME", str(tmp_path))
    monkeypatch.setenv(peers.PEER_PYTHON_ENV, str(tmp_path / "no-python"))
    calls = []

    def fake_measure(models=peers.MODELS, peers=("aimet", "brevitas"), work=None):
        calls.append(tuple(peers))
        return _report()

    monkeypatch.setattr(peers, "measure", fake_measure)
    text = peers.run()
    assert calls == [()]                                             # ours only, in-process
    for name in ("AIMET", "Brevitas"):
        assert f"- {name} skipped:" in text
    assert f"`{tmp_path / 'no-python'}` (FileNotFoundError" in text


def test_measure_skips_a_peer_it_cannot_import_and_measures_ours(monkeypatch, tmp_path):
    monkeypatch.setitem(peers.PEER_MODULES, "brevitas", "qaccel_no_such_peer")
    missing = ["brevitas"]
    monkeypatch.setattr(peers, "ADA_ITERS", 5)
    monkeypatch.setattr(peers, "QAT_EPOCHS", 1)
    monkeypatch.setattr(peers, "NEAREST_BITS", ((4, 8, False),))
    monkeypatch.setattr(peers, "ADA_BITS", ((4, 8, False),))
    rep = peers.measure(models=("digits_cnn",), peers=tuple(missing), work=tmp_path)
    assert set(rep["skipped"]) == set(missing)
    assert "`qaccel_no_such_peer` is not importable" in rep["skipped"]["brevitas"]
    assert "ModuleNotFoundError" in rep["skipped"]["brevitas"]
    assert rep["python"] == sys.executable
    assert {r["setting"] for r in rep["results"]} == {"W4A8 per-tensor", "W4A4 per-tensor"}
    libs = {(r["method"], r["library"]) for r in rep["results"]}
    assert libs == {(m, f"qaccel ({w})") for m in ("nearest", "AdaRound", "QAT (1 epochs)")
                    for w in ("mse", "output_mse")}
    near = {r["library"]: r for r in rep["results"] if r["method"] == "nearest"}
    # the output-aware range: 97.6 vs 94.6 % on digits_cnn W4A8 per tensor (test_ranges)
    assert near["qaccel (output_mse)"]["accuracy"] > near["qaccel (mse)"]["accuracy"] + 1.5


# ---- per-method timing (qaccel/benches/ptq.py) ---------------------------------------------

def test_method_steps_and_timing_tables():
    assert ptq.method_steps("nearest", 0) == 0
    assert ptq.method_steps("adaround", 4, iters=100) == 400
    assert ptq.method_steps("brecq", 2, iters=100) == 200
    assert ptq.bitsplit_epochs() == 100
    assert ptq.method_steps("bitsplit", 4, iters=1000) == 400        # capped at its epochs
    assert ptq.method_steps("nwq", 1, nwq_iters=2000) == 2000
    assert ptq.method_steps("qat", 5, qat_batches=16) == 80
    with pytest.raises(ValueError, match="method: unknown 'gptq'"):
        ptq.method_steps("gptq", 1)
    lines = ptq.timing_tables([("digits_cnn", "nwq", 1, 2000, 4.0, 98.3),
                               ("digits_cnn", "nearest", "-", 0, 0.3, 96.5)],
                              [("digits_cnn", "nwq", "0,3,7,12", 4.0, 2000)])
    assert "| digits_cnn | NWQ | 1 | 2000 | 4.00 | 500 | 98.30 |" in lines
    assert "| digits_cnn | nearest | - | 0 | 0.30 | - | 96.50 |" in lines
    assert "| digits_cnn | NWQ | 0,3,7,12 | 4.00 | 500 |" in lines


def test_unit_clock_times_each_loop_item_and_restores_bar():
    def bar(items, progress, *, desc, unit="it"):
        return items

    mod = types.SimpleNamespace(bar=bar)
    with ptq.unit_clock(mod) as spans:
        for name, _ in mod.bar([("conv1", 1), ("fc", 2)], False, desc="AdaRound"):
            sum(range(20000 if name == "conv1" else 10))
        for _ in mod.bar(range(1, 4), False, desc="QAT"):
            break                                       # early stop: the item still counts
    assert mod.bar is bar
    assert [(d, lbl) for d, lbl, _ in spans] == [("AdaRound", "conv1"), ("AdaRound", "fc"),
                                                  ("QAT", "epoch 1")]
    assert spans[0][2] >= spans[1][2] >= 0
