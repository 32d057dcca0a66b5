"""Run the real front door (roles/ingress/files/llmserve_frontdoor.py) as its own process, for tests and benchmarks.

FrontDoor(config, python=...) writes the JSON config, starts the script in its own process group on free 127.0.0.1
ports (unless the config names them), waits until /healthz answers (bounded) and stops it by pid.
`python` must have aiohttp: the repo .venv (pinned in requirements-dev.txt) or the vLLM CPU venv.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "roles" / "ingress" / "files" / "llmserve_frontdoor.py"


def free_port(host="127.0.0.1"):
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class FrontDoor(contextlib.AbstractContextManager):
    def __init__(self, config, python=sys.executable, ready_timeout_s=20):
        self.config = dict(config)
        self.config.setdefault("listen", {"host": "127.0.0.1", "port": free_port()})
        self.config.setdefault("admin", {"host": "127.0.0.1", "port": free_port()})
        self.config.setdefault("health_interval_s", 1)
        self.python, self.ready_timeout_s = python, ready_timeout_s
        self.proc = None
        self._dir = tempfile.TemporaryDirectory(prefix="frontdoor-")
        self.log = pathlib.Path(self._dir.name) / "frontdoor.log"

    @property
    def url(self):
        return "http://%s:%d" % (self.config["listen"]["host"], self.config["listen"]["port"])

    @property
    def admin_url(self):
        return "http://%s:%d" % (self.config["admin"]["host"], self.config["admin"]["port"])

    def __enter__(self):
        path = pathlib.Path(self._dir.name) / "config.json"
        path.write_text(json.dumps(self.config), encoding="utf-8")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([str(self.python), str(SCRIPT), str(path)], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("front door exited (%s):\n%s" % (self.proc.returncode, self.log.read_text()[-3000:]))
            try:
                with urllib.request.urlopen(self.admin_url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError("front door not ready in %ss:\n%s" % (self.ready_timeout_s, self.log.read_text()[-3000:]))

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._dir.cleanup()
        return False

    def metrics(self):
        with urllib.request.urlopen(self.admin_url + "/metrics", timeout=5) as resp:
            return resp.read().decode()
