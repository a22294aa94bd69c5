"""``qaccel`` command line. Each subcommand lives in ``qaccel/commands/<name>.py`` and
exposes ``register(subparsers)``, which adds its parser and sets ``func(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import sys

# one line per subcommand module; order is the order of `qaccel --help`
COMMAND_MODULES = [
    "qaccel.commands.demo",
    "qaccel.commands.verilog",
    "qaccel.commands.perf",
    "qaccel.commands.energy",
    "qaccel.commands.synth",
    "qaccel.commands.quantize",
]


class CliError(Exception):
    """A user-facing error: printed as ``qaccel: error: ...`` with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qaccel",
        description="Quantized-inference systolic accelerator: RTL, cycle model, quantization.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CliError, ValueError, FileNotFoundError) as exc:
        print(f"qaccel: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
