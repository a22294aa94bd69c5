"""Multi-objective mixed-precision search: Optuna's NSGA-II over per-layer weight bit-widths,
the activation bit-width, the array geometry and the buffers (see ``docs/search.md``).

Every trial quantizes the digits model with its per-layer bit-widths
(:class:`~qaccel.quant.config.LayerOverride`, through :func:`qaccel.flow.quantize_model`,
cached by content hash), measures the integer network's test accuracy, costs one inference
on the array with each layer's own bit-widths (:func:`qaccel.flow.network_cost`: cycles,
latency, energy) and counts the datapath's Yosys cells
(:func:`qaccel.dse.isoarea.datapath_cells`). With ``area_budget_cells`` the array is the
largest that fits the budget at the trial's widest PE (:func:`~.isoarea.array_for_budget`).

The Optuna study lives in the same SQLite file as the results store (``RDBStorage``,
``load_if_exists``), and every trial's metrics are written to the store's ``points`` table
(``kind = 'search'``), so ``qaccel pareto`` reads searches and sweeps alike. A search
killed at any instant resumes: finished trials are kept, the trial that was running is
enqueued again with its parameters, and the study runs until it holds ``trials`` finished
trials. A configuration already in the store (same ``config_hash``) is not recomputed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .search_spec import SearchSpec

__all__ = ["SearchContext", "TrialConfig", "prepare", "trial_config", "network_and_hardware",
           "measure", "evaluate_trial",
           "sensitivity_seeds", "uniform_seed", "run_search", "study_hashes", "search_rows",
           "select_best", "export_best", "bits_text", "STUDY_PREFIX"]

#: the Optuna study of search ``name`` is ``STUDY_PREFIX + name``
STUDY_PREFIX = "qaccel-search:"
_SEARCH_COLUMNS = {"layer_bits_text": "TEXT", "study": "TEXT", "trial": "INTEGER"}
_OBJECTIVE_COLUMN = {"accuracy": "accuracy", "energy": "energy_j", "latency": "latency_s",
                     "area": "area_cells"}
_CLOCK_MHZ = 500.0


@dataclass(frozen=True, eq=False)
class SearchContext:
    """The model, its data and its layers, loaded once per search."""

    spec: SearchSpec
    model: object
    calib: object
    test_set: tuple
    layers: tuple[str, ...]
    fp32_accuracy: float
    workload_key: str


def prepare(spec: SearchSpec) -> SearchContext:
    """Load the digits model, its calibration and test data (the first ``eval_images``
    test images) and its conv/linear layer names (the per-layer search variables)."""
    from torch import nn

    from qaccel.quant import digits

    model, calib, (x, y) = digits.get_model(spec.model)
    if spec.eval_images is not None:
        x, y = x[:spec.eval_images], y[:spec.eval_images]
    layers = tuple(n for n, m in model.named_modules()
                   if isinstance(m, nn.Conv2d | nn.Linear))
    key = json.dumps({"model": spec.model, "calib": 256}, sort_keys=True)
    return SearchContext(spec, model, calib, (x, y), layers,
                         digits.evaluate(model, (x, y)), key)


@dataclass(frozen=True)
class TrialConfig:
    """One trial's configuration: per-layer weight bits, activation bits, the array."""

    w_bits: tuple[int, ...]           # one per layer of SearchContext.layers
    a_bits: int
    rows: int | None                  # None: from the area budget
    cols: int | None
    weight_buffer_kib: int
    act_buffer_kib: int
    extra: dict = field(default_factory=dict)

    def params(self, layers) -> dict:
        """The Optuna parameters of this configuration."""
        p = {f"w_bits.{n}": b for n, b in zip(layers, self.w_bits)}
        p["a_bits"] = self.a_bits
        if self.rows is not None:
            p["rows"], p["cols"] = self.rows, self.cols
        p["weight_buffer_kib"] = self.weight_buffer_kib
        p["act_buffer_kib"] = self.act_buffer_kib
        return p


def bits_text(layers, w_bits, a_bits: int) -> str:
    """Compact per-layer widths, e.g. ``0:W8A8 3:W4A8 ...``."""
    return " ".join(f"{n}:W{w}A{a_bits}" for n, w in zip(layers, w_bits))


def trial_config(ctx: SearchContext, trial) -> TrialConfig:
    """Ask Optuna's ``trial`` for every search variable."""
    s = ctx.spec
    w = tuple(trial.suggest_categorical(f"w_bits.{n}", list(s.w_bits)) for n in ctx.layers)
    a = trial.suggest_categorical("a_bits", list(s.a_bits))
    rows = cols = None
    if s.area_budget_cells is None:
        rows = trial.suggest_categorical("rows", list(s.hw["rows"]))
        cols = trial.suggest_categorical("cols", list(s.hw["cols"]))
    wb = trial.suggest_categorical("weight_buffer_kib", list(s.hw["weight_buffer_kib"]))
    ab = trial.suggest_categorical("act_buffer_kib", list(s.hw["act_buffer_kib"]))
    return TrialConfig(w, a, rows, cols, wb, ab)


def _quant_config(ctx: SearchContext, tc: TrialConfig):
    from qaccel.quant.config import LayerOverride, QuantConfig

    fixed = {k: v for k, v in ctx.spec.fixed.items() if k in QuantConfig.__dataclass_fields__}
    fixed.setdefault("progress", False)
    return QuantConfig(**fixed, w_bits=max(tc.w_bits), a_bits=tc.a_bits,
                       layer_bits=tuple(LayerOverride(n, w, tc.a_bits)
                                        for n, w in zip(ctx.layers, tc.w_bits)))


def _array_config(ctx: SearchContext, tc: TrialConfig):
    from qaccel.sim.config import ArrayConfig

    fixed = {k: v for k, v in ctx.spec.fixed.items() if k in ArrayConfig.__dataclass_fields__}
    fixed.setdefault("acc_depth", 256)
    return ArrayConfig(**fixed, rows=tc.rows or 16, cols=tc.cols or 16,
                       weight_buffer_kib=tc.weight_buffer_kib, act_buffer_kib=tc.act_buffer_kib)


def _point(ctx: SearchContext, tc: TrialConfig, hw) -> tuple[str, dict]:
    """``(config_hash, params)`` of a trial for the store; ``hw`` is the array it runs on."""
    from qaccel.sweep.fields import QUANT_FIELDS
    from qaccel.sweep.spec import point_hash

    q = _quant_config(ctx, tc)
    # the scalar QuantConfig fields (store columns); per-layer / per-quantizer tuples are
    # summarised by layer_bits_text, and progress is display only
    params = {**{k: v for k, v in q.to_dict().items()
                 if k in QUANT_FIELDS and k != "progress"},
              **hw.to_dict(), "clock_mhz": _CLOCK_MHZ, "energy_table": "default",
              "layer_bits_text": bits_text(ctx.layers, tc.w_bits, tc.a_bits)}
    return point_hash(ctx.workload_key, {**params, "kind": "search"}), params


def _hardware(ctx: SearchContext, tc: TrialConfig, net):
    """The array a trial's network runs on: its widest widths; with an area budget, the
    largest square-ish array of those widths that fits."""
    from qaccel.flow import hardware_config

    from .isoarea import array_for_budget

    hw = hardware_config(_array_config(ctx, tc), net)
    if ctx.spec.area_budget_cells is not None:
        hw = array_for_budget(hw, ctx.spec.area_budget_cells)
    return hw


def network_and_hardware(ctx: SearchContext, tc: TrialConfig):
    """``(IntNetwork, hardware ArrayConfig)`` of a configuration (quantization cached by
    content hash in the workspace)."""
    from qaccel.flow import quantize_model

    _, net = quantize_model(ctx.model, ctx.calib, _quant_config(ctx, tc))
    return net, _hardware(ctx, tc, net)


def measure(ctx: SearchContext, net, hw) -> dict:
    """Integer accuracy on the test images, cycles, latency, energy (each layer at its own
    widths) and datapath cells of ``net`` on ``hw``."""
    from qaccel.flow import integer_accuracy, network_cost

    from .isoarea import datapath_cells

    acc, _ = integer_accuracy(net, ctx.test_set)
    cost = network_cost(net, hw, _CLOCK_MHZ, None, "analytic", area=False)
    metrics = {"accuracy": acc, "accuracy_fp32": ctx.fp32_accuracy,
               "cycles": int(cost["cycles"]), "latency_s": cost["latency_s"],
               "utilization": cost["utilization"], "macs": int(cost["macs"]),
               "energy_j": cost["energy_j"], "pj_per_mac": cost["pj_per_mac"],
               "area_cells": int(round(datapath_cells(hw)))}
    for c, pj in cost["energy_categories_pj"].items():
        metrics[f"energy_{c}_j"] = pj * 1e-12
    return metrics


def evaluate_trial(ctx: SearchContext, tc: TrialConfig) -> tuple[object, dict]:
    """``(hardware ArrayConfig, metrics)`` of one configuration (:func:`measure`)."""
    net, hw = network_and_hardware(ctx, tc)
    return hw, measure(ctx, net, hw)


# ---- seeds --------------------------------------------------------------------------------

def uniform_seed(ctx: SearchContext, w: int, a: int) -> TrialConfig:
    """Every layer at ``w`` weight bits; the first choice of every hardware variable."""
    s = ctx.spec
    rows = cols = None
    if s.area_budget_cells is None:
        rows, cols = s.hw["rows"][-1], s.hw["cols"][-1]
    return TrialConfig((w,) * len(ctx.layers), a, rows, cols, s.hw["weight_buffer_kib"][-1],
                       s.hw["act_buffer_kib"][-1])


def sensitivity_seeds(ctx: SearchContext, n: int) -> list[TrialConfig]:
    """``n`` mixed configurations from the sensitivity report (whitepaper sec. 3.7): with
    every layer quantized alone at the narrowest weight width, the layers ranked by the
    network-output SQNR they cause (most sensitive first). The seeds give the ``k`` most
    sensitive layers the widest weight width and the others one narrower width, for
    ``k = 1, 2, ...`` and, at each ``k``, every narrower width (narrowest first)."""
    if n == 0:
        return []
    from qaccel.quant import sensitivity_report
    from qaccel.quant.config import QuantConfig

    s = ctx.spec
    fixed = {k: v for k, v in s.fixed.items() if k in QuantConfig.__dataclass_fields__}
    fixed.setdefault("progress", False)
    rep = sensitivity_report(ctx.model, ctx.calib,
                             QuantConfig(**fixed, w_bits=min(s.w_bits), a_bits=max(s.a_bits)))
    sqnr = {r.name.removesuffix(".weight"): r.output_sqnr for r in rep.layer_rows()
            if r.kind == "weight"}
    order = sorted(range(len(ctx.layers)), key=lambda i: sqnr.get(ctx.layers[i], 0.0))
    base = uniform_seed(ctx, max(s.w_bits), max(s.a_bits))
    out, seen = [], set()
    for k in range(1, len(ctx.layers)):
        for low in s.w_bits[:-1]:                   # narrowest first
            w = [low] * len(ctx.layers)
            for i in order[:k]:
                w[i] = max(s.w_bits)
            if tuple(w) not in seen:
                seen.add(tuple(w))
                out.append(TrialConfig(tuple(w), base.a_bits, base.rows, base.cols,
                                       base.weight_buffer_kib, base.act_buffer_kib))
    return out[:n]


# ---- the study ----------------------------------------------------------------------------

@contextlib.contextmanager
def _exclusive(store_path: pathlib.Path, study: str):
    """One search process per (store, study): the resume logic treats running trials as
    interrupted."""
    from qaccel import workspace

    key = hashlib.sha256(f"{store_path.resolve()}|{study}".encode()).hexdigest()[:16]
    lock = workspace.current().dir("locks") / f"search-{key}.lock"
    with open(lock, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another qaccel search runs study {study!r} on "
                             f"{str(store_path)!r}") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _store(path):
    from qaccel.sweep.store import Store

    return Store(path, extra_params={k: v for k, v in _SEARCH_COLUMNS.items()})


def _requeue_interrupted(study) -> int:
    """Trials left RUNNING by a killed process: marked failed (``interrupted``) and their
    parameters enqueued again."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        fixed = t.system_attrs.get("fixed_params") or t.params
        if fixed:
            study.enqueue_trial(dict(fixed), user_attrs={"seed": t.user_attrs.get("seed",
                                                                                    "retry")})
        n += 1
    return n


def _requeue_failed(study) -> int:
    """Failed trials (their error is in the store) enqueued again, once each (a finished
    trial cannot be changed, so the study remembers their numbers)."""
    from optuna.trial import TrialState

    retried = set(study.user_attrs.get("retried", []))
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get("interrupted") or t.number in retried:
            continue
        retried.add(t.number)
        fixed = t.system_attrs.get("fixed_params") or t.params
        if fixed:
            study.enqueue_trial(dict(fixed), user_attrs={"seed": t.user_attrs.get("seed",
                                                                                    "retry")})
            n += 1
    study.set_user_attr("retried", sorted(retried))
    return n


def _done(study) -> int:
    """Finished trials: complete, or failed (their error stored) and not enqueued again."""
    from optuna.trial import TrialState

    retried = set(study.user_attrs.get("retried", []))
    return sum(1 for t in study.get_trials(deepcopy=False,
                                           states=(TrialState.COMPLETE, TrialState.FAIL))
               if not (t.user_attrs.get("interrupted") or t.number in retried))


def run_search(spec: SearchSpec, store_path, *, ctx: SearchContext | None = None,
               progress: bool = True, log: Callable[[str], None] = print,
               stop_after: int | None = None, retry_errors: bool = False):
    """Run (or resume) the search of ``spec``; returns the Optuna study.

    ``stop_after`` ends this call after that many new trials (the study is left to be
    resumed), for tests and time-boxed runs. ``retry_errors`` runs the trials that failed
    (their errors are in the store) once more; otherwise they count as finished.
    """
    import optuna

    store_path = pathlib.Path(store_path)
    ctx = ctx or prepare(spec)
    study_name = STUDY_PREFIX + spec.name
    optuna.logging.set_verbosity(optuna.logging.ERROR)   # failures: one line each, below
    with _exclusive(store_path, study_name):
        store = _store(store_path)          # creates the file and the points table
        try:
            storage = optuna.storages.RDBStorage(f"sqlite:///{store_path.resolve()}")
            sampler = optuna.samplers.NSGAIISampler(population_size=spec.population,
                                                    seed=spec.seed)
            study = optuna.create_study(study_name=study_name, storage=storage,
                                        sampler=sampler, directions=spec.directions,
                                        load_if_exists=True)
            old = study.user_attrs.get("spec")
            now = _spec_identity(spec, ctx)
            if old is not None and old != now:
                raise ValueError(f"{spec.path}: study {spec.name!r} in {str(store_path)!r} "
                                 f"was created with a different search space or objectives;"
                                 f" rename the search (name:) or use another store")
            if old is None:
                study.set_user_attr("spec", now)
                study.set_user_attr("layers", list(ctx.layers))
                for w, a in spec.uniform:
                    study.enqueue_trial(uniform_seed(ctx, w, a).params(ctx.layers),
                                        user_attrs={"seed": f"uniform W{w}A{a}"})
                for i, tc in enumerate(sensitivity_seeds(ctx, spec.sensitivity_seeds)):
                    study.enqueue_trial(tc.params(ctx.layers),
                                        user_attrs={"seed": f"sensitivity {i + 1}"})
            else:
                n = _requeue_interrupted(study)
                if n:
                    log(f"resuming: {n} interrupted trial(s) enqueued again")
                if retry_errors:
                    n = _requeue_failed(study)
                    log(f"retrying {n} failed trial(s)")
            todo = max(0, spec.trials - _done(study))
            if stop_after is not None:
                todo = min(todo, stop_after)
            log(f"study {study_name!r}: {_done(study)} trials done, {todo} to run "
                f"({', '.join(spec.objectives)}; {len(ctx.layers)} layers)")
            if todo:
                bar = None
                if progress:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=todo, desc="search", unit="trial", dynamic_ncols=True)

                def done(_study, t):
                    if t.state.name == "FAIL":
                        msg = (f"trial {t.number} failed: {t.user_attrs.get('error', '?')} "
                               f"(stored with the point)")
                        if bar is not None:
                            bar.write(msg)
                        else:
                            log(msg)
                    if bar is not None:
                        bar.update(1)

                try:
                    study.optimize(_objective(ctx, store, study_name), n_trials=todo,
                                   catch=(Exception,), callbacks=[done])
                finally:
                    if bar is not None:
                        bar.close()
        finally:
            store.close()
    return study


def _spec_identity(spec: SearchSpec, ctx: SearchContext) -> str:
    ident = {"model": spec.model, "objectives": list(spec.objectives),
             "w_bits": list(spec.w_bits), "a_bits": list(spec.a_bits),
             "hw": {k: list(v) for k, v in spec.hw.items()}, "fixed": spec.fixed,
             "area_budget_cells": spec.area_budget_cells, "eval_images": spec.eval_images,
             "layers": list(ctx.layers)}
    return json.dumps(ident, sort_keys=True)


def _objective(ctx: SearchContext, store, study_name: str):
    spec = ctx.spec
    cols = [_OBJECTIVE_COLUMN[o] for o in spec.objectives]

    def objective(trial):
        tc = trial_config(ctx, trial)
        t0 = time.perf_counter()
        where = {"workload": f"model:{spec.model}", "kind": "search"}
        try:
            # the point's identity needs the hardware, which needs the network (cached)
            net, hw = network_and_hardware(ctx, tc)
        except Exception as exc:
            h, params = _point(ctx, tc, _array_config(ctx, tc))   # the array as asked
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            store.put(h, {**params, "study": study_name, "trial": trial.number}, {},
                      status="error", error=f"{type(exc).__name__}: {exc}",
                      elapsed_s=time.perf_counter() - t0, **where)
            raise
        h, params = _point(ctx, tc, hw)
        prev = next((r for r in store.rows(status="ok", kind="search")
                     if r["config_hash"] == h), None)
        if prev is not None and all(prev.get(c) is not None for c in cols):
            metrics = {c: prev[c] for c in cols}
            trial.set_user_attr("reused", True)
        else:
            try:
                metrics = measure(ctx, net, hw)
            except Exception as exc:
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
                store.put(h, {**params, "study": study_name, "trial": trial.number}, {},
                          status="error", error=f"{type(exc).__name__}: {exc}",
                          elapsed_s=time.perf_counter() - t0, **where)
                raise
            store.put(h, {**params, "study": study_name, "trial": trial.number}, metrics,
                      elapsed_s=time.perf_counter() - t0, **where)
        trial.set_user_attr("config_hash", h)
        return tuple(float(metrics[c]) for c in cols)

    return objective


# ---- results ------------------------------------------------------------------------------

def study_hashes(store_path, name: str) -> list[str]:
    """``config_hash`` of every finished trial of search ``name`` in the store's study
    (a point computed by another study and reused is included)."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{pathlib.Path(store_path).resolve()}")
    try:
        study = optuna.load_study(study_name=STUDY_PREFIX + name, storage=storage)
    except KeyError:
        raise ValueError(f"{store_path}: no search named {name!r}") from None
    return [t.user_attrs["config_hash"] for t in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE,)) if "config_hash" in t.user_attrs]


def search_rows(store_path, spec: SearchSpec | str) -> list[dict]:
    """The store's rows of the finished trials of a search (``spec`` or its name), one per
    configuration."""
    from qaccel.sweep.store import Store

    name = spec if isinstance(spec, str) else spec.name
    want = set(study_hashes(store_path, name))
    with Store(store_path, extra_params=_SEARCH_COLUMNS) as st:
        return [r for r in st.rows(status="ok") if r["config_hash"] in want]


def select_best(rows: list[dict], spec: SearchSpec) -> dict:
    """The rule of ``select:``: among points whose accuracy is within
    ``max_accuracy_drop`` points of FP32, the lowest ``minimize`` metric (ties: higher
    accuracy). ValueError if no point qualifies."""
    col = _OBJECTIVE_COLUMN[spec.select_minimize]
    ok = [r for r in rows if r.get("accuracy") is not None and r.get(col) is not None
          and r["accuracy"] >= r["accuracy_fp32"] - spec.max_accuracy_drop]
    if not ok:
        raise ValueError(f"{spec.path}: select: no search point is within "
                         f"{spec.max_accuracy_drop} accuracy points of FP32 "
                         f"({len(rows)} points)")
    return min(ok, key=lambda r: (r[col], -r["accuracy"]))


def export_best(row: dict, ctx: SearchContext, path) -> pathlib.Path:
    """Quantize the chosen row's configuration (cached) and save its integer network."""
    bits = {}
    for item in row["layer_bits_text"].split():
        name, wa = item.rsplit(":", 1)
        w, a = wa[1:].split("A")
        bits[name] = (int(w), int(a))
    if list(bits) != list(ctx.layers):
        raise ValueError(f"the stored point's layers {list(bits)} are not the model's "
                         f"{list(ctx.layers)}")
    a = {v[1] for v in bits.values()}.pop()
    tc = TrialConfig(tuple(v[0] for v in bits.values()), a, row["rows"], row["cols"],
                     row["weight_buffer_kib"], row["act_buffer_kib"])
    net, _ = network_and_hardware(ctx, tc)
    return net.save(path)
