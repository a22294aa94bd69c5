"""A sweep on a real multi-process Dask cluster: a ``dask-scheduler`` and two
``dask-worker`` processes on 127.0.0.1, started and stopped by this test (process groups,
by id), give the same results as the embedded LocalCluster; the embedded cluster listens on
127.0.0.1 only; a TLS scheduler is joined with certificates from the command line."""

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import yaml
from procs import run_bounded

from qaccel.cli import main
from qaccel.sweep.fields import METRIC_GROUPS

START_S = 60               # scheduler / workers up within this
SWEEP_S = 120              # one sweep subprocess


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc, deadline: float) -> None:
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dask-scheduler exited: {proc.communicate()}"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise AssertionError(f"scheduler did not listen on 127.0.0.1:{port} in {START_S} s")


@contextlib.contextmanager
def dask_cluster(tmp_path, scheme="tcp", tls_args=()):
    """A real scheduler + 2 worker processes; yields the scheduler's address and process."""
    port = _free_port()
    addr = f"{scheme}://127.0.0.1:{port}"
    procs = []
    env = {**os.environ, "QACCEL_HOME": str(tmp_path / "ws"), "OMP_NUM_THREADS": "1"}

    def start(args, name):
        log = open(tmp_path / f"{name}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True,
                             cwd=tmp_path)
        procs.append((p, log))
        return p

    try:
        sched = start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                       "--port", str(port), "--no-dashboard", "--protocol", scheme,
                       *tls_args], "scheduler")
        _wait_port(port, sched, time.monotonic() + START_S)
        for i in range(2):
            start(["distributed.cli.dask_worker", addr, "--nthreads", "1",
                   "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}",
                   "--death-timeout", "60", *tls_args], f"worker{i}")
        yield addr, sched
    finally:
        for p, _log in reversed(procs):           # only the groups this test started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p, log in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=15)
            log.close()


def _sweep(tmp_path, topo, name="dask"):
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump({
        "name": name, "workload": {"topology": str(topo)},
        "grid": {"rows": [4, 8, 16], "cols": [4, 16], "w_bits": [4, 8],
                 "act_buffer_kib": [1, 64]}}))
    return f


def _qaccel(args, tmp_path):
    env = {**os.environ, "QACCEL_HOME": str(tmp_path / "ws")}
    done = run_bounded([sys.executable, "-m", "qaccel", "sweep", *map(str, args),
                        "--no-progress"], env, SWEEP_S)
    assert done.returncode == 0, done.stderr
    return done.stderr


def _results(db):
    con = sqlite3.connect(db)
    cols = ", ".join(["status", "error"] + list(METRIC_GROUPS["cost"]))
    out = {r[0]: r[1:] for r in con.execute(f"SELECT config_hash, {cols} FROM points")}
    con.close()
    return out


def test_remote_scheduler_with_two_worker_processes_equals_local_cluster(tmp_path, topo,
                                                                         monkeypatch):
    from qaccel.sweep.runner import run_sweep
    from qaccel.sweep.spec import load_spec
    from qaccel.sweep.store import Store
    from qaccel.workspace import Workspace

    sweep = _sweep(tmp_path, topo)
    local = tmp_path / "local.sqlite"
    remote = tmp_path / "remote.sqlite"
    with dask_cluster(tmp_path) as (addr, sched):
        with Store(local) as st:                  # meanwhile: the embedded LocalCluster
            res = run_sweep(load_spec(sweep), st, workers=2, progress=False,
                            ws=Workspace(tmp_path / "ws"))
        assert res.workers == 2 and res.computed == 24
        err = _qaccel([sweep, "--store", remote, "--scheduler", addr, "--batch", "1"],
                      tmp_path)
        assert "on 2 workers" in err, err
        _lose_the_scheduler(tmp_path, topo, addr, sched, monkeypatch)
    a, b = _results(local), _results(remote)
    assert len(a) == 24 and a == b
    assert {v[0] for v in a.values()} == {"ok", "error"}    # a 1 KiB act buffer fails some
    worker_logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert all("Registered to" in w for w in worker_logs), worker_logs


def _lose_the_scheduler(tmp_path, topo, addr, sched, monkeypatch):
    """A long sweep whose scheduler is killed mid-way stops (SweepInterrupted; the CLI exits
    1) and stores no error rows for the points it did not get: a rerun computes them."""
    from qaccel.sweep import runner
    from qaccel.sweep.runner import SweepInterrupted, run_sweep
    from qaccel.sweep.spec import parse_spec
    from qaccel.sweep.store import Store
    from qaccel.workspace import Workspace

    spec = parse_spec({"workload": {"topology": str(topo)},
                       "grid": {"rows": {"start": 4, "stop": 200},
                                "cols": {"start": 4, "stop": 40}}})
    db = tmp_path / "big.sqlite"

    def kill_after_rows():
        deadline = time.monotonic() + SWEEP_S
        while _count(db) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(sched.pid, signal.SIGKILL)                      # the scheduler's group

    # the client tries to reconnect for its connect timeout before giving up: keep it short
    monkeypatch.setattr(runner, "CONNECT_TIMEOUT_S", 5)
    killer = threading.Thread(target=kill_after_rows, daemon=True)
    with Store(db) as st:
        killer.start()
        with pytest.raises(SweepInterrupted, match="lost the cluster.*rerun to resume"):
            run_sweep(spec, st, scheduler=addr, batch=1, progress=False,
                      ws=Workspace(tmp_path / "ws"))
        killer.join(timeout=30)
        statuses = {r["status"] for r in st.rows()}
        n = st.count()
    assert statuses == {"ok"} and 5 <= n < len(spec.points)


def _count(db) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute("SELECT COUNT(*) FROM points").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def test_embedded_cluster_listens_on_localhost_only():
    import psutil
    from distributed import Client

    from qaccel.sweep.runner import local_cluster

    with local_cluster(2) as cluster, Client(cluster) as client:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        info = client.scheduler_info()
        assert len(info["workers"]) == 2
        assert all(w.startswith("tcp://127.0.0.1:") for w in info["workers"])
        assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
        me = psutil.Process()
        listening = [c.laddr for p in [me, *me.children(recursive=True)]
                     for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN]
        ports = {a.port for a in listening}
        assert info["services"]["dashboard"] in ports          # the HTTP server too
        assert len(listening) >= 4 and {a.ip for a in listening} == {"127.0.0.1"}


def _make_certs(d):
    """A CA and one certificate for 127.0.0.1 signed by it (openssl CLI)."""
    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
        "ca.pem", "-days", "2", "-subj", "/CN=qaccel-test-ca")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr",
        "-subj", "/CN=127.0.0.1")
    ssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "node.pem", "-days", "2", "-extfile", "ext.cnf")
    return d / "ca.pem", d / "node.pem", d / "node.key"


def test_tls_scheduler(tmp_path, topo, capsys):
    assert shutil.which("openssl"), "the TLS test needs the openssl command"
    ca, cert, key = _make_certs(tmp_path)
    tls = ("--tls-ca-file", str(ca), "--tls-cert", str(cert), "--tls-key", str(key))
    sweep = _sweep(tmp_path, topo, "tls")
    db = tmp_path / "tls.sqlite"
    with dask_cluster(tmp_path, "tls", tls) as (addr, _):
        assert addr.startswith("tls://")
        _qaccel([sweep, "--store", db, "--scheduler", addr, *tls], tmp_path)
        status = main(["sweep", str(sweep), "--store", str(tmp_path / "plain.sqlite"),
                       "--scheduler", addr, "--no-progress"])           # no certificates
    assert len(_results(db)) == 24
    assert status == 2
    assert f"qaccel: error: --scheduler {addr}: cannot connect" in capsys.readouterr().err


@pytest.mark.parametrize("argv, msg", [
    (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--workers sizes"),
    (["--tls-ca-file", "CA"], "apply to --scheduler only"),
])
def test_cluster_option_errors(tmp_path, topo, cli_error, argv, msg):
    sweep = _sweep(tmp_path, topo)
    (tmp_path / "CA").write_text("x")
    argv = [a if a != "CA" else str(tmp_path / "CA") for a in argv]
    assert msg in cli_error(["sweep", str(sweep), "--store", str(tmp_path / "r.sqlite"),
                             *argv])
