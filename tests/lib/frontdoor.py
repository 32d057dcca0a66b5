"""Run the real front door (roles/ingress/files/llmserve_frontdoor.py) as its own process, for tests and benchmarks.

FrontDoor(config, python=..., identities=..., env=...) writes the JSON config and the identities file (API keys as
their SHA-256, as the ingress role's Secret holds them), starts the script in its own process group on free
127.0.0.1 ports (unless the config names them) with the cluster's internal and signing keys in its environment, waits
until /healthz answers (bounded) and stops it by pid (terminate() sends SIGTERM alone, for drain tests).
`python` must have aiohttp: the repo .venv (pinned in requirements-dev.txt) or the vLLM CPU venv.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pathlib
import signal
import sys
import tempfile
import urllib.request

from processes import LoggedServer, free_port, http_ok

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "roles" / "ingress" / "files" / "llmserve_frontdoor.py"
# The cluster's internal key (what vLLM trusts) and identity signing key, as the llmserve-internal Secret gives them.
INTERNAL_KEY = "internal-0123456789abcdef0123456789abcdef"
SIGNING_KEY = "signing-0123456789abcdef0123456789abcdef"


def identities_file(keys=(), users=None):
    """The identities.json document of the llmserve-gateway-identities Secret: [{name, key, groups}] -> hashes."""
    return {"keys": [{"name": k["name"], "groups": list(k.get("groups", [])),
                      "sha256": hashlib.sha256(k["key"].encode()).hexdigest()} for k in keys],
            "users": dict(users or {})}


def signed(user, groups="", key=SIGNING_KEY):
    """The identity headers the gateway's /auth hands Traefik (and Traefik the API port)."""
    signature = hmac.new(key.encode(), ("%s\n%s" % (user, groups)).encode(), hashlib.sha256).hexdigest()
    return {"X-Llmserve-User": user, "X-Llmserve-Groups": groups, "X-Llmserve-Signature": signature}


class FrontDoor(LoggedServer):
    label = "front door"

    def __init__(self, config, python=sys.executable, ready_timeout_s=20, identities=None, env=None, log_dir=None):
        self.config = dict(config)
        host = self.config.get("listen", {}).get("host", "127.0.0.1")
        self.config.setdefault("listen", {"host": host, "port": free_port(host)})
        self.config.setdefault("auth", {"host": host, "port": free_port(host)})
        self.config.setdefault("admin", {"host": host, "port": free_port(host)})
        self.config.setdefault("health_interval_s", 1)
        self.python, self.ready_timeout_s = python, ready_timeout_s
        self._dir = tempfile.TemporaryDirectory(prefix="frontdoor-")
        self.identities = identities if identities is not None else identities_file()
        self.config.setdefault("identities_file", str(pathlib.Path(self._dir.name) / "identities.json"))
        self.env = dict(os.environ, LLMSERVE_INTERNAL_KEY=INTERNAL_KEY, LLMSERVE_SIGNING_KEY=SIGNING_KEY, **(env or {}))
        # The log stays in log_dir (a test's output folder) when given, so that every hop's log can be read after.
        self.log = pathlib.Path(log_dir or self._dir.name) / ("frontdoor-%d.log" % self.config["listen"]["port"])
        self.log_path = self.log

    @property
    def url(self):
        return "http://%s:%d" % (self.config["listen"]["host"], self.config["listen"]["port"])

    @property
    def auth_url(self):
        return "http://%s:%d" % (self.config["auth"]["host"], self.config["auth"]["port"])

    @property
    def admin_url(self):
        return "http://%s:%d" % (self.config["admin"]["host"], self.config["admin"]["port"])

    def command(self):
        path = pathlib.Path(self._dir.name) / "config.json"
        path.write_text(json.dumps(self.config), encoding="utf-8")
        pathlib.Path(self.config["identities_file"]).write_text(json.dumps(self.identities), encoding="utf-8")
        return [self.python, SCRIPT, path]

    def environment(self):
        return self.env

    def ready(self):
        return http_ok(self.admin_url + "/healthz")

    def start(self, timeout=None):
        super().start(timeout or self.ready_timeout_s)
        return self

    def terminate(self):
        """SIGTERM alone, as the kubelet sends it after the preStop pause; the process drains and exits."""
        os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, grace=None):
        super().stop(grace)
        self._dir.cleanup()

    def metrics(self):
        with urllib.request.urlopen(self.admin_url + "/metrics", timeout=5) as resp:
            return resp.read().decode()
