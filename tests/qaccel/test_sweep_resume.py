"""Resume: a ``python -m qaccel sweep`` process killed with SIGKILL mid-sweep and started
again finishes the sweep; the rows written before the kill are untouched (not recomputed),
none is lost or duplicated."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import yaml
from procs import run_bounded

from qaccel.cli import main
from qaccel.sweep.spec import load_spec

N_POINTS = 80
KILL_AFTER = 5             # rows stored before the SIGKILL
DEADLINE_S = 90            # per subprocess


def _sweep_file(tmp_path, topo):
    f = tmp_path / "resume.yaml"
    f.write_text(yaml.safe_dump({
        "name": "resume", "workload": {"topology": topo.name},
        "grid": {"rows": {"start": 4, "stop": 23, "step": 1}, "cols": [4, 8, 16, 32]}}))
    return f


def _rows(db):
    con = sqlite3.connect(db, timeout=10)
    try:
        return {r[0]: r[1:] for r in con.execute(
            "SELECT config_hash, id, elapsed_s, finished_at, cycles FROM points")}
    except sqlite3.OperationalError:        # table not created yet
        return {}
    finally:
        con.close()


def _count(db) -> int:
    if not db.exists():
        return 0
    return len(_rows(db))


def _cmd(sweep, db):
    # one worker and one point per task: rows arrive one by one, slowly enough to kill
    return [sys.executable, "-m", "qaccel", "sweep", str(sweep), "--store", str(db),
            "--workers", "1", "--batch", "1", "--no-progress"]


def _run(cmd, env):
    return run_bounded(cmd, env, DEADLINE_S)


def test_sigkill_then_resume(tmp_path, topo, capsys):
    sweep = _sweep_file(tmp_path, topo)
    want = {p.config_hash for p in load_spec(sweep).points}
    assert len(want) == N_POINTS
    db = tmp_path / "r.sqlite"
    env = {**os.environ, "QACCEL_HOME": str(tmp_path / "ws")}
    proc = subprocess.Popen(_cmd(sweep, db), env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while _count(db) < KILL_AFTER:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < DEADLINE_S, "no rows stored in time"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):   # the sweep and its cluster, by group
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = _rows(db)
    assert KILL_AFTER <= len(before) < N_POINTS, len(before)
    assert set(before) <= want

    done = _run(_cmd(sweep, db), env)
    assert done.returncode == 0, done.stderr
    assert f"{len(before)} were already in the store" in done.stderr
    assert f"computed {N_POINTS - len(before)} points" in done.stderr
    after = _rows(db)
    assert set(after) == want                       # none lost, none foreign
    con = sqlite3.connect(db)
    n, distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT config_hash) FROM points"
                              ).fetchone()
    statuses = {s for (s,) in con.execute("SELECT DISTINCT status FROM points")}
    con.close()
    assert n == distinct == N_POINTS                # none duplicated
    assert statuses == {"ok"}
    for h, row in before.items():                   # not recomputed: the very same rows
        assert after[h] == row
    assert min(after[h][0] for h in set(after) - set(before)) > max(r[0] for r in
                                                                     before.values())

    assert main(_cmd(sweep, db)[3:]) == 0          # a third time, in process: nothing to do
    assert f"all {N_POINTS} points already" in capsys.readouterr().err
    assert _rows(db) == after
