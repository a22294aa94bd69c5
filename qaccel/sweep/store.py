"""The results store: one SQLite file (``sqlite3``), table ``points``, one row per design point.

Schema (parameter and metric columns are added as sweeps use them)::

    points(
      id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order; kept on update
      config_hash TEXT NOT NULL UNIQUE,               -- DesignPoint.config_hash
      kind        TEXT NOT NULL,                      -- 'sweep' (or 'search' trials)
      workload    TEXT NOT NULL,                      -- e.g. 'network:resnet50'
      status      TEXT NOT NULL,                      -- 'ok' | 'error'
      error       TEXT,                               -- the failure, for status 'error'
      elapsed_s   REAL,                               -- seconds spent on the point
      finished_at REAL,                               -- unix time the row was written
      params_json TEXT NOT NULL,                      -- every parameter, exact types
      <parameter columns: rows, cols, w_bits, ..., clock_mhz, energy_table>,
      <metric columns: cycles, latency_s, energy_j, ..., area_cells, accuracy, ...>)

WAL journal and a commit per row: a process killed at any instant leaves every finished row
and nothing half-written. Values always travel as ``?`` parameters; a column name reaches
SQL text only if it is a known parameter or metric (:mod:`.fields`) or a column the caller
declared, and a plain identifier.
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
import time
from collections.abc import Iterable, Mapping

from .fields import METRIC_TYPES, PARAM_TYPES, SQL_TYPES, check_identifier

__all__ = ["Store", "CORE_COLUMNS", "STATUSES"]

STATUSES = ("ok", "error")
CORE_COLUMNS = ("id", "config_hash", "kind", "workload", "status", "error", "elapsed_s",
                "finished_at", "params_json")
_CREATE = """CREATE TABLE IF NOT EXISTS points (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  config_hash TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  workload TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
  error TEXT,
  elapsed_s REAL,
  finished_at REAL,
  params_json TEXT NOT NULL)"""


def _q(name: str) -> str:
    """A checked identifier, double-quoted for SQL text."""
    return '"' + check_identifier(name) + '"'


class Store:
    """The ``points`` table of one SQLite file.

    Parameters
    ----------
    path : path-like
        The database file, created (with its table) if missing.
    extra_params, extra_metrics : mapping of str to {"INTEGER", "REAL", "TEXT"}, optional
        Columns beyond the known parameters and metrics (e.g. per-layer bit-widths of a
        search), declared by the caller; names must be plain identifiers.

    Examples
    --------
    >>> with Store("results.sqlite") as st:                      # doctest: +SKIP
    ...     ok = st.rows(status="ok")
    ...     xs = [(r["energy_j"], r["accuracy"]) for r in ok]
    """

    def __init__(self, path, *, extra_params: Mapping[str, str] | None = None,
                 extra_metrics: Mapping[str, str] | None = None):
        self.path = pathlib.Path(path)
        self._params = dict(PARAM_TYPES)
        self._metrics = dict(METRIC_TYPES)
        for mine, extra in ((self._params, extra_params), (self._metrics, extra_metrics)):
            for name, typ in (extra or {}).items():
                check_identifier(name)
                if name in CORE_COLUMNS:
                    raise ValueError(f"column {name!r} is a core column of the store")
                if typ not in SQL_TYPES:
                    raise ValueError(f"column {name!r}: type must be one of {SQL_TYPES}, "
                                     f"not {typ!r}")
                mine[name] = typ
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_CREATE)
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"store {str(self.path)!r}: not a usable SQLite database "
                             f"({exc})") from None
        self._columns = self._read_columns()

    # ---- lifecycle
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- columns
    def _read_columns(self) -> list[str]:
        return [r[1] for r in self._db.execute("PRAGMA table_info(points)")]

    def columns(self) -> list[str]:
        """Every column of ``points``, in table order."""
        return list(self._columns)

    def param_columns(self) -> list[str]:
        """Parameter columns present in the table (known or declared parameters)."""
        return [c for c in self._columns if c in self._params]

    def metric_columns(self) -> list[str]:
        """Metric columns present in the table (known or declared metrics)."""
        return [c for c in self._columns if c in self._metrics]

    def _ensure(self, names: Iterable[str]) -> None:
        for name in names:
            if name in self._columns:
                continue
            typ = self._params.get(name) or self._metrics.get(name)
            if typ is None:
                raise ValueError(f"unknown column {name!r}: not a known parameter or metric "
                                 f"of the store (qaccel.sweep.fields) nor a declared one")
            self._db.execute(f"ALTER TABLE points ADD COLUMN {_q(name)} {typ}")
            self._columns.append(name)

    # ---- writing
    def put(self, config_hash: str, params: Mapping, metrics: Mapping, *, status: str = "ok",
            error: str | None = None, elapsed_s: float | None = None, workload: str = "",
            kind: str = "sweep") -> int:
        """Insert or update (same ``config_hash``: same row id) one point; commit. Returns
        the row id. Parameters must be known or declared parameter names, metrics metric
        names; a metric not given keeps its stored value."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        bad = [k for k in params if k not in self._params]
        bad += [k for k in metrics if k not in self._metrics]
        if bad:
            raise ValueError(f"unknown column {bad[0]!r}: not a known parameter or metric of "
                             f"the store (qaccel.sweep.fields) nor a declared one")
        cols = {"config_hash": config_hash, "kind": kind, "workload": workload,
                "status": status, "error": error, "elapsed_s": elapsed_s,
                "finished_at": time.time(),
                "params_json": json.dumps(dict(params), sort_keys=True)}
        cols.update(params)
        cols.update(metrics)
        try:
            self._ensure(k for k in cols if k not in CORE_COLUMNS)
            names = ", ".join(_q(k) for k in cols)
            marks = ", ".join("?" for _ in cols)
            update = ", ".join(f"{_q(k)} = excluded.{_q(k)}" for k in cols
                               if k != "config_hash")
            self._db.execute(
                f"INSERT INTO points ({names}) VALUES ({marks}) "
                f"ON CONFLICT(config_hash) DO UPDATE SET {update}", list(cols.values()))
            row = self._db.execute("SELECT id FROM points WHERE config_hash = ?",
                                   (config_hash,)).fetchone()
            self._db.commit()
        except BaseException:
            self._db.rollback()
            raise
        return int(row[0])

    # ---- reading
    def rows(self, status: str | None = None, kind: str | None = None,
             workload: str | None = None) -> list[dict]:
        """Rows as dicts (column -> value), in insertion order, optionally filtered."""
        where, args = [], []
        for col, val in (("status", status), ("kind", kind), ("workload", workload)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM points" + (" WHERE " + " AND ".join(where) if where else "")
        cur = self._db.execute(sql + " ORDER BY id", args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def count(self, status: str | None = None) -> int:
        if status is None:
            return int(self._db.execute("SELECT COUNT(*) FROM points").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM points WHERE status = ?",
                                    (status,)).fetchone()[0])

    def finished(self, metrics: Iterable[str] = (), *, errors: bool = True) -> set[str]:
        """Hashes of points that need no work: status ``ok`` with every column of
        ``metrics`` filled, and (if ``errors``) the ones stored as errors."""
        need = [m for m in metrics]
        for m in need:
            if m not in self._metrics:
                raise ValueError(f"unknown metric column {m!r}")
        missing = [m for m in need if m not in self._columns]
        done: set[str] = set()
        if not missing:
            cond = "".join(f" AND {_q(m)} IS NOT NULL" for m in need)
            done |= {r[0] for r in self._db.execute(
                f"SELECT config_hash FROM points WHERE status = 'ok'{cond}")}
        if errors:
            done |= {r[0] for r in self._db.execute(
                "SELECT config_hash FROM points WHERE status = 'error'")}
        return done

    def params(self, row: Mapping) -> dict:
        """The exact parameters of a row (from ``params_json``: bools stay bools)."""
        return json.loads(row["params_json"])
