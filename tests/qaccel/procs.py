"""Subprocesses the qaccel tests start: bounded in time, and stopped by the process group
they were started in (never by name)."""

from __future__ import annotations

import os
import signal
import subprocess


def run_bounded(cmd, env, timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` to completion within ``timeout`` seconds in its own session; on timeout
    its whole process group is killed and ``subprocess.TimeoutExpired`` propagates."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
