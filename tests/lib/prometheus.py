"""Real Prometheus and promtool for the tests (Debian's `prometheus` package, 2.42 on bookworm).

- ensure_prometheus(): installs the package with apt-get when `prometheus`/`promtool` are missing. The package
  also enables a system service on :9090; nothing here uses or touches it.
- PrometheusServer(scrape_configs): a private Prometheus (own config, own data folder, free 127.0.0.1 port),
  in its own process group, stopped by pid.
- rules_file(prometheus_rule, path): the `spec` of a PrometheusRule as a plain rules file for promtool.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml
from processes import LoggedServer, free_port, http_ok

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def ensure_prometheus():
    """Paths (prometheus, promtool); apt-get installs the Debian package when either is missing."""
    if not (os.access(PROMETHEUS, os.X_OK) and os.access(PROMTOOL, os.X_OK)):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        # policy-rc.d exit 101 keeps the package's service from starting during the install.
        policy = "/usr/sbin/policy-rc.d"
        own_policy = not os.path.exists(policy)
        if own_policy:
            with open(policy, "w", encoding="utf-8") as handle:
                handle.write("#!/bin/sh\nexit 101\n")
            os.chmod(policy, 0o755)
        try:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, timeout=600, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
                           env=env, check=True, timeout=900, capture_output=True)
        finally:
            if own_policy:
                os.remove(policy)
    return PROMETHEUS, PROMTOOL


def promtool(*args, timeout=120):
    """CompletedProcess of `promtool ARGS` (stdout and stderr together)."""
    tool = ensure_prometheus()[1]
    return subprocess.run([tool, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, check=False)


def rules_file(prometheus_rule, path):
    """Write the rule groups of a PrometheusRule object as a promtool/Prometheus rules file; returns path."""
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"groups": prometheus_rule["spec"]["groups"]}, handle, sort_keys=False)
    return path


class PrometheusServer(LoggedServer):
    """A private Prometheus scraping `scrape_configs` every `interval`, with optional rule files.

    with PrometheusServer([{"job_name": "vllm", "static_configs": [...]}]) as prom:
        prom.query('up')
    """

    label = "prometheus"
    ready_timeout = 60
    stop_grace = 20

    def __init__(self, scrape_configs, rule_files=(), interval="2s", port=None):
        self.port = port or free_port()
        self.workdir = tempfile.mkdtemp(prefix="llmserve-prometheus.")
        self.log_path = os.path.join(self.workdir, "prometheus.log")
        self.config = {"global": {"scrape_interval": interval, "evaluation_interval": interval},
                       "rule_files": [str(p) for p in rule_files], "scrape_configs": list(scrape_configs)}

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def command(self):
        binary = ensure_prometheus()[0]
        config = os.path.join(self.workdir, "prometheus.yml")
        with open(config, "w", encoding="utf-8") as handle:
            yaml.safe_dump(self.config, handle)
        return [binary, "--config.file=" + config, "--storage.tsdb.path=" + os.path.join(self.workdir, "data"),
                "--web.listen-address=127.0.0.1:%d" % self.port]

    def ready(self):
        return http_ok(self.url + "/-/ready")

    def stop(self, grace=None):
        super().stop(grace)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def api(self, path, **params):
        """JSON of GET /api/v1/<path>?params; an HTTP error's JSON body (status: error) is returned too."""
        url = "%s/api/v1/%s?%s" % (self.url, path, urllib.parse.urlencode(params))
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            return json.loads(err.read() or b'{"status": "error", "error": "HTTP %d"}' % err.code)

    def query(self, expr):
        """Instant query: the API's JSON (status, data.result or errorType/error)."""
        return self.api("query", query=expr)

    def wait_for(self, expr, timeout=60):
        """Wait (bounded) until the instant query returns at least one sample; returns the result list."""
        deadline = time.monotonic() + timeout
        result = []
        while time.monotonic() < deadline:
            answer = self.query(expr)
            result = answer.get("data", {}).get("result", [])
            if answer.get("status") == "success" and result:
                return result
            time.sleep(1)
        raise TimeoutError("no data for %s after %ss (last answer: %s)\n%s" % (expr, timeout, result, self.log_tail()))
