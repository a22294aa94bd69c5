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
    "qaccel.commands.run",
    "qaccel.commands.train",
    "qaccel.commands.sweep",
    "qaccel.commands.search",
    "qaccel.commands.pareto",
]


class CliError(Exception):
    """A user-facing error: printed as ``qaccel: error: ...`` with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qaccel",
        description="Quantized-inference systolic accelerator: RTL, cycle model, quantization.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception as exc:          # one broken subcommand must not take the CLI down
            _register_broken(sub, name, exc)
            continue
        module.register(sub)
    return parser


def _register_broken(sub, module_name: str, exc: Exception) -> None:
    """A subcommand whose module fails to import: it reports why when invoked."""
    cmd = module_name.rsplit(".", 1)[-1]
    reason = f"{type(exc).__name__}: {exc}"
    p = sub.add_parser(cmd, help=f"(unavailable: {reason})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def fail(_args):
        raise CliError(f"command {cmd!r} is unavailable: {module_name} failed to import "
                       f"({reason})")

    p.set_defaults(func=fail)


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
