"""Starting the servers the tests run (each in its own process group, its output in a log file) and stopping them by pid."""

from __future__ import annotations

import contextlib
import os
import pathlib
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


def start_logged(cmd, log_path, env=None):
    """Popen of cmd in a new session, stdout and stderr into log_path (its folder made), no stdin."""
    log_path = pathlib.Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)


def log_tail(log_path, lines=40):
    """The last lines of a server's log, for an error message."""
    try:
        return "\n".join(pathlib.Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LoggedServer:
    """A server process: command() started in its own session with its output in log_path, stopped by pid; a
    context manager (started on enter, stopped on exit)."""

    proc = None
    log_path = None

    def command(self):
        raise NotImplementedError

    def start(self):
        self.proc = start_logged(self.command(), self.log_path)
        return self

    def log_tail(self, lines=40):
        return log_tail(self.log_path, lines)

    def stop(self):
        stop_group(self.proc)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
