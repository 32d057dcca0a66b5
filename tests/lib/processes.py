"""The one way the tests start and stop the servers they run as processes.

- free_port(host): a port nothing listens on (bound to port 0, then released).
- LoggedServer: a server process (command(), environment()) started in its own session with its output in a log
  file, ready once ready() holds (wait_ready; start() waits when ready_timeout is set), stopped by pid with SIGTERM
  and SIGKILL for the whole group after a grace period; a context manager. A server that exits or does not become
  ready in time raises with the tail of its log.
- wait_for(check, timeout, ...): the bounded wait behind it, for waits of other conditions on the same process.
- http_ok(url), port_open(port, host): the two readiness checks most servers use.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request


def free_port(host="127.0.0.1"):
    """A TCP port on host that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    """True when host:port accepts a TCP connection."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def http_status(url, timeout=5, headers=None):
    """(status, body) of GET url; (None, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (OSError, ValueError):
        return None, b""


def http_ok(url, timeout=2):
    """True when GET url answers 200."""
    return http_status(url, timeout)[0] == 200


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


def start_logged(cmd, log_path, env=None, cwd=None):
    """Popen of cmd in a new session, stdout and stderr into log_path (its folder made), no stdin."""
    log_path = pathlib.Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen([str(part) for part in cmd], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)


def log_tail(log_path, lines=40):
    """The last lines of a server's log, for an error message."""
    try:
        return "\n".join(pathlib.Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except (OSError, TypeError):
        return "(no log)"


def wait_for(check, timeout, proc=None, log_path=None, what="the server", interval=0.2, lines=40):
    """check()'s first true value, tried until timeout seconds have passed (OSError and ValueError count as not yet).
    RuntimeError when proc exits first, TimeoutError at the deadline; both carry the tail of log_path."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; log {log_path}:\n{log_tail(log_path, lines)}")
        value = None
        with contextlib.suppress(OSError, ValueError):
            value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s; log {log_path}:\n{log_tail(log_path, lines)}")
        time.sleep(interval)


def children(pid):
    """Process ids whose parent is pid (zombies left out)."""
    found = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


class LoggedServer:
    """A server process: command() (with environment(), None: this process's) started in its own session with its
    output in log_path, stopped by pid; a context manager (started on enter, stopped on exit).

    ready() is its readiness check; start() waits for it (stopping the server and raising with the log tail when
    it does not hold in time) when ready_timeout is set, otherwise the caller waits (wait_ready)."""

    proc = None
    log_path = None
    label = "the server"
    ready_timeout = None
    stop_grace = 10
    tail_lines = 40

    def command(self):
        raise NotImplementedError

    def environment(self):
        return None

    def ready(self):
        return True

    def start(self, timeout=None):
        self.proc = start_logged(self.command(), self.log_path, env=self.environment())
        timeout = timeout or self.ready_timeout
        if timeout:
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.stop()
                raise
        return self

    def wait_ready(self, timeout=60):
        self.wait_until(self.ready, timeout)
        return self

    def wait_until(self, check, timeout, interval=0.2):
        """check()'s first true value while the server runs (see wait_for)."""
        return wait_for(check, timeout, self.proc, self.log_path, self.label, interval, self.tail_lines)

    def log_tail(self, lines=None):
        return log_tail(self.log_path, lines or self.tail_lines)

    def children(self):
        """Process ids whose parent is the server (workers, vLLM's engine core)."""
        return children(self.proc.pid) if self.proc else []

    def stop(self, grace=None):
        stop_group(self.proc, self.stop_grace if grace is None else grace)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


class Process(LoggedServer):
    """A LoggedServer from arguments: cmd with env (None: this process's) and its output in log_path, ready once
    ready_url answers 200 or ready_port (on host) accepts connections; start() waits ready_timeout seconds for it.

        with Process([binary, "--port", str(port)], log_dir / "x.log", ready_port=port, ready_timeout=20) as proc:
            ...
    """

    def __init__(self, cmd, log_path, env=None, ready_url=None, ready_port=None, host="127.0.0.1", ready_timeout=60,
                 label="the server"):
        self.cmd, self.env, self.log_path = list(cmd), env, pathlib.Path(log_path)
        self.ready_url, self.ready_port, self.host = ready_url, ready_port, host
        self.ready_timeout, self.label = ready_timeout, label

    def command(self):
        return self.cmd

    def environment(self):
        return self.env

    def ready(self):
        if self.ready_url and not http_ok(self.ready_url):
            return False
        return not self.ready_port or port_open(self.ready_port, self.host)
