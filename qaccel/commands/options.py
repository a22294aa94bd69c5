"""Shared CLI options that build an :class:`sim.ArrayConfig`."""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile

from qaccel.sim import ArrayConfig


def add_array_options(parser: argparse.ArgumentParser, **defaults) -> None:
    d = ArrayConfig(**defaults)
    g = parser.add_argument_group("array configuration")
    g.add_argument("--rows", type=int, default=d.rows, help="PE rows (K per tile)")
    g.add_argument("--cols", type=int, default=d.cols, help="PE columns (N per tile)")
    g.add_argument("--w-bits", type=int, default=d.w_bits, help="weight bits")
    g.add_argument("--a-bits", type=int, default=d.a_bits, help="activation bits")
    g.add_argument("--a-signed", action="store_true", default=d.a_signed,
                   help="signed activations (default unsigned, asymmetric)")
    g.add_argument("--acc-bits", type=int, default=d.acc_bits, help="accumulator bits")
    g.add_argument("--mult-bits", type=int, default=d.mult_bits, help="requant multiplier bits")
    scal = g.add_mutually_exclusive_group()
    scal.add_argument("--per-channel", dest="per_channel", action="store_true",
                      default=d.per_channel, help="per-output-channel requantization")
    scal.add_argument("--per-tensor", dest="per_channel", action="store_false",
                      help="one (M, S) per tensor")
    g.add_argument("--acc-depth", type=int, default=d.acc_depth,
                   help="accumulator entries per column (longest T-tile)")


def config_from_args(args: argparse.Namespace) -> ArrayConfig:
    return ArrayConfig(rows=args.rows, cols=args.cols, w_bits=args.w_bits, a_bits=args.a_bits,
                       a_signed=args.a_signed, acc_bits=args.acc_bits, mult_bits=args.mult_bits,
                       per_channel=args.per_channel, acc_depth=args.acc_depth)


# ---- files: one check for every path option, before anything is computed -------------------

def output_file(value: str) -> pathlib.Path:
    """argparse ``type=`` for a file the command will write.

    Refused (argparse exits 2 naming the option): an existing directory, a path whose
    parent directory is missing or not a directory, a parent (or an existing file) that is
    not writable. Checked when the arguments are parsed, so nothing is computed and then
    lost for want of a writable output.
    """
    path = pathlib.Path(value).expanduser()
    if value == "" or path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is a directory, not a file")
    parent = path.parent
    if not parent.exists():
        raise argparse.ArgumentTypeError(f"directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{str(parent)!r} is not a directory")
    if path.exists() and not path.is_file():
        raise argparse.ArgumentTypeError(f"{value!r} is not a regular file")
    # a real open, not os.access: root passes access() on read-only files and on /proc
    try:
        if path.exists():
            with open(path, "ab"):
                pass
        else:
            with tempfile.TemporaryFile(dir=parent):
                pass
    except OSError as exc:
        where = value if path.exists() else f"directory {str(parent)!r}"
        raise argparse.ArgumentTypeError(f"{where} is not writable ({exc.strerror})") from None
    return path


def input_file(value: str) -> pathlib.Path:
    """argparse ``type=`` for a file the command will read: it exists, is a regular file
    (not a directory) and is readable."""
    path = pathlib.Path(value).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{value!r} does not exist")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is a directory, not a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value!r} is not a regular file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{value!r} is not readable")
    return path


def output_dir(value: str) -> pathlib.Path:
    """argparse ``type=`` for a directory the command will create (if missing) and write."""
    path = pathlib.Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} exists and is not a directory")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{str(probe)!r} is not a writable directory")
    return path
