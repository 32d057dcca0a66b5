"""tests/lib/processes.py: the one way the test library starts, waits for and stops its server processes."""

from __future__ import annotations

import os
import sys
import time

import pytest

from processes import Process, free_port, port_open

# An HTTP server with a child that ignores SIGTERM, so that only the group's SIGKILL ends the child.
CHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
SERVER = """
import http.server, subprocess, sys
print("child", subprocess.Popen([sys.executable, "-c", sys.argv[2]]).pid, flush=True)
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)
server.serve_forever()
"""


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_ready_on_a_url_then_the_whole_group_is_stopped(tmp_path):
    port = free_port()
    assert not port_open(port)
    with Process([sys.executable, "-c", SERVER, str(port), CHILD], tmp_path / "logs" / "server.log",
                 ready_url="http://127.0.0.1:%d/" % port, ready_timeout=30) as server:
        assert port_open(port)
        deadline = time.monotonic() + 10
        while "child" not in server.log_tail() and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(server.log_tail().split()[1])
        assert server.children() == [child] and _alive(child)
    assert server.proc.returncode is not None and not port_open(port)
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def test_a_server_that_exits_raises_with_its_log_tail(tmp_path):
    command = [sys.executable, "-c", "import sys; print('bad flag --nope'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"(?s)the tool exited with 3.*bad flag --nope"):
        Process(command, tmp_path / "tool.log", ready_port=free_port(), ready_timeout=30, label="the tool").start()


def test_a_server_that_never_gets_ready_is_stopped_and_named(tmp_path):
    command = [sys.executable, "-c", "import time; print('still loading', flush=True); time.sleep(600)"]
    server = Process(command, tmp_path / "slow.log", ready_port=free_port(), ready_timeout=1, label="the slow one")
    with pytest.raises(TimeoutError, match=r"(?s)the slow one not ready after 1s.*still loading"):
        server.start()
    assert server.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(server.proc.pid, 0)
