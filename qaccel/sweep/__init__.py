"""Design-space sweeps: ``qaccel sweep SWEEP.yaml --store results.sqlite``.

- :mod:`.spec`: the sweep file (YAML), validated into design points before anything runs;
- :mod:`.workload`: the workload of a sweep (shipped network, topology CSV, digits model);
- :mod:`.points`: evaluating design points (runs on the Dask workers);
- :mod:`.store`: the resumable SQLite store (table ``points``) and its read API;
- :mod:`.runner`: Dask execution (embedded ``LocalCluster`` or a remote scheduler);
- :mod:`.export`: the store as CSV or parquet.

See ``docs/sweep.md``.
"""

from .spec import SweepSpec, load_spec, parse_spec
from .store import Store

__all__ = ["SweepSpec", "load_spec", "parse_spec", "Store"]
