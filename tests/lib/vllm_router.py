"""The real vLLM router (PyPI vllm-router, the Rust binary the image vllm/vllm-router ships) and vLLM on a chosen
loopback address, for the serving tests and benchmark.

The router runs in regular mode with --worker-urls: its Kubernetes service discovery (--service-discovery with the
model's pod labels, as the bundle runs it) needs an API server with pods and cannot run here.

    with VllmRouter([w1.url, w2.url], policy="cache_aware", host="127.0.0.4") as router:
        router.wait_ready(60)
        router.url -> "http://127.0.0.4:PORT"
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

from vllm_server import CACHE, VllmServer
from processes import LoggedServer, free_port, http_status

ROUTER_VERSION = "0.1.17"  # pinned in requirements-dev.txt; the bundle's image tag vllm/vllm-router:v0.1.17 matches it


def router_binary():
    path = pathlib.Path(sys.executable).parent / "vllm-router"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: pip install vllm-router=={ROUTER_VERSION} (make bootstrap-dev)")
    return path


class VllmAt(VllmServer):
    """VllmServer listening on another loopback address (127.0.0.2, .3 ...): Traefik keeps one endpoint per
    address of a Service, so replicas need distinct addresses, as pods have."""

    def __init__(self, name, host, **kwargs):
        self.host = host
        kwargs.setdefault("port", free_port(host))
        super().__init__(name, **kwargs)

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    @property
    def address(self):
        return self.host, self.port

    def command(self):
        return super().command() + ["--host", self.host]  # the last --host wins

    def metric(self, name):
        """Sum of one counter over its series in the server's /metrics (e.g. vllm:prefix_cache_hits_total)."""
        status, body = http_status(self.url + "/metrics")
        if status != 200:
            raise RuntimeError(f"{self.url}/metrics answered {status}")
        return metric_sum(body.decode(), name)


def metric_sum(text, name):
    total = 0.0
    pattern = re.compile(r"^" + re.escape(name) + r"(\{[^}]*\})?\s+(\S+)$")
    for line in text.splitlines():
        found = pattern.match(line)
        if found:
            total += float(found.group(2))
    return total


class VllmRouter(LoggedServer):
    """vllm-router in regular mode over fixed worker URLs, on a loopback address, in its own process group."""

    label = "vllm-router"

    def __init__(self, worker_urls, policy="cache_aware", host="127.0.0.1", extra_args=(), log_dir=None):
        self.worker_urls = list(worker_urls)
        self.policy = policy
        self.host = host
        self.port = free_port(host)
        self.metrics_port = free_port(host)
        self.extra_args = list(extra_args)
        self.log_path = pathlib.Path(log_dir or CACHE / "logs") / f"vllm-router-{policy}-{self.port}.log"

    # Rendered arguments that only make sense in the cluster (where to listen, Kubernetes service discovery).
    _CLUSTER_ONLY = {"--host": 1, "--port": 1, "--prometheus-host": 1, "--prometheus-port": 1, "--service-discovery": 0,
                     "--selector": None, "--service-discovery-port": 1, "--service-discovery-namespace": 1}

    @classmethod
    def from_deployment(cls, deployment, worker_urls, host, **kwargs):
        """A router with the rendered Deployment's arguments (policy and the rest), less the cluster-only ones,
        over fixed worker URLs."""
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        args, kept, i = list(container.get("args") or []), [], 0
        while i < len(args):
            width = cls._CLUSTER_ONLY.get(args[i], "keep")
            if width == "keep":
                kept.append(args[i])
                i += 1
                continue
            i += 1
            if width is None:  # a list of values: up to the next flag
                while i < len(args) and not args[i].startswith("--"):
                    i += 1
            else:
                i += width
        policy = kept[kept.index("--policy") + 1] if "--policy" in kept else "cache_aware"
        if "--policy" in kept:
            del kept[kept.index("--policy"):kept.index("--policy") + 2]
        return cls(worker_urls, policy=policy, host=host, extra_args=kept, **kwargs)

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def command(self):
        return [str(router_binary()), "--host", self.host, "--port", str(self.port),
                "--worker-urls", *self.worker_urls, "--policy", self.policy,
                "--prometheus-host", self.host, "--prometheus-port", str(self.metrics_port), *self.extra_args]

    def wait_ready(self, timeout=90, headers=None):
        """Until the router answers /v1/models from a worker (it waits for its workers' /health at start)."""
        def models():
            status, body = http_status(self.url + "/v1/models", headers=headers)
            return status == 200 and json.loads(body).get("data")

        self.wait_until(models, timeout, 0.5)
        return self

    def metrics(self):
        return http_status(f"http://{self.host}:{self.metrics_port}/metrics")[1].decode()


class VllmGroup:
    """Several VllmAt started together (they load in parallel), all ready or all stopped: {key: (served name, host)}."""

    def __init__(self, specs, ready_timeout=600, **kwargs):
        self.servers = {key: VllmAt(name, host, **kwargs) for key, (name, host) in specs.items()}
        self.ready_timeout = ready_timeout

    def __enter__(self):
        try:
            for server in self.servers.values():
                server.start()
            for server in self.servers.values():
                server.wait_ready(self.ready_timeout)
        except BaseException:
            self.__exit__()
            raise
        return self.servers

    def __exit__(self, *exc):
        for server in self.servers.values():
            server.stop()
        return False
