"""Running a sweep on Dask distributed, writing each result to the store as it arrives.

By default an embedded ``LocalCluster`` (worker processes, one thread each) whose scheduler,
workers and HTTP dashboard listen on 127.0.0.1 only; with ``scheduler=`` the sweep joins an
existing cluster (``tcp://`` or ``tls://``, with a :class:`distributed.security.Security`
or Dask's configured one). Points are submitted in small batches (one task evaluates a few
points, so the scheduler's per-task overhead does not dominate microsecond-scale cost
points) and gathered with ``as_completed``; the client process alone writes the SQLite
store, one committed row per point. Points already finished in the store are not
submitted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass

from .points import evaluate_batch
from .spec import SweepSpec
from .store import Store
from .workload import prepare

__all__ = ["SweepRun", "SweepInterrupted", "run_sweep", "local_cluster", "batch_size",
           "make_batches"]

#: a remote scheduler must answer, and have a worker, within this many seconds
CONNECT_TIMEOUT_S = 30


@dataclass(frozen=True)
class SweepRun:
    """What one run did.

    Attributes
    ----------
    total : int
        Points of the sweep.
    already : int
        Points already finished in the store (not recomputed).
    ok, errors : int
        Points computed by this run, by outcome.
    seconds : float
        Wall time from the first task submitted to the last row written.
    startup_seconds : float
        Preparing the workload and starting (or joining) the cluster.
    store_seconds : float
        Time the client spent writing rows.
    workers : int
    """

    total: int
    already: int
    ok: int
    errors: int
    seconds: float
    store_seconds: float
    workers: int
    startup_seconds: float = 0.0

    @property
    def computed(self) -> int:
        return self.ok + self.errors


class SweepInterrupted(RuntimeError):
    """The sweep stopped before every point was computed (the rows stored so far are kept;
    running it again resumes)."""


def local_cluster(n_workers: int):
    """An embedded cluster on 127.0.0.1 only: worker processes, one thread each; the
    scheduler's HTTP server (dashboard, health) on a free 127.0.0.1 port."""
    from distributed import LocalCluster

    return LocalCluster(host="127.0.0.1", dashboard_address="127.0.0.1:0", n_workers=n_workers,
                        threads_per_worker=1, processes=True, silence_logs=logging.ERROR)


def batch_size(n_points: int, n_workers: int) -> int:
    """Points per task: enough that each worker gets about eight tasks, at most 50."""
    return max(1, min(50, math.ceil(n_points / (8 * max(1, n_workers)))))


def make_batches(points, size: int, by_quant: bool = False) -> list[list]:
    """Tasks of at most ``size`` points; with ``by_quant``, one task per quantization config
    holding all its points (one worker quantizes it once; no two workers repeat it)."""
    if not by_quant:
        return [points[i:i + size] for i in range(0, len(points), size)]
    groups: dict[str, list] = {}
    for p in points:
        groups.setdefault(json.dumps(p.quant.to_dict(), sort_keys=True, default=str),
                          []).append(p)
    return list(groups.values())


def _connect(scheduler: str | None, workers: int | None, security):
    from distributed import Client

    if scheduler is None:
        n = workers or os.cpu_count() or 1
        cluster = local_cluster(n)
        return cluster, Client(cluster)
    try:
        client = Client(scheduler, security=security, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, TypeError) as exc:  # TypeError: tls:// without certificates
        raise ValueError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
    except TimeoutError:
        client.close()
        raise ValueError(f"--scheduler {scheduler}: no worker joined within "
                         f"{CONNECT_TIMEOUT_S} s") from None
    return None, client


def run_sweep(spec: SweepSpec, store: Store, *, scheduler: str | None = None,
              workers: int | None = None, security=None, batch: int | None = None,
              retry_errors: bool = False, progress: bool = True, ws=None) -> SweepRun:
    """Evaluate every point of ``spec`` not yet finished in ``store``.

    Parameters
    ----------
    spec : SweepSpec
    store : Store
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786``, ``tls://...``); default: an
        embedded ``LocalCluster`` of ``workers`` processes on 127.0.0.1.
    workers : int, optional
        Worker processes of the embedded cluster (default: CPU count).
    security : distributed.security.Security, optional
        TLS for ``scheduler``.
    batch : int, optional
        Points per task (default :func:`batch_size`).
    retry_errors : bool
        Recompute points stored as errors (default: they count as finished).
    progress : bool
        Show a tqdm bar of the points done.
    ws : Workspace, optional
        Where shared work is cached (default: the current workspace).
    """
    from distributed import as_completed
    from distributed.utils import CancelledError as DaskCancelled
    from tqdm import tqdm

    from qaccel import workspace

    ws = ws or workspace.current()
    done = store.finished(spec.metric_columns(), errors=not retry_errors)
    todo = [p for p in spec.points if p.config_hash not in done]
    already = len(spec.points) - len(todo)
    if not todo:
        return SweepRun(len(spec.points), already, 0, 0, 0.0, 0.0, 0)
    t_start = time.perf_counter()
    ctx = prepare(spec.workload, ws)
    cluster, client = _connect(scheduler, workers, security)
    n_ok = n_err = 0
    store_s = 0.0
    try:
        n_workers = len(client.scheduler_info()["workers"])
        t0 = time.perf_counter()
        batches = make_batches(todo, batch or batch_size(len(todo), n_workers),
                               by_quant=spec.workload.has_data)
        ctx_f = client.scatter(ctx, broadcast=True, hash=False)
        tables_f = client.scatter(spec.tables, broadcast=True, hash=False)
        futures = [client.submit(evaluate_batch, ctx_f, tables_f, b, spec.metrics, pure=False)
                   for b in batches]
        owner = {f.key: b for f, b in zip(futures, batches)}
        bar = tqdm(total=len(todo), desc=f"sweep {spec.name}", unit="pt", disable=not progress,
                   file=sys.stderr)
        with bar:
            for fut in as_completed(futures):
                try:
                    results = fut.result()
                except (asyncio.CancelledError, DaskCancelled, OSError) as exc:
                    # lost the scheduler (cancelled futures, closed comms): stop; the points
                    # not stored yet are computed when the sweep runs again
                    why = " ".join(str(exc).split())      # one line, whatever dask says
                    raise SweepInterrupted(f"lost the cluster ({type(exc).__name__}: {why}); "
                                           f"{n_ok + n_err} points were stored, rerun to "
                                           f"resume") from None
                except Exception as exc:   # the task failed (e.g. KilledWorker): its points
                    msg = f"{type(exc).__name__}: {exc}"
                    results = [(p.config_hash, "error", msg, float("nan"), {})
                               for p in owner[fut.key]]
                by_hash = {p.config_hash: p for p in owner.pop(fut.key)}
                for h, status, error, elapsed, metrics in results:
                    s0 = time.perf_counter()
                    store.put(h, by_hash[h].params, metrics, status=status, error=error,
                              elapsed_s=None if math.isnan(elapsed) else elapsed,
                              workload=ctx.label)
                    store_s += time.perf_counter() - s0
                    n_ok += status == "ok"
                    n_err += status != "ok"
                bar.update(len(results))
                fut.release()
    finally:
        # best effort: closing a client whose scheduler died can itself raise in distributed
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            cluster.close()
    return SweepRun(len(spec.points), already, n_ok, n_err, time.perf_counter() - t0,
                    store_s, n_workers, t0 - t_start)
