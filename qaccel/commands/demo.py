"""``qaccel demo``: the product's main job until the end-to-end flow exists.

Generate Verilog for an array (the default one unless told otherwise), run one random
quantized GEMM on the cycle-level model and on the RTL (Verilator if available, else
Icarus, through cocotb), and report that they agree -- every output integer and the cycle
count -- with cycles and utilization.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from .options import add_array_options, config_from_args, nonnegative_int, positive_int

#: refuse a job whose estimated peak memory exceeds this share of the available memory
MEMORY_SHARE = 0.5


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="random quantized GEMM on the cycle model and the RTL; show they agree",
        description=__doc__.split("\n\n")[1].replace("\n", " "))
    add_array_options(p)
    p.add_argument("-T", type=positive_int, default=80, help="output pixels / rows of X")
    p.add_argument("-K", type=positive_int, default=22, help="reduction length")
    p.add_argument("-N", type=positive_int, default=14, help="output channels")
    p.add_argument("--seed", type=nonnegative_int, default=2026, help="random job seed")
    p.add_argument("--sim", choices=["auto", "verilator", "icarus"], default="auto",
                   help="HDL simulator (auto: Verilator if available, else Icarus)")
    p.add_argument("--waves", action="store_true", help="dump waveforms (also QACCEL_WAVES=1)")
    p.set_defaults(func=run)


def job_memory_bytes(cfg, T: int, K: int, N: int) -> int:
    """Estimated peak memory of the demo's job on the numpy side: X, W, the reference's
    T x N intermediates and the cycle model's stream beats (weights once per pass,
    activations once per n-tile, outputs), all int64, with the copies the model makes.
    Checked against tracemalloc in tests/qaccel/test_cli_errors.py."""
    from qaccel.sim.schedule import tiling

    til = tiling(cfg, T, K, N)
    Kp, Np = til.KT * cfg.rows, til.NT * cfg.cols
    act = til.NT * T * Kp
    weight = til.passes * cfg.rows * cfg.cols
    out = T * Np
    words = T * K + K * N + til.TT * cfg.acc_depth * Kp + Kp * Np + 4 * T * N
    return 8 * (words + 4 * (act + weight + out)) + (1 << 20)      # + Python objects


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``, else free
    physical pages); ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def check_job_size(cfg, T: int, K: int, N: int) -> None:
    """ValueError (naming -T/-K/-N) unless the job fits the array's dimension counters and,
    by estimate, the available memory -- before anything is allocated."""
    for name, v in (("T", T), ("K", K), ("N", N)):
        if v > cfg.max_dim:
            raise ValueError(f"-{name} {v} exceeds {cfg.max_dim}, the largest job dimension "
                             f"of the array (2**dim_bits - 1, dim_bits {cfg.dim_bits})")
    need, have = job_memory_bytes(cfg, T, K, N), available_memory()
    if have is not None and need > MEMORY_SHARE * have:
        raise ValueError(
            f"-T {T} -K {K} -N {N} needs about {_gib(need)} of memory (X[{T}x{K}], "
            f"W[{K}x{N}], Y[{T}x{N}] and the {cfg.rows}x{cfg.cols} array's stream beats); "
            f"{_gib(have)} is available: choose smaller -T/-K/-N")


def run(args: argparse.Namespace) -> int:
    from qaccel.rtl_build import default_simulator, generate_verilog_cached, run_jobs
    from qaccel.sim import random_job, reference_gemm
    from qaccel.sim.cycle import simulate
    from qaccel.sim.schedule import gemm_cycles

    cfg = config_from_args(args)
    check_job_size(cfg, args.T, args.K, args.N)
    rng = np.random.default_rng(args.seed)
    job = random_job(cfg, args.T, args.K, args.N, rng)       # ValueError -> exit 2
    sim = default_simulator() if args.sim == "auto" else args.sim

    print(f"array      {cfg.rows}x{cfg.cols}  W{cfg.w_bits}A{cfg.a_bits}"
          f"{'s' if cfg.a_signed else 'u'}  acc {cfg.acc_bits} b  M {cfg.mult_bits} b  "
          f"{'per-channel' if cfg.per_channel else 'per-tensor'}  depth {cfg.acc_depth}")
    t0 = time.perf_counter()
    verilog = generate_verilog_cached(cfg)
    print(f"verilog    {verilog} ({verilog.read_text().count(chr(10))} lines, "
          f"{time.perf_counter() - t0:.1f} s)")
    print(f"job        Y[{job.T}x{job.N}] = requant(X[{job.T}x{job.K}] @ W[{job.K}x{job.N}] + "
          f"bias)  z_y={job.z_y} relu={job.relu}  seed {args.seed}")

    t0 = time.perf_counter()
    model = simulate(cfg, job)
    t_model = time.perf_counter() - t0
    ref = reference_gemm(cfg, job)
    ideal = job.T * job.K * job.N / (cfg.rows * cfg.cols)
    print(f"model      {model.cycles} cycles (closed form {gemm_cycles(cfg, job.T, job.K, job.N)}"
          f", ideal {ideal:.0f}), utilization {model.utilization:.1%}, "
          f"{model.overflow_events} overflow events, {t_model * 1e3:.0f} ms")
    if not np.array_equal(model.y, ref.y):
        print("model      DISAGREES with the numpy reference")
        return 1

    print(f"rtl        {sim} via cocotb (first run builds; later runs reuse the work "
          f"directory's rtl/) ...",
          flush=True)
    run_ = run_jobs(cfg, [job], sim, name="demo", waves=args.waves or None)
    rec = run_.jobs[0] if run_.jobs else None
    built = run_.built
    build = ("cached build" if built.cached else f"built in {built.build_seconds:.1f} s")
    if rec is None:
        print(f"rtl        simulation failed; log: {run_.log}")
        return 1
    print(f"rtl        {rec['rtl_cycles']} cycles, {rec['n_out_rtl']} output beats "
          f"({build}; simulated in {run_.sim_seconds:.1f} s)")
    if run_.waves:
        print(f"waves      {', '.join(str(w) for w in run_.waves)}")
    n_int = job.T * job.N
    if rec["outputs_match"] and rec["cycles_match"] and run_.passed:
        print(f"AGREE      RTL == cycle model: all {n_int} output integers identical, "
              f"{rec['rtl_cycles']} cycles on both, utilization {model.utilization:.1%}")
        return 0
    print(f"DISAGREE   outputs_match={rec['outputs_match']} cycles_match={rec['cycles_match']}"
          f" {rec.get('error') or ''} first mismatches {rec.get('mismatches')}; log {run_.log}")
    return 1
