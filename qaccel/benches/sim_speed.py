"""Simulation speed: one 16x16 W8A8 GEMM job on the cycle model, on Verilator and on Icarus,
in one run. Build (compile) time is reported separately from simulation time.

RTL wall time is the whole simulator process (start-up, cocotb, driving every beat,
recording every output) with the model check switched off, so it measures the RTL
simulation as a user runs it; the cocotb drive loop alone is listed too. Every RTL run's
outputs are compared with the model's afterwards.
"""

from __future__ import annotations

import os
import time

import numpy as np

from qaccel.benches import BenchOptions
from qaccel.sim import ArrayConfig, random_job
from qaccel.sim.cycle import simulate

CFG = ArrayConfig(rows=16, cols=16, w_bits=8, a_bits=8)
SHAPE = (96, 48, 48)          # T, K, N: 2 T-tiles x 3 K-tiles x 3 N-tiles = 18 passes
GOAL = 10.0


def run(opts: BenchOptions) -> str:
    from qaccel.rtl_build import SIMULATORS, run_jobs, simulator_missing
    from qaccel.sim.streams import job_beats

    T, K, N = SHAPE
    job = random_job(CFG, T, K, N, np.random.default_rng(3))
    simulate(CFG, random_job(CFG, 4, 4, 4, np.random.default_rng(0)))     # warm-up (imports)
    t_model = float("inf")
    for _ in range(3):                        # best of 3: the machine is shared
        t0 = time.perf_counter()
        model = simulate(CFG, job)
        t_model = min(t_model, time.perf_counter() - t0)
    expected = job_beats(CFG, job, model.y).out

    results = {}
    for sim in SIMULATORS:
        reason = simulator_missing(sim)
        if reason:
            results[sim] = {"missing": reason}
            continue
        print(f"[bench] sim_speed: {sim} ...", flush=True)
        run_ = run_jobs(CFG, [job], sim, name="bench-sim-speed", check_model=False)
        rec = run_.jobs[0] if run_.jobs else {}
        beats = None
        res_npz = run_.run_dir / "out_beats_0.npy"
        if res_npz.exists():
            beats = np.load(res_npz)
        agree = (beats is not None and beats.shape == expected.shape
                 and bool(np.array_equal(beats, expected))
                 and rec.get("rtl_cycles") == model.cycles)
        results[sim] = {"wall": run_.sim_seconds, "tb": run_.tb_seconds,
                        "build": run_.built.first_build_seconds, "cached": run_.built.cached,
                        "cycles": rec.get("rtl_cycles"), "agree": agree}

    lines = ["# Simulation speed: cycle model vs Verilator vs Icarus", "",
             f"One {CFG.rows}x{CFG.cols} W8A8 job, T={T}, K={K}, N={N} ({model.cycles} cycles), "
             "measured in one `make bench` run (`qaccel/benches/sim_speed.py`) on this machine "
             "(cycle model: best of 3 runs; each simulator: one run). "
             "RTL wall = the simulator process (start-up + cocotb driving and recording every "
             "beat); drive loop = the cocotb loop alone. Build time is the simulator's compile "
             "step for this configuration (measured when the cached build was made). "
             f"Goal: the cycle model >= {GOAL:.0f}x faster than Icarus.", "",
             "| engine | wall (s) | cycles/s | drive loop (s) | build (s) | x slower than model "
             "| outputs + cycles agree |",
             "|---|---:|---:|---:|---:|---:|---|",
             f"| cycle model (numpy) | {t_model:.3f} | {model.cycles / t_model:,.0f} | - | - | "
             "1.0 | (reference) |"]
    for sim in SIMULATORS:
        r = results[sim]
        if "missing" in r:
            lines.append(f"| {sim} | not run: {r['missing']} | | | | | |")
            continue
        build = f"{r['build']:.1f}" if r["build"] is not None else "?"
        lines.append(f"| {sim} (cocotb) | {r['wall']:.2f} | {model.cycles / r['wall']:,.0f} | "
                     f"{r['tb']:.2f} | {build} | {r['wall'] / t_model:.1f} | "
                     f"{'yes' if r['agree'] else 'NO'} |")
    if "wall" in results.get("icarus", {}):
        ratio = results["icarus"]["wall"] / t_model
        verdict = "met" if ratio >= GOAL else "NOT met"
        lines += ["", f"Cycle model vs Icarus: **{ratio:.1f}x** faster (goal {GOAL:.0f}x: "
                  f"{verdict})."]
    if "wall" in results.get("verilator", {}):
        v = results["verilator"]
        lines += [f"Cycle model vs Verilator: {v['wall'] / t_model:.1f}x faster in wall time; "
                  f"of Verilator's {v['wall']:.1f} s, {v['wall'] - v['tb']:.1f} s are process "
                  f"start-up (simulator, embedded Python, cocotb) and {v['tb']:.2f} s the "
                  f"cocotb drive loop ({v['tb'] / t_model:.1f}x the model). Verilator's model "
                  "is compiled with -O0 (builds ~4x faster)."]
    load = os.getloadavg()[0]
    lines += ["", f"Machine: {os.cpu_count()} cores, 1-min load average {load:.1f} at the end "
              "of the measurement (other jobs running make every wall time longer)."]
    return "\n".join(lines) + "\n"
