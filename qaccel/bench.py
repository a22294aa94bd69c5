"""``make bench``: run every benchmark in ``qaccel/benches`` and write markdown tables.

Each module in ``BENCH_MODULES`` exposes ``run(out_dir: pathlib.Path) -> str`` returning a
markdown section; the sections are written to ``docs/bench/<name>.md`` and indexed in
``docs/bench/README.md``. Select some with ``python -m qaccel.bench NAME ...``.
"""

from __future__ import annotations

import importlib
import pathlib
import sys
import time

BENCH_MODULES = [
    "qaccel.benches.scalesim",
    "qaccel.benches.ptq",
    "qaccel.benches.energy",
    "qaccel.benches.utilization",
    "qaccel.benches.sim_speed",
]

OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "bench"


def main(argv: list[str] | None = None) -> int:
    names = argv if argv is not None else sys.argv[1:]
    OUT.mkdir(parents=True, exist_ok=True)
    chosen = [m for m in BENCH_MODULES if not names or m.rsplit(".", 1)[-1] in names]
    for mod_name in chosen:
        short = mod_name.rsplit(".", 1)[-1]
        print(f"[bench] {short} ...", flush=True)
        t0 = time.perf_counter()
        text = importlib.import_module(mod_name).run(OUT)
        (OUT / f"{short}.md").write_text(text)
        print(f"[bench] {short} done in {time.perf_counter() - t0:.1f} s -> docs/bench/{short}.md")
    index = ["# Benchmarks", "",
             "Written by `make bench`; each table says how it was measured.", ""]
    index += [f"- [{p.stem}]({p.name})" for p in sorted(OUT.glob("*.md")) if p.stem != "README"]
    (OUT / "README.md").write_text("\n".join(index) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
