"""The store's ``points`` table as CSV or parquet (``qaccel sweep --export``)."""

from __future__ import annotations

import csv
import pathlib

from .store import Store

__all__ = ["EXPORT_SUFFIXES", "export_rows", "export_store"]

EXPORT_SUFFIXES = (".csv", ".parquet")


def export_rows(rows: list[dict], columns: list[str], path) -> pathlib.Path:
    """Write ``rows`` (dicts) with ``columns`` to ``path``: ``.csv`` or ``.parquet``."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise ValueError(f"export file {str(path)!r} must end in .csv or .parquet")
    tmp = path.with_name(path.name + ".tmp")
    if suffix == ".csv":
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows({c: r.get(c) for c in columns} for r in rows)
    else:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("parquet export needs pyarrow (pip install 'qaccel[dse]')") from None
        table = pa.table({c: [r.get(c) for r in rows] for c in columns})
        pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def export_store(store: Store, path, status: str | None = None) -> pathlib.Path:
    """Every row of ``store`` (or those with ``status``), every column, to ``path``."""
    return export_rows(store.rows(status=status), store.columns(), path)
