"""Array utilization: cycle-model total cycles vs the ideal ``T*K*N / (rows*cols)``.

GEMMs with ``T >= 8*(rows+cols)`` and ``K``, ``N`` multiples of the array size, on several
array sizes. The issue's goal is ``cycles <= 1.05 x ideal``. With double-buffered weights
and ``acc_depth >= max(rows, cols)`` passes run back to back, so the only overhead is the
fill/drain ``rows + cols + 3`` exposed once per job: the ratio is
``1 + (rows + cols + 3) / (T * K/rows * N/cols)`` and misses the goal only when a job has
few passes (e.g. one K- and N-tile at ``T = 8*(rows+cols)``). One job is confirmed on the
RTL (cocotb, Verilator or Icarus).
"""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from qaccel.benches import BenchOptions
from qaccel.sim import ArrayConfig, random_job
from qaccel.sim.cycle import simulate
from qaccel.sim.schedule import gemm_cycles

GOAL = 1.05

ARRAYS = [ArrayConfig(rows=4, cols=4), ArrayConfig(rows=8, cols=8),
          ArrayConfig(rows=8, cols=16), ArrayConfig(rows=16, cols=16),
          ArrayConfig(rows=32, cols=32)]


def shapes(cfg: ArrayConfig) -> list[tuple[int, int, int]]:
    """``T >= 8*(R+C)``, ``K``/``N`` multiples of the array: one tile, and 4x4 tiles; the
    minimal and twice that T."""
    R, C = cfg.rows, cfg.cols
    t_min = 8 * (R + C)
    out = []
    for T in (t_min, 2 * t_min):
        for k_tiles, n_tiles in ((1, 1), (4, 4)):
            out.append((T, k_tiles * R, n_tiles * C))
    return out


def run(opts: BenchOptions) -> str:
    rng = np.random.default_rng(5)
    rows = []
    jobs = [(cfg, s) for cfg in ARRAYS for s in shapes(cfg)]
    t_model = 0.0
    for cfg, (T, K, N) in tqdm(jobs, desc="utilization (cycle model)", unit="job"):
        job = random_job(cfg, T, K, N, rng)
        t0 = time.perf_counter()
        res = simulate(cfg, job)
        t_model += time.perf_counter() - t0
        ideal = T * K * N / (cfg.rows * cfg.cols)
        closed = gemm_cycles(cfg, T, K, N)
        rows.append({"cfg": cfg, "T": T, "K": K, "N": N, "cycles": res.cycles, "closed": closed,
                     "ideal": ideal, "ratio": res.cycles / ideal,
                     "util": res.utilization,
                     "overhead": cfg.rows + cfg.cols + 3})

    lines = ["# Utilization: cycle model vs ideal", "",
             "Measured by `make bench` (`qaccel/benches/utilization.py`): random W8A8 jobs on "
             "the cycle-level model (`sim.cycle.simulate`), default `acc_depth = 64`. "
             f"Ideal = `T*K*N/(rows*cols)`; goal: ratio <= {GOAL}. `busy` is the model's "
             "measured utilization (useful MACs / (PEs x cycles)). `fill/drain` is "
             "`rows + cols + 3`, exposed once per job.", "",
             "| array | T | K | N | passes | cycles | ideal | ratio | busy | fill/drain | goal |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        cfg = r["cfg"]
        passes = -(-r["K"] // cfg.rows) * -(-r["N"] // cfg.cols) * -(-r["T"] // cfg.acc_depth)
        ok = "met" if r["ratio"] <= GOAL else "missed (fill/drain dominates)"
        assert r["cycles"] == r["closed"], "cycle model != closed-form schedule"
        lines.append(f"| {cfg.rows}x{cfg.cols} | {r['T']} | {r['K']} | {r['N']} | {passes} | "
                     f"{r['cycles']} | {r['ideal']:.0f} | {r['ratio']:.3f} | "
                     f"{r['util']:.1%} | {r['overhead']} | {ok} |")
    met = sum(r["ratio"] <= GOAL for r in rows)
    worst = max(rows, key=lambda r: r["ratio"])
    multi = [r for r in rows if r["K"] > r["cfg"].rows]
    single = [r for r in rows if r["K"] == r["cfg"].rows and r["N"] == r["cfg"].cols]
    lines += ["", f"{met}/{len(rows)} jobs meet the goal. Every job with 4x4 K/N tiles does "
              f"(worst ratio {max(r['ratio'] for r in multi):.3f}). "
              f"{sum(r['ratio'] > GOAL for r in single)}/{len(single)} jobs with a single K- "
              "and N-tile miss it: they have only T cycles of work, so the one-off fill/drain "
              f"`rows + cols + 3` adds {min(r['ratio'] for r in single) - 1:.0%}-"
              f"{max(r['ratio'] for r in single) - 1:.0%}; that overhead is structural (pipeline "
              "latency), not idle time between tiles "
              f"(worst: {worst['cfg'].rows}x{worst['cfg'].cols}, T={worst['T']}, "
              f"ratio {worst['ratio']:.3f}). The cycle model matched the closed-form schedule "
              f"(`sim.schedule.gemm_cycles`) on every job; model time {t_model:.1f} s in total.",
              ""]
    lines += _rtl_confirmation()
    return "\n".join(lines) + "\n"


def _rtl_confirmation() -> list[str]:
    """One goal-size job on the RTL: same cycle count and outputs as the model."""
    from qaccel.rtl_build import default_simulator, run_jobs

    cfg = ArrayConfig()                       # 4x4 default (the demo's build is reused)
    T, K, N = 8 * (cfg.rows + cfg.cols), 4 * cfg.rows, 4 * cfg.cols
    job = random_job(cfg, T, K, N, np.random.default_rng(11))
    try:
        sim = default_simulator()
    except FileNotFoundError as exc:
        return ["## RTL confirmation", "", f"Not run: {exc}.", ""]
    print(f"[bench] utilization: confirming {T}x{K}x{N} on {cfg.rows}x{cfg.cols} RTL ({sim})",
          flush=True)
    run_ = run_jobs(cfg, [job], sim, name="bench-utilization")
    rec = run_.jobs[0] if run_.jobs else {}
    ideal = T * K * N / (cfg.rows * cfg.cols)
    agree = bool(rec.get("outputs_match") and rec.get("cycles_match") and run_.passed)
    return ["## RTL confirmation", "",
            f"{cfg.rows}x{cfg.cols} W8A8 array, T={T}, K={K}, N={N} on {sim} via cocotb: "
            f"RTL {rec.get('rtl_cycles')} cycles, cycle model {rec.get('model_cycles')} "
            f"cycles, ideal {ideal:.0f}, ratio {(rec.get('rtl_cycles') or 0) / ideal:.3f}; "
            f"all outputs and the cycle count {'agree' if agree else 'DISAGREE'}.", ""]
