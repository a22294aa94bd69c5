"""The known parameter and metric names of a sweep: the identifier whitelist of the store.

Parameters are the fields of :class:`qaccel.sim.ArrayConfig` and
:class:`qaccel.quant.QuantConfig` (one flat namespace: a name in both, e.g. ``w_bits``, sets
both, so the network is quantized to the array's widths), plus ``clock_mhz``,
``energy_table``, ``mapping`` (``fixed``: the fixed loop nest; ``search``: each layer's best
mapping, :mod:`qaccel.sim.mapper`) and its ``objective`` (``energy``, ``edp``, ``latency``).
Metrics come in groups a sweep asks for with ``metrics: [...]``.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import pathlib
import re

from qaccel.sim.config import ArrayConfig
from qaccel.sim.energy import CATEGORIES

__all__ = ["ARRAY_FIELDS", "QUANT_FIELDS", "SHARED_FIELDS", "QUANT_ONLY_FIELDS", "PARAM_TYPES",
           "METRIC_GROUPS", "METRIC_TYPES", "SQL_TYPES", "check_identifier", "sql_types"]

_SQL = {"int": "INTEGER", "bool": "INTEGER", "str": "TEXT", "float": "REAL"}


def sql_types(cls) -> dict[str, str]:
    """``{field: SQL type}`` of a config dataclass's scalar fields (int, bool, str, float)."""
    return {f.name: _SQL[str(f.type)] for f in dataclasses.fields(cls) if str(f.type) in _SQL}


def _class_fields_from_source(package: str, filename: str, cls: str) -> dict[str, str]:
    """Scalar annotated fields of class ``cls`` in ``package/filename``, without importing
    the package's ``__init__`` (only its location is looked up)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"cannot locate package {package}")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / filename
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return {s.target.id: _SQL[ast.unparse(s.annotation)] for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                    and ast.unparse(s.annotation) in _SQL}
    raise ImportError(f"{path}: no class {cls}")


#: ArrayConfig fields -> SQL column type
ARRAY_FIELDS: dict[str, str] = sql_types(ArrayConfig)
#: QuantConfig's scalar fields -> SQL column type, read from the source of
#: ``qaccel/quant/config.py`` (its annotations), not by importing it: importing
#: ``qaccel.quant`` imports torch (seconds), which cost-only sweeps never need.
QUANT_FIELDS: dict[str, str] = _class_fields_from_source("qaccel.quant", "config.py",
                                                         "QuantConfig")
#: names in both configs (one sweep key sets both)
SHARED_FIELDS = tuple(k for k in ARRAY_FIELDS if k in QUANT_FIELDS)
#: names only quantization uses (meaningful only for workloads with data)
QUANT_ONLY_FIELDS = tuple(k for k in QUANT_FIELDS if k not in ARRAY_FIELDS)
#: every parameter column: name -> SQL type
PARAM_TYPES: dict[str, str] = {**ARRAY_FIELDS, **QUANT_FIELDS, "clock_mhz": "REAL",
                               "energy_table": "TEXT", "mapping": "TEXT", "objective": "TEXT"}

#: metric groups (``metrics:`` in the sweep file) -> their columns
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "cost": ("cycles", "latency_s", "utilization", "macs", "dram_bits", "buffer_bits",
             "energy_j", "pj_per_mac") + tuple(f"energy_{c}_j" for c in CATEGORIES),
    "area": ("area_cells",),
    "accuracy": ("accuracy", "accuracy_fake_quant", "accuracy_fp32"),
}
_INT_METRICS = ("cycles", "macs", "dram_bits", "buffer_bits", "area_cells")
#: every metric column: name -> SQL type
METRIC_TYPES: dict[str, str] = {m: ("INTEGER" if m in _INT_METRICS else "REAL")
                                for group in METRIC_GROUPS.values() for m in group}
SQL_TYPES = ("INTEGER", "REAL", "TEXT")

_IDENT = re.compile(r"[a-z][a-z0-9_]{0,62}")


def check_identifier(name: str, what: str = "column") -> str:
    """``name`` if it is a plain lower-case identifier (``[a-z][a-z0-9_]*``), else ValueError.

    Only names that pass this *and* are known (a parameter, a metric or a column the caller
    declared) ever reach SQL text; values always go through ``?`` parameters.
    """
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise ValueError(f"{what} name {name!r} is not a plain identifier "
                         f"([a-z][a-z0-9_]*, at most 63 characters)")
    return name
