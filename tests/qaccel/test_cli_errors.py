"""Bad input to demo / verilog / perf / energy / synth: exit status 2, one ``qaccel: error:``
line naming the option, field or file, no traceback, and nothing computed or printed first
(issue 7, section 4). One test per class of problem, then every listed input at once."""

from __future__ import annotations

import argparse
import errno
import math
import os
import pathlib
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from qaccel.sim import ArrayConfig, random_job, reference_gemm
from qaccel.sim.cycle import simulate

from qaccel.cli import main
from qaccel.commands import demo, options
from qaccel.networks import MAX_ROWS, build_network

ON_LINUX = pathlib.Path("/proc/version").is_file()
linux_only = pytest.mark.skipif(not ON_LINUX, reason="uses /proc as the unwritable place")


# ---- paths: output_file / input_file / output_dir ----------------------------------------

def _refused(type_fn, value) -> str:
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        type_fn(value)
    return str(exc.value)


def test_output_file_refuses_directories_and_unwritable_places(tmp_path):
    assert "is a directory" in _refused(options.output_file, str(tmp_path))
    assert "empty" in _refused(options.output_file, "")
    afile = tmp_path / "a.txt"
    afile.write_text("x")
    # a parent that is a file, however deep the missing part
    assert f"{str(afile)!r} is not a directory" in _refused(options.output_file,
                                                           str(afile / "sub" / "o.json"))
    if ON_LINUX:
        assert "/proc/version" in _refused(options.output_file, "/proc/version")
        assert "cannot create directory '/proc/nope'" in _refused(options.output_file,
                                                                  "/proc/nope/o.json")


def test_output_file_creates_missing_parents_and_keeps_existing_files(tmp_path):
    out = tmp_path / "a" / "b" / "o.json"
    assert options.output_file(str(out)) == out
    assert out.parent.is_dir() and not out.exists()      # the folder, not the file
    old = tmp_path / "old.csv"
    old.write_text("kept")
    assert options.output_file(str(old)) == old
    assert old.read_text() == "kept"                     # the write probe does not truncate


def test_input_file_and_output_dir(tmp_path):
    assert "is a directory" in _refused(options.input_file, str(tmp_path))
    assert "does not exist" in _refused(options.input_file, str(tmp_path / "none.csv"))
    afile = tmp_path / "a.txt"
    afile.write_text("x")
    assert options.input_file(str(afile)) == afile
    assert "is not a directory" in _refused(options.output_dir, str(afile))
    new = tmp_path / "w" / "x"
    assert options.output_dir(str(new)) == new and new.is_dir()
    if ON_LINUX:
        assert "/proc/nope" in _refused(options.output_dir, "/proc/nope/w")


def test_every_path_option_of_these_commands_is_checked(tmp_path):
    """Each path option's argparse type is one of the shared checks (or --plot's, which
    ends in output_file): no bare pathlib.Path left to fail after the work is done."""
    from qaccel.cli import build_parser
    from qaccel.commands import energy

    checked = {options.output_file, options.input_file, options.output_dir,
               energy._plot_file}
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = set()
    for cmd in ("demo", "verilog", "perf", "energy", "synth"):
        for action in subs.choices[cmd]._actions:
            assert action.type not in (pathlib.Path, str, open), (cmd, action.option_strings)
            if action.type in checked:
                found.add((cmd, action.option_strings[-1]))
    assert found >= {("verilog", "--output"), ("perf", "--topology"), ("perf", "--json"),
                     ("perf", "--csv"), ("energy", "--topology"), ("energy", "--json"),
                     ("energy", "--csv"), ("energy", "--energy-table"), ("energy", "--plot"),
                     ("synth", "--json")}


# ---- numbers ------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "0", "-1", "1e400", "ten", ""])
def test_positive_float_refuses_non_finite_and_non_positive(bad):
    assert repr(bad) in _refused(options.positive_float, bad)
    assert math.isclose(options.positive_float("1e3"), 1000.0)


@pytest.mark.parametrize("fn, bad", [(options.positive_int, "0"), (options.positive_int, "-3"),
                                     (options.positive_int, "1.5"),
                                     (options.nonnegative_int, "-1")])
def test_integer_types(fn, bad):
    _refused(fn, bad)
    assert fn("7") == 7


# ---- sweep and plot -----------------------------------------------------------------------

@pytest.mark.parametrize("sweep, needles", [
    ("", ["argument --sweep: empty list"]),
    ("W8A8,,W4A4", ["argument --sweep: '' is not a bit-width pair"]),
    ("W8A8,W1A8", ["--sweep W1A8: ArrayConfig.w_bits"]),
    ("W16A16", ["--sweep W16A16: ", "mult_bits must be <= 30"]),   # the W8A8 base is valid
])
def test_sweep_is_validated_before_any_report(cli_error, topo, capsys, sweep, needles):
    argv = ["energy", "--topology", str(topo), "--rows", "8", "--cols", "8", "--sweep", sweep]
    if sweep == "W16A16":
        argv += ["--mult-bits", "31", "--acc-bits", "31"]
    err = cli_error(argv)
    assert all(n in err for n in needles)
    assert capsys.readouterr().out == ""            # no report printed before the error


def test_plot_path_printed_is_the_file_written(topo, tmp_path, capsys, cli_error):
    stem = tmp_path / "fig"
    assert main(["energy", "--topology", str(topo), "--rows", "8", "--cols", "8",
                 "--sweep", "W8A8", "--plot", str(stem)]) == 0
    png = tmp_path / "fig.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and not stem.exists()
    assert f"wrote {png}" in capsys.readouterr().err
    err = cli_error(["energy", "--topology", str(topo), "--plot", str(tmp_path)])
    assert "argument --plot" in err and "is a directory" in err
    assert not (tmp_path.parent / (tmp_path.name + ".png")).exists()
    assert "cannot save a figure as '.json'" in cli_error(
        ["energy", "--topology", str(topo), "--plot", str(tmp_path / "f.json")])


# ---- sizes: demo and networks -------------------------------------------------------------

def test_demo_dimension_above_the_array_is_refused_first(cli_error, capsys):
    err = cli_error(["demo", "-T", "1000000000", "-K", "1000", "-N", "1000"])
    assert "-T 1000000000 exceeds 65535" in err and "dim_bits 16" in err
    assert capsys.readouterr().out == ""


def test_demo_refuses_a_job_larger_than_memory(cli_error, capsys, monkeypatch):
    err = cli_error(["demo", "-T", "65535", "-K", "65535", "-N", "65535"])
    assert "-T 65535 -K 65535 -N 65535 needs about" in err and "X[65535x65535]" in err
    assert "available" in err
    # the limit is the memory actually available: a modest job fails only when it is scarce
    need = demo.job_memory_bytes(ArrayConfig(), 2000, 500, 300)
    monkeypatch.setattr(demo, "available_memory", lambda: int(need / demo.MEMORY_SHARE) - 1)
    assert "-T 2000 -K 500 -N 300 needs about" in cli_error(
        ["demo", "-T", "2000", "-K", "500", "-N", "300"])
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("cfg", [ArrayConfig(rows=8, cols=4, acc_depth=16, per_channel=True),
                                 ArrayConfig(rows=4, cols=8, acc_depth=32)])
@pytest.mark.parametrize("T, K, N", [(40, 22, 14), (20, 9, 30)])
def test_demo_memory_estimate_bounds_the_measured_peak(cfg, T, K, N):
    """The estimate is at least the peak tracemalloc sees for the demo's numpy work, and its
    data part is not more than twice that peak."""
    tracemalloc.start()
    try:
        job = random_job(cfg, T, K, N, np.random.default_rng(1))
        reference_gemm(cfg, job)
        simulate(cfg, job)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    est = demo.job_memory_bytes(cfg, T, K, N)
    assert peak <= est and est - (1 << 20) <= 2 * peak


def test_network_sizes_are_bounded_before_torch(cli_error):
    with pytest.raises(ValueError, match="batch x seq_len = 1,000,000,000 rows"):
        build_network("bert_base", seq_len=10**9)
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        build_network("resnet18", image_size=0)
    with pytest.raises(ValueError, match="batch x image_size x image_size"):
        build_network("resnet18", batch=MAX_ROWS // (224 * 224) + 1)
    model, x = build_network("bert_base", seq_len=MAX_ROWS)          # the bound itself builds
    assert tuple(x.shape) == (1, MAX_ROWS, 768)
    err = cli_error(["perf", "--network", "bert_base", "--seq-len", "1000000000"])
    assert "seq_len" in err and "16,777,216" in err
    assert "argument --batch" in cli_error(["perf", "--network", "resnet18", "--batch", "0"])


def test_impossible_bit_widths_blame_mult_bits(cli_error, tmp_path):
    err = cli_error(["verilog", "--w-bits", "16", "--a-bits", "16", "--mult-bits", "31",
                     "-o", str(tmp_path / "x.v")])
    assert "mult_bits must be <= 30" in err and "[32, 31]" not in err
    assert not (tmp_path / "x.v").exists()


# ---- writing fails after the checks: OSError names the file, exit 2 -----------------------

def test_write_failure_names_the_file(topo, tmp_path, monkeypatch, cli_error):
    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))    # no file name, as EIO/ENOSPC

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    js = tmp_path / "r.json"
    err = cli_error(["perf", "--topology", str(topo), "--json", str(js)])
    assert err.strip() == f"qaccel: error: {js}: {os.strerror(errno.ENOSPC)}"
    err = cli_error(["verilog", "-o", str(tmp_path / "x.v")])
    assert f"{tmp_path / 'x.v'}: " in err


# ---- every section-4 input of these commands, in one table --------------------------------

def section4_inputs(tmp: pathlib.Path, topo: pathlib.Path) -> list[tuple[list[str], list[str]]]:
    t = ["--topology", str(topo), "--rows", "8", "--cols", "8"]
    cases = [
        (["perf", *t, "--json", "/tmp"], ["--json", "'/tmp' is a directory"]),
        (["verilog", "-o", "/tmp"], ["--output", "'/tmp' is a directory"]),
        (["perf", *t, "--json", str(tmp / "f" / "x.json")], ["--json", str(tmp / "f")]),
        (["perf", "--topology", "/tmp"], ["--topology", "'/tmp' is a directory"]),
        (["perf", "--topology", str(tmp / "none.csv")], ["--topology", "none.csv"]),
        (["energy", *t, "--energy-table", str(tmp)], ["--energy-table", "is a directory"]),
        (["synth", "--json", str(tmp)], ["--json", "is a directory"]),
        (["energy", *t, "--plot", str(tmp)], ["--plot", "is a directory"]),
        (["energy", *t, "--clock-mhz", "nan"], ["--clock-mhz", "'nan'"]),
        (["energy", *t, "--clock-mhz", "0"], ["--clock-mhz", "'0'"]),
        (["energy", *t, "--sweep", ""], ["--sweep", "empty"]),
        (["energy", *t, "--sweep", "W1A8"], ["--sweep W1A8", "w_bits"]),
        (["demo", "-T", "1000000000", "-K", "1000", "-N", "1000"], ["-T 1000000000"]),
        (["demo", "-T", "65535", "-K", "65535", "-N", "65535"], ["-T 65535 -K 65535 -N 65535",
                                                                 "memory"]),
        (["demo", "--seed", "-1"], ["--seed"]),
        (["perf", "--network", "bert_base", "--seq-len", "1000000000"], ["seq_len"]),
        (["verilog", "--w-bits", "16", "--a-bits", "16", "--mult-bits", "31", "-o",
          str(tmp / "x.v")], ["mult_bits"]),
    ]
    if ON_LINUX:
        cases += [
            (["perf", *t, "--csv", "/proc/version"], ["--csv", "/proc/version"]),
            (["perf", *t, "--json", "/proc/nope/x.json"], ["--json", "/proc/nope"]),
            (["verilog", "-o", "/proc/x.v"], ["--output", "/proc"]),
        ]
    return cases


def test_section4_inputs_exit_2_naming_the_field(tmp_path, topo, capsys, cli_error):
    (tmp_path / "f").write_text("a file where a folder is expected")
    cases = section4_inputs(tmp_path, topo)
    for argv, needles in cases:
        err = cli_error(argv)
        out = capsys.readouterr().out
        assert "Traceback" not in err, argv
        assert all(n in err for n in needles), (argv, err)
        assert out == "", (argv, out)               # refused before anything was computed
    assert len(cases) >= 17


@pytest.mark.parametrize("argv, needle", [
    (["perf", "--topology", "/tmp"], "argument --topology: '/tmp' is a directory"),
    (["energy", "--network", "resnet18", "--sweep", "W1A8"], "--sweep W1A8"),
])
def test_section4_through_the_console_entry_point(tmp_path, argv, needle):
    env = {**os.environ, "QACCEL_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "qaccel", *argv], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("qaccel: error: ") and needle in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("command", ["perf", "energy"])
def test_seq_len_with_a_topology_file_is_refused_not_ignored(cli_error, topo, capsys, command):
    err = cli_error([command, "--topology", str(topo), "--seq-len", "16"])
    assert "--seq-len" in err and "--topology" in err
    assert capsys.readouterr().out == ""
