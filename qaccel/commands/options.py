"""Shared CLI options: the array configuration, and argparse types that refuse bad values
when the arguments are parsed (exit status 2 naming the option), before any work."""

from __future__ import annotations

import argparse
import math
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
                   help="signed activations (default: unsigned, asymmetric)")
    g.add_argument("--acc-bits", type=int, default=d.acc_bits, help="accumulator bits")
    g.add_argument("--mult-bits", type=int, default=d.mult_bits, help="requant multiplier bits")
    scal = g.add_mutually_exclusive_group()
    default = "per-channel" if d.per_channel else "per-tensor"
    scal.add_argument("--per-channel", dest="per_channel", action="store_true",
                      default=d.per_channel,
                      help=f"per-output-channel requantization (default: {default})")
    scal.add_argument("--per-tensor", dest="per_channel", action="store_false",
                      help=f"one (M, S) per tensor (default: {default})")
    g.add_argument("--acc-depth", type=int, default=d.acc_depth,
                   help="accumulator entries per column (longest T-tile)")


def config_from_args(args: argparse.Namespace) -> ArrayConfig:
    return ArrayConfig(rows=args.rows, cols=args.cols, w_bits=args.w_bits, a_bits=args.a_bits,
                       a_signed=args.a_signed, acc_bits=args.acc_bits, mult_bits=args.mult_bits,
                       per_channel=args.per_channel, acc_depth=args.acc_depth)



# ---- numbers ------------------------------------------------------------------------------

def positive_float(value: str) -> float:
    """argparse ``type=`` for a finite float > 0 (refuses ``nan``, ``inf``, 0 and negatives)."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(x) or x <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, not {value!r}")
    return x


def fraction(value: str) -> float:
    """argparse ``type=`` for a number strictly between 0 and 1."""
    x = positive_float(value)
    if x >= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), not {value!r}")
    return x


def int_range(lo: int, hi: int | None = None, what: str | None = None):
    """An argparse ``type=`` for an integer in ``[lo, hi]`` (``hi=None``: no upper bound);
    ``what`` words the bound in errors (default ``in [lo, hi]`` / ``>= lo``)."""
    what = what or (f"in [{lo}, {hi}]" if hi is not None else f">= {lo}")

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if n < lo or (hi is not None and n > hi):
            raise argparse.ArgumentTypeError(f"must be {what}, not {n}")
        return n
    parse.__name__ = f"integer {what}"
    return parse


positive_int = int_range(1, what="a positive integer")
"""argparse ``type=`` for an integer >= 1."""
nonnegative_int = int_range(0, what="an integer >= 0")
"""argparse ``type=`` for an integer >= 0 (e.g. a random seed)."""


# ---- files: one check for every path option, before anything is computed -------------------

def _unwritable(directory: pathlib.Path) -> str | None:
    """Why no file can be created in ``directory`` (``None``: one can). A real create, not
    ``os.access``: root passes access() on read-only files and on /proc."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _make_dirs(directory: pathlib.Path) -> None:
    """Create ``directory`` and its missing parents, or explain why not (ArgumentTypeError)."""
    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise argparse.ArgumentTypeError(f"{str(probe)!r} is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"cannot create directory {str(directory)!r} ({exc.strerror or exc})") from None


def _opened(path: pathlib.Path, value: str, mode: str, what: str) -> pathlib.Path:
    """``path`` once it really opens in ``mode`` (not ``os.access``: root passes that on
    read-only files and on /proc); else an argparse error saying it is not ``what``."""
    try:
        with open(path, mode):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not {what} ({exc.strerror or exc})") from None
    return path


def output_file(value: str) -> pathlib.Path:
    """argparse ``type=`` for a file the command will write.

    Refused (argparse exits 2 naming the option): an empty path, an existing directory or
    other non-regular file, a parent that is a file or cannot be created, a directory (or an
    existing file) that is not writable. Missing parent directories are created. Checked
    when the arguments are parsed, so nothing is computed and then lost for want of a
    writable output.
    """
    if not value:
        raise argparse.ArgumentTypeError("empty file name")
    path = pathlib.Path(value).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is a directory, not a file")
    if path.exists():
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"{value!r} is not a regular file")
        return _opened(path, value, "ab", "writable")
    _make_dirs(path.parent)
    why = _unwritable(path.parent)
    if why:
        raise argparse.ArgumentTypeError(
            f"cannot write {value!r}: directory {str(path.parent)!r} is not writable ({why})")
    return path


def input_file(value: str) -> pathlib.Path:
    """argparse ``type=`` for a file the command will read: it exists, is a regular file
    (not a directory) and can be opened for reading."""
    if not value:
        raise argparse.ArgumentTypeError("empty file name")
    path = pathlib.Path(value).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{value!r} does not exist")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is a directory, not a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value!r} is not a regular file")
    return _opened(path, value, "rb", "readable")


def output_dir(value: str) -> pathlib.Path:
    """argparse ``type=`` for a directory the command will write into: created (with its
    parents) if missing; refused if it is a file, cannot be created or is not writable."""
    if not value:
        raise argparse.ArgumentTypeError("empty directory name")
    path = pathlib.Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} exists and is not a directory")
    _make_dirs(path)
    why = _unwritable(path)
    if why:
        raise argparse.ArgumentTypeError(f"directory {value!r} is not writable ({why})")
    return path
