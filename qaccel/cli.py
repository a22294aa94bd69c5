"""``qaccel`` command line. Each subcommand lives in ``qaccel/commands/<name>.py`` and
exposes ``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.

Exit status: 0 success, 1 a check failed (e.g. RTL != model), 2 bad input (a one-line
``qaccel: error: ...`` naming the option, field or file; never a traceback), 130
interrupted, 141 stdout closed early (``qaccel perf ... | head``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys

from qaccel import workspace
from qaccel.commands.options import output_dir

# one line per subcommand module; order is the order of `qaccel --help`
COMMAND_MODULES = [
    "qaccel.commands.demo",
    "qaccel.commands.verilog",
    "qaccel.commands.perf",
    "qaccel.commands.energy",
    "qaccel.commands.synth",
    "qaccel.commands.quantize",
    "qaccel.commands.qat",
    "qaccel.commands.run",
    "qaccel.commands.train",
    "qaccel.commands.sweep",
    "qaccel.commands.search",
    "qaccel.commands.pareto",
]


class CliError(Exception):
    """A user-facing error: printed as ``qaccel: error: ...`` with exit status 2."""


def package_version() -> str:
    """The installed distribution's version, else ``qaccel.__version__`` (a source tree)."""
    try:
        return importlib.metadata.version("qaccel")
    except importlib.metadata.PackageNotFoundError:
        from qaccel import __version__

        return __version__


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already gives it.
    Flags (``store_true``) and options without a default (``None``) show none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or default is None or default is argparse.SUPPRESS
                or isinstance(default, bool) or not action.option_strings
                or action.nargs == 0):
            return text
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors as one ``qaccel: error: ...`` line (exit status 2, argparse's) and a
    pointer to ``--help``, instead of the full usage; defaults shown in every help.
    Subparsers inherit the class (argparse's ``parser_class`` default)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"qaccel: error: {message}\n(see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="qaccel",
        description="Quantized-inference systolic accelerator: RTL, cycle model, quantization.")
    parser.add_argument("--version", action="version", version=f"qaccel {package_version()}",
                        help="print the version and exit")
    parser.add_argument(
        "--workdir", type=output_dir, metavar="DIR",
        help="work directory for builds, caches and run outputs; created if missing "
             "(default: $QACCEL_HOME if set, else $XDG_CACHE_HOME/qaccel, i.e. "
             f"~/.cache/qaccel; here: {workspace.default_root()})")
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
    """A subcommand whose module fails to import: ``qaccel --help`` lists it with the
    module and the exception, and invoking it reports the same (exit status 2)."""
    cmd = module_name.rsplit(".", 1)[-1]
    why = f"{module_name} failed to import ({type(exc).__name__}: {exc})"
    # no prefix characters: every argument, "--help" included, lands in `rest`
    p = sub.add_parser(cmd, help=f"UNAVAILABLE: {why}", add_help=False, prefix_chars="\0")
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def fail(_args):
        raise CliError(f"command {cmd!r} is unavailable: {why}")

    p.set_defaults(func=fail)


def _os_error(exc: OSError) -> str:
    """``path: reason`` of an OSError (both paths of a rename/copy)."""
    reason = exc.strerror or str(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def _silence_stdout() -> None:
    """After a broken pipe: send what is left of stdout to /dev/null, so the interpreter's
    final flush does not fail again (Python's documented recipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):   # not a real file descriptor (tests)
        pass


def main(argv: list[str] | None = None) -> int:
    """Run ``qaccel argv``; returns the exit status. Usage errors (bad option values, bad
    paths) exit through argparse with status 2 before any work."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.workdir is not None:
            workspace.use(args.workdir)
        return int(args.func(args) or 0)
    except (CliError, ValueError) as exc:
        print(f"qaccel: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:               # `qaccel perf ... | head`: stop quietly
        _silence_stdout()
        return 141
    except OSError as exc:                # a file that could not be read or written
        print(f"qaccel: error: {_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qaccel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
