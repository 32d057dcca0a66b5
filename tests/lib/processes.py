"""Stopping the servers the tests start (each in its own process group, start_new_session=True), by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_group(proc, grace=10):
    """SIGTERM the leader, wait up to grace seconds, then SIGKILL the whole group (children that outlived it too)."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
