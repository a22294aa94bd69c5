"""The sweep file: YAML (``yaml.safe_load``) validated into design points before anything runs.

::

    workload:                  # exactly one of network / topology / int_network / model
      network: resnet50        # a shipped network (qaccel.networks); batch, seq_len, method
    fixed:                     # optional: values every point shares
      acc_depth: 256
    grid:                      # cartesian product over the listed values
      rows: [8, 16, 32]
      cols: {start: 8, stop: 32, step: 8}     # inclusive integer range
      w_bits: [4, 8]
      clock_mhz: [500]
      energy_table: [default, my45nm.json]    # paths relative to the sweep file
      mapping: [fixed, search]                # fixed loop nest (default) or sim.mapper search
      objective: [energy, latency]            # what search minimises (energy, edp, latency)
    random: 100                # optional: 100 distinct points drawn from the grid
    seed: 0                    # seed of the random draw
    metrics: [cost, area]      # cost (default), area (Yosys, cached), accuracy (data)
    skip_invalid: false        # true: drop combinations a config rejects, instead of failing
    area_budget_cells: 150000  # optional iso-area: each point's rows x cols is the largest
                               # square-ish array of its widths in that many Yosys cells
                               # (qaccel.dse.isoarea.array_for_budget); no rows/cols keys then

Parameter names are the fields of :class:`qaccel.sim.ArrayConfig` and
:class:`qaccel.quant.QuantConfig` (a name in both sets both), ``clock_mhz``,
``energy_table``, ``mapping`` and ``objective`` (:mod:`.fields`). Under ``mapping: fixed`` the
objective does not apply: such points store ``objective`` as null and hash as they did before
these keys existed, so points differing only in ``objective`` are one point. Every point is
validated by constructing its frozen configs; an unknown key or a bad value raises
ValueError naming the file and the key.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import random as _random
from dataclasses import dataclass, field

from qaccel.commands.perf import NETWORK_CHOICES, PERF_DEFAULTS
from qaccel.sim.config import ArrayConfig
from qaccel.sim.energy import EnergyTable, load_table
from qaccel.sim.mapper import MAPPINGS, OBJECTIVES
from qaccel.yaml_spec import check_keys, read_yaml, spec_error

from .fields import (
    ARRAY_FIELDS,
    METRIC_GROUPS,
    PARAM_TYPES,
    QUANT_FIELDS,
    QUANT_ONLY_FIELDS,
    SHARED_FIELDS,
)

__all__ = ["SweepSpec", "DesignPoint", "WorkloadSpec", "load_spec", "parse_spec",
           "point_hash", "MAX_POINTS", "DIGITS_MODELS"]

TOP_KEYS = ("name", "workload", "fixed", "grid", "random", "seed", "metrics", "skip_invalid",
            "area_budget_cells")
WORKLOAD_KINDS = ("network", "topology", "int_network", "model")
WORKLOAD_OPTIONS = {"network": ("batch", "seq_len", "method"), "topology": ("gemm",),
                    "int_network": ("seq_len",), "model": ("calib",)}
DIGITS_MODELS = ("digits_cnn", "digits_mobilenet")
#: the array every sweep starts from: the ``qaccel perf`` / ``qaccel energy`` defaults
ARRAY_BASE = dict(PERF_DEFAULTS)
DEFAULT_CLOCK_MHZ = 500.0
DEFAULT_TABLE = "default"
DEFAULT_MAPPING = "fixed"
DEFAULT_OBJECTIVE = "energy"
#: a grid larger than this must be sampled with ``random: N``
MAX_POINTS = 1_000_000


@dataclass(frozen=True)
class WorkloadSpec:
    """What every point of a sweep runs.

    Attributes
    ----------
    kind : {"network", "topology", "int_network", "model"}
    name : str
        Network or model name, or the file path (resolved).
    options : dict
        ``batch``/``seq_len``/``method`` (network), ``gemm`` (topology), ``calib`` (model),
        ``seq_len`` (int_network: the length a token network is costed at; default the
        length it was exported with).
    key : str
        Content identity: name and options, or the file's SHA-256.
    """

    kind: str
    name: str
    options: dict = field(default_factory=dict, hash=False)
    key: str = ""

    @property
    def has_data(self) -> bool:
        """True if the workload has data, so points can be quantized and scored."""
        return self.kind == "model"

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, eq=False)
class DesignPoint:
    """One validated design point.

    Attributes
    ----------
    config_hash : str
        SHA-256 (hex) of the workload key and every resolved parameter (the energy table by
        content): the point's identity in the store.
    params : dict
        Every resolved parameter, one per store column (bools as bools).
    array : ArrayConfig
    quant : QuantConfig or None
        Only for workloads with data.
    clock_mhz : float
    energy_table : str
        ``"default"`` or the table's path as written in the sweep file.
    mapping : {"fixed", "search"}
        Each layer's mapping in the cost model: the fixed nest or :mod:`qaccel.sim.mapper`'s
        search.
    objective : {"energy", "edp", "latency"}
        What the search minimises (unused with ``mapping="fixed"``).
    """

    config_hash: str
    params: dict
    array: ArrayConfig
    quant: object | None
    clock_mhz: float
    energy_table: str
    mapping: str = DEFAULT_MAPPING
    objective: str = DEFAULT_OBJECTIVE


@dataclass(frozen=True, eq=False)
class SweepSpec:
    """A parsed sweep file: workload, validated points, metric groups, energy tables."""

    path: str
    name: str
    workload: WorkloadSpec
    points: tuple[DesignPoint, ...]
    metrics: tuple[str, ...]
    swept: tuple[str, ...]
    tables: dict[str, EnergyTable]
    skipped: int = 0

    def metric_columns(self) -> tuple[str, ...]:
        return tuple(m for g in self.metrics for m in METRIC_GROUPS[g])


def load_spec(path) -> SweepSpec:
    """Read and validate a sweep file (``yaml.safe_load``)."""
    p = pathlib.Path(path)
    return parse_spec(read_yaml(p, "sweep"), where=str(p), base_dir=p.parent)


def _file_sha(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parse_workload(data, where: str, base_dir: pathlib.Path) -> WorkloadSpec:
    if not isinstance(data, dict):
        raise spec_error(where, "workload", f"must be a mapping with one of "
                         f"{', '.join(WORKLOAD_KINDS)}, not {data!r}")
    kinds = [k for k in WORKLOAD_KINDS if k in data]
    if len(kinds) != 1:
        raise spec_error(where, "workload", f"needs exactly one of {', '.join(WORKLOAD_KINDS)}; "
                         f"got {sorted(data)}")
    kind = kinds[0]
    allowed = (kind,) + WORKLOAD_OPTIONS[kind]
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise spec_error(where, f"workload.{unknown[0]}", f"unknown key for a {kind} workload; "
                         f"known: {', '.join(allowed)}")
    value = data[kind]
    if not isinstance(value, str) or not value:
        raise spec_error(where, f"workload.{kind}", f"must be a non-empty string, not {value!r}")
    opts = {k: data[k] for k in WORKLOAD_OPTIONS[kind] if k in data}

    def positive_int(k):
        v = opts[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise spec_error(where, f"workload.{k}", f"must be a positive integer, not {v!r}")

    if kind == "network":
        if value not in NETWORK_CHOICES:
            raise spec_error(where, "workload.network", f"unknown network {value!r}; choose one of "
                             f"{', '.join(NETWORK_CHOICES)}")
        opts.setdefault("batch", 1)
        positive_int("batch")
        if "seq_len" in opts:
            if value != "bert_base":
                raise spec_error(where, "workload.seq_len", "applies to network bert_base only")
            positive_int("seq_len")
        if opts.setdefault("method", "auto") not in ("auto", "fx", "hooks"):
            raise spec_error(where, "workload.method", f"must be auto, fx or hooks, not "
                             f"{opts['method']!r}")
        key = json.dumps({"network": value, **opts}, sort_keys=True)
        return WorkloadSpec(kind, value, opts, key)
    if kind == "model":
        if value not in DIGITS_MODELS:
            raise spec_error(where, "workload.model", f"unknown model {value!r}; choose one of "
                             f"{', '.join(DIGITS_MODELS)} (quant.digits, with their data)")
        opts.setdefault("calib", 256)
        positive_int("calib")
        key = json.dumps({"model": value, **opts}, sort_keys=True)
        return WorkloadSpec(kind, value, opts, key)
    path = (base_dir / value).resolve()
    if not path.is_file():
        raise spec_error(where, f"workload.{kind}", f"file {value!r} does not exist "
                         f"(looked for {str(path)!r})")
    if kind == "topology":
        gemm = opts.get("gemm")
        if gemm is not None and not isinstance(gemm, bool):
            raise spec_error(where, "workload.gemm", f"must be true or false, not {gemm!r}")
        from qaccel.sim.topology import read_topology

        try:
            read_topology(path, gemm=gemm)
        except ValueError as exc:
            raise spec_error(where, "workload.topology", str(exc)) from None
    else:
        from qaccel.flow import network_seq_len
        from qaccel.sim.network import IntNetwork

        try:
            net = IntNetwork.load(path)
        except (ValueError, OSError, KeyError) as exc:
            raise spec_error(where, "workload.int_network", f"{value!r} is not a loadable integer "
                             f"network ({exc})") from None
        if "seq_len" in opts:
            positive_int("seq_len")
        try:
            network_seq_len(net, opts.get("seq_len"))
        except ValueError as exc:
            raise spec_error(where, "workload.seq_len",
                             str(exc).removeprefix("seq_len: ")) from None
    key = json.dumps({kind: _file_sha(path), **opts}, sort_keys=True)
    return WorkloadSpec(kind, str(path), opts, key)


def _values(where: str, key: str, v) -> list:
    """A grid entry: a list, a scalar, or an inclusive ``{start, stop, step}`` range."""
    if isinstance(v, list):
        if not v:
            raise spec_error(where, key, "empty list of values")
        for x in v:
            if isinstance(x, list | dict) or x is None:
                raise spec_error(where, key, f"values must be scalars, not {x!r}")
        if len({json.dumps(x) for x in v}) != len(v):
            raise spec_error(where, key, f"repeated values in {v!r}")
        return list(v)
    if isinstance(v, dict):
        if set(v) - {"start", "stop", "step"} or not {"start", "stop"} <= set(v):
            raise spec_error(where, key, f"a range is {{start, stop, step}} (integers, stop "
                             f"inclusive), not {v!r}")
        start, stop, step = v["start"], v["stop"], v.get("step", 1)
        for name, x in (("start", start), ("stop", stop), ("step", step)):
            if isinstance(x, bool) or not isinstance(x, int):
                raise spec_error(where, f"{key}.{name}", f"must be an integer, not {x!r}")
        if step < 1:
            raise spec_error(where, f"{key}.step", f"must be >= 1, not {step}")
        if stop < start:
            raise spec_error(where, key, f"empty range: stop {stop} < start {start}")
        return list(range(start, stop + 1, step))
    if v is None:
        raise spec_error(where, key, "has no value")
    return [v]


class _Builder:
    """Turns resolved parameter dicts into validated :class:`DesignPoint`s."""

    def __init__(self, where: str, base_dir: pathlib.Path, workload: WorkloadSpec):
        self.where, self.base_dir, self.workload = where, base_dir, workload
        self.tables: dict[str, EnergyTable] = {}
        self.table_digest: dict[str, str] = {}
        self.quant_cls = None
        self.area_budget = None           # iso-area: rows x cols from the budget
        if workload.has_data:
            from qaccel.quant.config import QuantConfig

            self.quant_cls = QuantConfig

    def check_value(self, name: str, key: str, v) -> None:
        """Checks of parameter ``name`` (written ``key``) that need no other parameter."""
        if name == "clock_mhz":
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or v <= 0:
                raise spec_error(self.where, key, f"must be a positive number (MHz), not {v!r}")
        elif name == "energy_table":
            self.table(key, v)
        elif name in ("mapping", "objective"):
            choices = MAPPINGS if name == "mapping" else OBJECTIVES
            if v not in choices:
                raise spec_error(self.where, key, f"must be one of {', '.join(choices)}, "
                                 f"not {v!r}")

    def table(self, key: str, v) -> EnergyTable:
        if not isinstance(v, str) or not v:
            raise spec_error(self.where, key, f"must be 'default' or a JSON file path, not {v!r}")
        if v not in self.tables:
            try:
                t = load_table(None if v == DEFAULT_TABLE else self.base_dir / v)
            except (ValueError, FileNotFoundError) as exc:
                raise spec_error(self.where, key, str(exc)) from None
            body = {k: x for k, x in t.to_dict().items() if k != "path"}
            self.tables[v] = t
            self.table_digest[v] = hashlib.sha256(
                json.dumps(body, sort_keys=True).encode()).hexdigest()
        return self.tables[v]

    def point(self, values: dict) -> DesignPoint:
        """ValueError (the config's message, which names the field) for a bad combination."""
        arr = {**ARRAY_BASE, **{k: v for k, v in values.items() if k in ARRAY_FIELDS}}
        array = ArrayConfig(**arr)
        if self.area_budget is not None:
            from qaccel.dse.isoarea import array_for_budget

            array = array_for_budget(array, self.area_budget)
        quant = None
        params = array.to_dict()
        if self.quant_cls is not None:
            quant = self.quant_cls(**{k: v for k, v in values.items() if k in QUANT_FIELDS})
            qd = quant.to_dict()
            clash = [k for k in qd if k in params and params[k] != qd[k]]
            if clash:        # a shared name left at different defaults in the two configs
                raise ValueError(f"{clash[0]} differs between ArrayConfig ({params[clash[0]]!r}) "
                                 f"and QuantConfig ({qd[clash[0]]!r}); set it in fixed or grid")
            params.update({k: v for k, v in qd.items() if k in QUANT_FIELDS})
        clock = float(values.get("clock_mhz", DEFAULT_CLOCK_MHZ))
        table = values.get("energy_table", DEFAULT_TABLE)
        self.table("energy_table", table)
        mapping = values.get("mapping", DEFAULT_MAPPING)
        objective = values.get("objective", DEFAULT_OBJECTIVE)
        for name, v in (("mapping", mapping), ("objective", objective)):
            self.check_value(name, name, v)
        params["clock_mhz"] = clock
        params["energy_table"] = table
        params["mapping"] = mapping
        params["objective"] = objective if mapping == "search" else None
        ident = {**params, "energy_table": self.table_digest[table]}
        if mapping == "fixed":      # the fixed nest: no objective, the hash of older sweeps
            del ident["mapping"], ident["objective"]
        return DesignPoint(config_hash=point_hash(self.workload.key, ident), params=params,
                           array=array, quant=quant, clock_mhz=clock, energy_table=table,
                           mapping=mapping, objective=objective)


def point_hash(workload_key: str, params: dict) -> str:
    """SHA-256 hex of a workload key and a parameter dict (canonical JSON)."""
    blob = json.dumps({"workload": workload_key, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _describe(values: dict) -> str:
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in values.items()) + "}"


def parse_spec(data, where: str = "<sweep>", base_dir=".") -> SweepSpec:
    """Validate a sweep mapping (the YAML document) into a :class:`SweepSpec`.

    Raises ValueError naming ``where`` and the offending key before anything runs.
    """
    base_dir = pathlib.Path(base_dir)
    check_keys(data, where, TOP_KEYS, "sweep")
    if "workload" not in data:
        raise spec_error(where, "workload", "missing (what every point runs)")
    workload = _parse_workload(data["workload"], where, base_dir)
    name = data.get("name", pathlib.Path(where).stem)
    if not isinstance(name, str):
        raise spec_error(where, "name", f"must be a string, not {name!r}")

    # ---- metrics
    metrics = data.get("metrics", ["cost"] + (["accuracy"] if workload.has_data else []))
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, list) or not metrics:
        raise spec_error(where, "metrics", f"must be a list of {', '.join(METRIC_GROUPS)}, "
                         f"not {metrics!r}")
    for m in metrics:
        if m not in METRIC_GROUPS:
            raise spec_error(where, "metrics", f"unknown metric group {m!r}; known: "
                             f"{', '.join(METRIC_GROUPS)}")
        if m == "accuracy" and not workload.has_data:
            raise spec_error(where, "metrics", f"accuracy needs a workload with data "
                             f"(workload: model: ...); {workload.label} is cost-only")
    metrics = tuple(g for g in METRIC_GROUPS if g in metrics)

    # ---- parameters
    fixed = data.get("fixed", {}) or {}
    grid = data.get("grid", {}) or {}
    for section, d in (("fixed", fixed), ("grid", grid)):
        if not isinstance(d, dict):
            raise spec_error(where, section,
                             f"must be a mapping of parameter -> value(s), not {d!r}")
        for k in d:
            if k not in PARAM_TYPES:
                raise spec_error(where, f"{section}.{k}", "unknown parameter; known: "
                                 + ", ".join(sorted(PARAM_TYPES)))
            if k in SHARED_FIELDS and workload.kind == "int_network":
                raise spec_error(where, f"{section}.{k}",
                                 "set by each layer of the integer network (workload "
                                 "int_network); sweep the geometry, buffers, clock or "
                                 "energy table")
            if k in QUANT_ONLY_FIELDS and not workload.has_data:
                raise spec_error(where, f"{section}.{k}", f"a QuantConfig field, but "
                                 f"{workload.label} has no data to quantize "
                                 f"(use workload: model: ...)")
    both = sorted(set(fixed) & set(grid))
    if both:
        raise spec_error(where, f"grid.{both[0]}", "also set in fixed")
    b = _Builder(where, base_dir, workload)
    budget = data.get("area_budget_cells")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int | float) or not budget > 0:
            raise spec_error(where, "area_budget_cells", f"must be a number > 0, not {budget!r}")
        for section, d in (("fixed", fixed), ("grid", grid)):
            for k in ("rows", "cols"):
                if k in d:
                    raise spec_error(where, f"{section}.{k}", "not with area_budget_cells: the "
                                     "array size follows from the budget and the point's widths")
        b.area_budget = float(budget)
    for k, v in fixed.items():
        if isinstance(v, list | dict) or v is None:
            raise spec_error(where, f"fixed.{k}", f"must be one value, not {v!r}")
        b.check_value(k, f"fixed.{k}", v)
    try:
        b.point(dict(fixed))
    except ValueError as exc:
        raise spec_error(where, "fixed", str(exc)) from None
    axes = {k: _values(where, f"grid.{k}", v) for k, v in grid.items()}
    for k, vals in axes.items():            # each value alone, so the error names its key
        for v in vals:
            b.check_value(k, f"grid.{k}", v)
            try:
                b.point({**fixed, k: v})
            except (ValueError, TypeError) as exc:
                raise spec_error(where, f"grid.{k}", f"value {v!r}: {exc}") from None

    # ---- the points
    keys = list(axes)
    sizes = [len(axes[k]) for k in keys]
    total = math.prod(sizes)
    n_random = data.get("random")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise spec_error(where, "seed", f"must be an integer, not {seed!r}")
    if n_random is not None:
        if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
            raise spec_error(where, "random", f"must be a positive integer, not {n_random!r}")
        if n_random > total:
            raise spec_error(where, "random", f"{n_random} samples but the grid has only {total} "
                             f"points; drop random to run the whole grid")
        idx = sorted(_random.Random(seed).sample(range(total), n_random))
    else:
        if total > MAX_POINTS:
            raise spec_error(where, "grid", f"{total:,} points (more than {MAX_POINTS:,}); "
                             f"sample it with random: N")
        idx = range(total)
    skip_invalid = data.get("skip_invalid", False)
    if not isinstance(skip_invalid, bool):
        raise spec_error(where, "skip_invalid", f"must be true or false, not {skip_invalid!r}")
    points, seen, skipped = [], set(), 0
    for i in idx:                    # mixed-radix index: itertools.product's order
        values, rest = dict(fixed), i
        for k, n in zip(reversed(keys), reversed(sizes)):
            rest, j = divmod(rest, n)
            values[k] = axes[k][j]
        try:
            pt = b.point(values)
        except (ValueError, TypeError) as exc:
            if skip_invalid:
                skipped += 1
                continue
            raise spec_error(where, "grid", f"point {_describe({k: values[k] for k in keys})}: "
                             f"{exc} (skip_invalid: true drops such combinations)") from None
        if pt.config_hash not in seen:
            seen.add(pt.config_hash)
            points.append(pt)
    if not points:
        raise spec_error(where, "grid", "no valid point")
    return SweepSpec(path=where, name=name, workload=workload, points=tuple(points),
                     metrics=metrics, swept=tuple(keys), tables=dict(b.tables),
                     skipped=skipped)
