"""``qaccel quantize`` / ``qaccel sensitivity`` on the digits CNN: results, the printed
summary, and bad options refused with exit status 2 before any work."""

import argparse
import re

import numpy as np
import pytest
from qaccel.sim import executor
from qaccel.sim.network import IntNetwork

from qaccel import flow
from qaccel.cli import build_parser, main


def _status(argv) -> int:
    """Exit status of ``qaccel argv`` (argparse usage errors raise SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command gets as far as loading a model."""
    def boom(*_a, **_k):
        raise AssertionError("work started before the options were checked")
    monkeypatch.setattr(flow, "load_model", boom)


def test_quantize_writes_an_integer_network(tmp_path, capsys):
    out = tmp_path / "net.npz"
    rc = main(["quantize", "--model", "digits_cnn", "--w-bits", "8", "--a-bits", "8",
               "--per-channel", "--calib", "64", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    net = IntNetwork.load(out)
    assert net.meta["quant_config"]["per_channel"] is True
    assert [L.kind for L in net.layers].count("conv2d") == 3
    acc = dict(re.findall(r"(FP32|fake-quant|integer network) ([\d.]+)%", text))
    assert float(acc["integer network"]) == float(acc["fake-quant"])   # same decisions
    assert abs(float(acc["fake-quant"]) - float(acc["FP32"])) <= 1.0
    assert "max |diff| 1" in text or "max |diff| 0" in text
    # the summary: every layer and op, quantized or float
    assert "graph mode, W8A8 per-channel, 4 layers quantized, 0 ops float" in text
    assert re.search(r"\n  0 +Conv2d +8 +8 +8 +relu", text)
    assert "stay float: none" in text
    x = net.input_q.quantize(np.zeros((1, *net.input_shape)))
    assert executor.run(net, x).shape == (1, 10)


def test_quantize_with_per_layer_bits(tmp_path, capsys):
    out = tmp_path / "net"                                # .npz appended, as written
    rc = main(["quantize", "--calib", "64", "--layer-bits", "3:4:4", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert re.search(r"\n  3 +Conv2d +4 +8 +4 ", text)
    net = IntNetwork.load(tmp_path / "net.npz")
    assert [(L.name, L.w_bits, L.out_q.bits) for L in net.layers if L.kind == "conv2d"] == \
        [("0", 8, 8), ("3", 4, 4), ("7", 8, 8)]


def test_quantize_with_16bit_activation_exceptions(tmp_path, capsys):
    out = tmp_path / "net.npz"
    rc = main(["quantize", "--model", "digits_vit", "--calib", "64", "--a16", "auto:2",
               "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    picked = re.search(r"16-bit activations \(auto\): (.*)", text).group(1).split(", ")
    net = IntNetwork.load(out)
    assert len(picked) == 2 and [(o["name"], o["bits"]) for o in net.meta["quant_config"][
        "quantizer_bits"]] == [(p, 16) for p in picked]
    rc = main(["quantize", "--model", "digits_vit", "--calib", "64", "--a16",
               "quant_add_4,blocks.0.ln2", "-o", str(out)])
    assert rc == 0
    bits = {L.name: L.out_q.bits for L in IntNetwork.load(out).layers}
    assert (bits["quant_add_4"], bits["blocks.0.ln2"], bits["quant_add_6"]) == (16, 16, 8)
    capsys.readouterr()
    for bad, msg in ((["--a16", "blocks.9"], "--a16: unknown quantizer 'blocks.9'; the "
                                             "model's quantizers are 'embed.weight_quantizer'"),
                     (["--a16", "auto:x"], "argument --a16: 'x' is not an integer"),
                     (["--a16", "a,,b"], "argument --a16: expected auto:K or NAME")):
        assert _status(["quantize", "--model", "digits_vit", "--calib", "64", *bad,
                        "-o", str(tmp_path / "y.npz")]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "y.npz").exists()


BAD = [
    (["--w-bits", "1"], "argument --w-bits: must be in [2, 16], not 1"),
    (["--calib", "1000000000"], "argument --calib: must be in [1, 1258], not 1000000000"),
    (["--calib", "0"], "argument --calib: must be in [1, 1258], not 0"),
    (["--calib", "nan"], "argument --calib: 'nan' is not an integer"),
    (["--iterations", "-1"], "argument --iterations: must be in [0, 10000000], not -1"),
    (["--seed", "-3"], "argument --seed: must be in [0, 9223372036854775807], not -3"),
    (["--mult-bits", "40"], "argument --mult-bits: must be in [1, 32], not 40"),
    (["--acc-bits", "3"], "argument --acc-bits: must be in [4, 60], not 3"),
    (["--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
    (["--layer-bits", "3:4"], "argument --layer-bits: expected NAME:W_BITS:A_BITS"),
    (["--layer-bits", "3:4:99"], "argument --layer-bits: LayerOverride('3').a_bits must be in "
                                "[2, 16]"),
    (["--progress", "maybe"], "argument --progress: invalid choice: 'maybe'"),
]


@pytest.mark.parametrize("cmd", ["quantize", "sensitivity"])
@pytest.mark.parametrize("args, msg", BAD, ids=[a[0] for a, _ in BAD])
def test_bad_option_values_exit_2_before_any_work(cmd, args, msg, tmp_path, capsys, no_work):
    assert _status([cmd, *args, "-o", str(tmp_path / "x.npz")]) == 2
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize("argv, msg", [
    (["quantize", "-o", "{tmp}"], "argument -o/--output: '{tmp}' is a directory"),
    (["quantize", "-o", "/proc/net.npz"], "argument -o/--output: cannot write "
                                          "'/proc/net.npz': directory '/proc' is not writable"),
    (["quantize", "-o", "{tmp}/sub"], "argument -o/--output: '{tmp}/sub.npz' is a directory"),
    (["sensitivity", "-o", "{tmp}"], "argument -o/--output: '{tmp}' is a directory"),
    (["sensitivity", "-o", "{tmp}/r.md", "--plot", "{tmp}"],
     "argument --plot: '{tmp}' is a directory"),
    (["sensitivity", "-o", "/proc/r.md"], "argument -o/--output: cannot write '/proc/r.md'"),
])
def test_bad_output_paths_exit_2_before_any_work(argv, msg, tmp_path, capsys, no_work):
    (tmp_path / "sub.npz").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert _status(argv) == 2
    assert msg.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err


def test_cross_option_and_layer_name_errors_name_the_option(tmp_path, capsys, monkeypatch):
    rc = main(["quantize", "--w-bits", "16", "--a-bits", "16", "--acc-bits", "31",
               "-o", str(tmp_path / "x.npz")])
    assert rc == 2
    assert "--acc-bits (QuantConfig.acc_bits) must be in [32, 46]" in capsys.readouterr().err
    rc = main(["quantize", "--layer-bits", "conv9:4:4", "-o", str(tmp_path / "x.npz")])
    assert rc == 2
    assert ("--layer-bits: QuantConfig.layer_bits: unknown layer(s) 'conv9'; the model's "
            "quantizable layers are '0', '3', '7', '12'") in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
    # the default plot next to the report is checked before any work
    (tmp_path / "r.png").mkdir()
    monkeypatch.setattr(flow, "load_model", lambda *a, **k: pytest.fail("work started"))
    rc = main(["sensitivity", "-o", str(tmp_path / "r.md")])
    assert rc == 2 and "--plot (default next to the report)" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["quantize", "sensitivity"])
def test_every_option_has_help_with_its_default(cmd):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.choices[cmd]
    own = [a for a in p._actions if not isinstance(a, argparse._HelpAction)
           and a.dest not in ("workdir",)]
    assert len(own) >= 18
    for a in own:
        assert a.help and "default" in a.help or "required" in (a.help or ""), \
            (a.option_strings, a.help)
    text = " ".join(p.format_help().split())
    assert "(default: 2000)" in text and "(default: digits_cnn)" in text


def test_sensitivity_report(tmp_path, capsys):
    out = tmp_path / "sens.md"
    rc = main(["sensitivity", "--model", "digits_cnn", "--w-bits", "4", "--calib", "64",
               "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    md = out.read_text()
    assert "| 0.weight | weight | 4 |" in md and "test accuracy (%)" in md
    assert (tmp_path / "sens.png").read_bytes()[:4] == b"\x89PNG"
    assert "most sensitive:" in text
