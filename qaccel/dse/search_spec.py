"""The search file: YAML (``yaml.safe_load``) validated into a :class:`SearchSpec` before
anything runs.

::

    name: cnn-mixed            # Optuna study name (default: the file's stem)
    model: digits_cnn          # digits_cnn | digits_mobilenet (accuracy needs data)
    objectives: [accuracy, energy]       # two or three of accuracy, energy, latency, area
    trials: 40                 # total trials of the study (a resumed search runs the rest)
    seed: 0                    # NSGA-II sampler seed
    population: 12             # NSGA-II population size
    space:                     # the search variables: lists of choices
      w_bits: [4, 6, 8]        # per layer: every conv/linear layer picks its weight bits
      a_bits: [8]              # per layer: bits of the activations the layer produces
      rows: [8, 16]            # array geometry (not with area_budget_cells)
      cols: [8, 16]
      weight_buffer_kib: [64]
      act_buffer_kib: [64]
    fixed:                     # QuantConfig / ArrayConfig fields every trial shares
      per_channel: true
    area_budget_cells: 200000  # optional iso-area: rows x cols follow from each trial's PE
    seeds:                     # trials enqueued before NSGA-II samples
      uniform: [[8, 8], [6, 8], [4, 8]]  # uniform (w_bits, a_bits) of every layer
      sensitivity: 4           # configurations from the sensitivity report
    select:                    # the rule of --export-best
      minimize: energy         # energy | latency | area
      max_accuracy_drop: 0.5   # accuracy points below FP32 allowed

Unknown keys and bad values raise ValueError naming the file and the key.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

from qaccel.yaml_spec import check_int, check_keys, read_yaml, spec_error

__all__ = ["SearchSpec", "load_search", "parse_search", "SEARCH_OBJECTIVES", "MODELS",
           "HW_VARIABLES"]

SEARCH_OBJECTIVES = ("accuracy", "energy", "latency", "area")
MODELS = ("digits_cnn", "digits_mobilenet")
#: hardware search variables (ArrayConfig fields) and their defaults
HW_VARIABLES = {"rows": (16,), "cols": (16,), "weight_buffer_kib": (64,),
                "act_buffer_kib": (64,)}
_TOP = ("name", "model", "objectives", "trials", "seed", "population", "space", "fixed",
        "area_budget_cells", "seeds", "select", "eval_images")
_SPACE = ("w_bits", "a_bits") + tuple(HW_VARIABLES)
_SELECT_MIN = ("energy", "latency", "area")


@dataclass(frozen=True)
class SearchSpec:
    """A validated search file (see the module docstring for the keys)."""

    path: str
    name: str
    model: str
    objectives: tuple[str, ...]
    trials: int = 40
    seed: int = 0
    population: int = 12
    w_bits: tuple[int, ...] = (4, 6, 8)
    a_bits: tuple[int, ...] = (8,)
    hw: dict = field(default_factory=lambda: dict(HW_VARIABLES))
    fixed: dict = field(default_factory=dict)
    area_budget_cells: float | None = None
    uniform: tuple[tuple[int, int], ...] = ((8, 8),)
    sensitivity_seeds: int = 0
    select_minimize: str = "energy"
    max_accuracy_drop: float = 0.5
    eval_images: int | None = None

    @property
    def directions(self) -> list[str]:
        return ["maximize" if o == "accuracy" else "minimize" for o in self.objectives]


def load_search(path) -> SearchSpec:
    """Read and validate a search file."""
    return parse_search(read_yaml(path, "search"), str(path))


def _choices(where, key, v, lo, hi) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list) or not v:
        raise spec_error(where, key, f"must be a non-empty list of integers, not {v!r}")
    out = tuple(sorted({check_int(where, key, x, lo, hi) for x in v}))
    return out


def parse_search(data, where: str = "<search>") -> SearchSpec:
    """Validate a search mapping (the YAML document) into a :class:`SearchSpec`."""
    from qaccel.quant.config import QuantConfig
    from qaccel.sim.config import ArrayConfig

    check_keys(data, where, _TOP, "search")
    name = data.get("name", pathlib.Path(where).stem)
    if not isinstance(name, str) or not name:
        raise spec_error(where, "name", f"must be a non-empty string, not {name!r}")
    model = data.get("model")
    if model not in MODELS:
        raise spec_error(where, "model", f"must be one of {', '.join(MODELS)}, not {model!r}")
    objs = data.get("objectives", ["accuracy", "energy"])
    if not isinstance(objs, list) or not 2 <= len(objs) <= 3 or len(set(objs)) != len(objs):
        raise spec_error(where, "objectives", f"must list two or three distinct of "
                         f"{', '.join(SEARCH_OBJECTIVES)}, not {objs!r}")
    for o in objs:
        if o not in SEARCH_OBJECTIVES:
            raise spec_error(where, "objectives", f"unknown objective {o!r}; known: "
                             f"{', '.join(SEARCH_OBJECTIVES)}")
    trials = check_int(where, "trials", data.get("trials", 40), 1)
    seed = check_int(where, "seed", data.get("seed", 0), 0)
    population = check_int(where, "population", data.get("population", 12), 2)

    space = data.get("space", {}) or {}
    if not isinstance(space, dict):
        raise spec_error(where, "space", f"must be a mapping, not {space!r}")
    for k in space:
        if k not in _SPACE:
            raise spec_error(where, f"space.{k}", f"unknown variable; known: {', '.join(_SPACE)}")
    w_bits = _choices(where, "space.w_bits", space.get("w_bits", [4, 6, 8]), 2, 16)
    a_bits = _choices(where, "space.a_bits", space.get("a_bits", [8]), 2, 16)
    hw = {}
    for k, default in HW_VARIABLES.items():
        lo, hi = (2, 256) if k in ("rows", "cols") else (1, 1 << 20)
        hw[k] = _choices(where, f"space.{k}", space.get(k, list(default)), lo, hi)

    budget = data.get("area_budget_cells")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0:
            raise spec_error(where, "area_budget_cells", f"must be a number > 0, not {budget!r}")
        for k in ("rows", "cols"):
            if k in space:
                raise spec_error(where, f"space.{k}", "not with area_budget_cells: the array size "
                                 "follows from the budget and each trial's PE area")

    fixed = data.get("fixed", {}) or {}
    if not isinstance(fixed, dict):
        raise spec_error(where, "fixed", f"must be a mapping, not {fixed!r}")
    qfields = set(QuantConfig.__dataclass_fields__) - {"w_bits", "a_bits", "layer_bits"}
    afields = set(ArrayConfig.__dataclass_fields__) - {"w_bits", "a_bits"} - set(HW_VARIABLES)
    for k, v in fixed.items():
        if k not in qfields | afields:
            raise spec_error(where, f"fixed.{k}", "unknown or searched field; known: "
                             + ", ".join(sorted(qfields | afields)))
        if isinstance(v, list | dict) or v is None:
            raise spec_error(where, f"fixed.{k}", f"must be one value, not {v!r}")
    top_w, top_a = max(w_bits), max(a_bits)
    try:
        QuantConfig(**{k: v for k, v in fixed.items() if k in qfields}, w_bits=top_w,
                    a_bits=top_a)
        ArrayConfig(**{k: v for k, v in fixed.items() if k in afields}, w_bits=top_w,
                    a_bits=top_a)
    except (ValueError, TypeError) as exc:
        raise spec_error(where, "fixed", str(exc)) from None

    seeds = data.get("seeds", {}) or {}
    if not isinstance(seeds, dict):
        raise spec_error(where, "seeds", f"must be a mapping, not {seeds!r}")
    for k in seeds:
        if k not in ("uniform", "sensitivity"):
            raise spec_error(where, f"seeds.{k}", "unknown key; known: uniform, sensitivity")
    uni = seeds.get("uniform", [[top_w, top_a]])
    if not isinstance(uni, list):
        raise spec_error(where, "seeds.uniform", f"must be a list of [w_bits, a_bits], not {uni!r}")
    uniform = []
    for u in uni:
        if not (isinstance(u, list) and len(u) == 2 and u[0] in w_bits and u[1] in a_bits):
            raise spec_error(where, "seeds.uniform", f"entry {u!r} must be [w_bits, a_bits] with "
                             f"w_bits in {list(w_bits)} and a_bits in {list(a_bits)}")
        uniform.append((int(u[0]), int(u[1])))
    sens = check_int(where, "seeds.sensitivity", seeds.get("sensitivity", 0), 0, 64)

    select = data.get("select", {}) or {}
    if not isinstance(select, dict):
        raise spec_error(where, "select", f"must be a mapping, not {select!r}")
    for k in select:
        if k not in ("minimize", "max_accuracy_drop"):
            raise spec_error(where, f"select.{k}",
                             "unknown key; known: minimize, max_accuracy_drop")
    sel_min = select.get("minimize", "energy")
    if sel_min not in _SELECT_MIN:
        raise spec_error(where, "select.minimize", f"must be one of {', '.join(_SELECT_MIN)}, "
                         f"not {sel_min!r}")
    drop = select.get("max_accuracy_drop", 0.5)
    if isinstance(drop, bool) or not isinstance(drop, int | float) or drop < 0:
        raise spec_error(where, "select.max_accuracy_drop", f"must be a number >= 0, not {drop!r}")
    ev = data.get("eval_images")
    if ev is not None:
        ev = check_int(where, "eval_images", ev, 1)
    return SearchSpec(path=where, name=name, model=model, objectives=tuple(objs),
                      trials=trials, seed=seed, population=population, w_bits=w_bits,
                      a_bits=a_bits, hw=hw, fixed=dict(fixed),
                      area_budget_cells=None if budget is None else float(budget),
                      uniform=tuple(uniform), sensitivity_seeds=sens,
                      select_minimize=sel_min, max_accuracy_drop=float(drop),
                      eval_images=ev)
