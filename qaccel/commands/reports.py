"""Writing a command's report files: JSON and CSV, parent folders created, path announced
on stderr (stdout keeps the human-readable table). A failed write raises an ``OSError``
that names the file (the CLI turns it into ``qaccel: error: PATH: reason``, exit 2)."""

from __future__ import annotations

import contextlib
import csv
import json
import pathlib
import sys


@contextlib.contextmanager
def writing(path: pathlib.Path):
    """Create ``path``'s parent folders; any ``OSError`` inside names ``path`` (some, such
    as EIO from a flush, carry no file name of their own)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def write_json(path: pathlib.Path, doc) -> None:
    text = json.dumps(doc, indent=1) + "\n"
    with writing(path):
        path.write_text(text)
    print(f"wrote {path}", file=sys.stderr)


def write_csv(path: pathlib.Path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    """One row per dict; columns ``fieldnames`` (default: the first row's keys)."""
    with writing(path), open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames or list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path}", file=sys.stderr)
