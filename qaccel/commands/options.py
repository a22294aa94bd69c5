"""Shared CLI options that build an :class:`sim.ArrayConfig`."""

from __future__ import annotations

import argparse

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
