"""From a rendered bundle to what the Kubernetes API stand-in serves Traefik: the bundle's own objects, unchanged,
plus what a cluster would add around them — the TLS and basic-auth Secrets the ingress role applies (made by the
role's own tasks and filter), EndpointSlices that point a Service's pods at local processes, and a Node.
"""

from __future__ import annotations

import base64
import json
import pathlib
import textwrap
import time

from kube_standin import send_json
from playbook import run_playbook

# The catalog of the serving tests and benchmark: two one-replica models with different served names, and one
# model with two replicas behind its vllm-router. The vLLM processes serve a tiny random Llama under these names.
HOST = "llm.university.local"
SERVING_KEY = "sk-llmserve-serving-test-key-000000"
BASIC_USER = {"name": "alice", "password": "correct-horse-battery-staple"}
SERVING_MODELS = [
    {"name": "tiny-a", "model": "Qwen/Qwen2.5-0.5B-Instruct", "params_b": 0.5, "max_model_len": 512},
    {"name": "tiny-b", "model": "Qwen/Qwen2.5-0.5B-Instruct", "params_b": 0.5, "max_model_len": 512},
    {"name": "tiny-multi", "model": "Qwen/Qwen2.5-0.5B-Instruct", "params_b": 0.5, "max_model_len": 512, "replicas": 2},
]
# Each pod on its own loopback address (Traefik keeps one endpoint per address of a Service).
ADDRESSES = {"tiny-a": "127.0.0.2", "tiny-b": "127.0.0.3", "tiny-multi-0": "127.0.0.4", "tiny-multi-1": "127.0.0.5",
             "router": "127.0.0.6", "frontdoor": "127.0.0.7", "echo": "127.0.0.8", "frontdoor-1": "127.0.0.9",
             "router-1": "127.0.0.10"}
# Named keys of the serving tests, as llmserve_api_keys holds them (two people, one of them in a group).
SERVING_KEYS = [{"name": "serving-user", "key": SERVING_KEY, "groups": ["lab"]},
                {"name": "second-user", "key": "sk-llmserve-serving-test-key-111111", "groups": []},
                {"name": "third-user", "key": "sk-llmserve-serving-test-key-222222", "groups": ["lab"]}]

# What Traefik's kubernetescrd provider reads; the rest of the bundle (Deployments, NetworkPolicies, ...) is for k3s.
SERVED_KINDS = {"Service", "Secret", "ConfigMap", "IngressRoute", "Middleware", "TraefikService", "TLSOption",
                "TLSStore", "ServersTransport", "IngressRouteTCP", "IngressRouteUDP", "MiddlewareTCP",
                "ServersTransportTCP"}

_SECRETS_PLAY = textwrap.dedent("""\
    # The ingress role's own PKI tasks and htpasswd filter, run on the controller as site.yml runs them.
    - name: Secrets the ingress role applies
      hosts: localhost
      connection: local
      gather_facts: false
      tasks:
        - name: The plan every role reads (its defaults take shared values from it), as the cluster play makes it
          ansible.builtin.include_role:
            name: llmserve.k3s.plan
        - name: Self-signed CA and host certificate (roles/ingress/tasks/tls_selfsigned.yml)
          ansible.builtin.include_role:
            name: llmserve.k3s.ingress
            tasks_from: tls_selfsigned
        - name: Basic-auth users file, as the role puts it in the Secret
          ansible.builtin.copy:
            dest: "{{ ingress_tls_pki_dir }}/users"
            content: "{{ ingress_basic_auth_users | llmserve.k3s.htpasswd('') }}"
            mode: "0600"
          when: ingress_basic_auth_users | length > 0
    """)


def make_secrets(workdir, host, basic_auth_users=()):
    """Run the role's PKI tasks (and htpasswd filter) into workdir/pki; returns that folder."""
    workdir = pathlib.Path(workdir)
    play = workdir / "secrets.yml"
    play.write_text(_SECRETS_PLAY, encoding="utf-8")
    pki = workdir / "pki"
    result = run_playbook(play, "inventories/workstation", extra_vars={
        "ingress_tls_pki_dir": str(pki), "ingress_host": host, "ingress_basic_auth_users": list(basic_auth_users)},
        timeout=300)
    if result.returncode != 0:
        raise RuntimeError("the PKI play failed:\n" + result.stdout[-4000:])
    return pki


def _b64(path):
    return base64.b64encode(pathlib.Path(path).read_bytes()).decode()


def tls_secret(pki, host, name, namespace):
    """The Secret roles/ingress/tasks/secrets.yml makes in self-signed mode (data instead of stringData, as read back)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "llmserve", "app.kubernetes.io/managed-by": "llmserve.k3s"}},
            "data": {"tls.crt": _b64(pki / f"{host}.crt"), "tls.key": _b64(pki / f"{host}.key"),
                     "ca.crt": _b64(pki / "ca.crt")}}


def basic_auth_secret(pki, name, namespace):
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "llmserve", "app.kubernetes.io/managed-by": "llmserve.k3s"}},
            "data": {"users": _b64(pki / "users")}}


def endpoint_slice(service, backends):
    """An EndpointSlice of a rendered Service: each (port name, address, port) of `backends` as one ready endpoint.

    Traefik matches the slice's ports to the Service's by name, and keeps one endpoint per address."""
    meta = service["metadata"]
    by_port = {}
    for port_name, address, port in backends:
        by_port.setdefault((port_name, port), []).append(address)
    slices = []
    for index, ((port_name, port), addresses) in enumerate(sorted(by_port.items())):
        slices.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{meta['name']}-standin-{index}", "namespace": meta["namespace"],
                         "labels": {"kubernetes.io/service-name": meta["name"],
                                    "endpointslice.kubernetes.io/managed-by": "standin"}},
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True, "serving": True, "terminating": False}}
                          for a in addresses]})
    return slices


def role_secrets(bundle, pki):
    """The Secrets the ingress role applies beside the bundle besides TLS: the basic-auth users when a BasicAuth
    Middleware names them."""
    from redis_server import PASSWORD

    out = []
    for middleware in (o for o in bundle.values() if o.get("kind") == "Middleware"):
        basic = middleware["spec"].get("basicAuth")
        if basic:
            out.append(basic_auth_secret(pki, basic["secret"], middleware["metadata"]["namespace"]))
        redis = middleware["spec"].get("rateLimit", {}).get("redis", {})
        if redis.get("secret"):
            # Traefik's Redis credentials (the role's Secret llmserve-redis-traefik), for the test's redis-server.
            data = {"username": base64.b64encode(b"default").decode(), "password": base64.b64encode(PASSWORD.encode()).decode()}
            out.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
                        "metadata": {"name": redis["secret"], "namespace": middleware["metadata"]["namespace"]}})
    return out


def redis_dns(bundle, redis):
    """The Redis endpoints the rendered rate limit names (cluster DNS) -> the test's redis-server."""
    found = {}
    for middleware in find(bundle, "Middleware"):
        for endpoint in middleware["spec"].get("rateLimit", {}).get("redis", {}).get("endpoints", []):
            found[endpoint] = redis.address
    return found


NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "standin-node", "labels": {"kubernetes.io/hostname": "standin-node"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "conditions": [{"type": "Ready", "status": "True"}]}}


def bundle_objects(bundle):
    """The rendered objects Traefik reads, unchanged, from load_bundle()'s {path: object}."""
    return [obj for obj in bundle.values() if obj.get("kind") in SERVED_KINDS]


def find(bundle, kind, name=None):
    found = [o for o in bundle.values() if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]
    if not found:
        raise LookupError(f"no {kind} {name or ''} in the bundle: {sorted(bundle)}")
    return found


def service_port_name(service, port):
    for entry in service["spec"]["ports"]:
        if entry["port"] == port or entry.get("name") == port:
            return entry["name"]
    raise LookupError(f"Service {service['metadata']['name']} has no port {port}: {json.dumps(service['spec']['ports'])}")


class EchoBackend:
    """A zero-latency OpenAI-shaped backend (stand-in for vLLM where the proxy's own cost is measured, or where a
    test needs to see the headers that arrive): answers at once, echoing the model, path and request headers; a body
    with "stream": true gets `events` SSE events (default 3) `gap` seconds apart (default 0), then [DONE].
    `seen` lists (method, path) of every request but GET /health."""

    def __init__(self, model, host="127.0.0.1"):
        import http.server
        import threading

        backend = self
        self.model = model
        self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle + delayed ACK add ~40 ms to each answer.
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _answer(self, status, body):
                send_json(self, status, body)

            def do_GET(self):  # noqa: N802
                if self.path == "/health":
                    return self._answer(200, {})
                backend.seen.append(("GET", self.path))
                if self.path == "/v1/models":
                    return self._answer(200, {"object": "list", "data": [
                        {"id": backend.model, "object": "model", "owned_by": "vllm", "max_model_len": 256}]})
                return self._answer(404, {"detail": "Not Found"})

            def do_POST(self):  # noqa: N802
                backend.seen.append(("POST", self.path))
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                # A large body (a flood test's) is not parsed: the stand-in must not hold the test process's GIL for
                # seconds while the test measures the front door's health answers. Its model is its last field.
                body = json.loads(raw or b"{}") if length < 1048576 else {"model": raw.rsplit(b'"model": "', 1)[-1].split(b'"')[0].decode()}
                if body.get("stream"):
                    return self._stream(int(body.get("events", 3)), float(body.get("gap", 0)))
                return self._answer(200, {"id": "cmpl-echo", "object": "text_completion", "model": body.get("model"),
                                          "path": self.path, "headers": dict(self.headers.items()),
                                          "choices": [{"index": 0, "text": "ok", "finish_reason": "length"}],
                                          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

            def _stream(self, events, gap):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for index in range(events + 1):
                    if index:
                        time.sleep(gap)
                    event = {"id": "cmpl-echo", "object": "text_completion", "model": backend.model,
                             "choices": [{"index": 0, "text": " %d" % index, "finish_reason": None}]}
                    data = b"data: " + (json.dumps(event).encode() if index < events else b"[DONE]") + b"\n\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # a client closing its keep-alive connection
                pass

        self._server = Server((host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self):
        return self._server.server_address[:2]

    @property
    def url(self):
        return "http://%s:%d" % self.address

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        return False


def frontdoor_config(bundle, urls):
    """The front door's config: the rendered ConfigMap's config.json with each model's backend URL (a cluster DNS
    name) replaced by the local process that plays it: urls {model: url or (url, fallback url)}."""
    (config_map,) = find(bundle, "ConfigMap", "llmserve-frontdoor")
    config = json.loads(config_map["data"]["config.json"])
    missing = set(config["models"]) ^ set(urls)
    if missing:
        raise LookupError(f"the rendered front door and the test disagree on the models: {sorted(missing)}")
    for name, backend in config["models"].items():
        url, fallback = urls[name] if isinstance(urls[name], tuple) else (urls[name], None)
        backend["url"] = url
        if "fallback_url" in backend:
            backend["fallback_url"] = fallback or url
    return config


class ServingStack:
    """The Kubernetes API stand-in serving a rendered bundle plus `extra` objects, and real Traefik reading it.

    services: {Service name: [(address, port), ...]}, the local processes that play each Service's pods."""

    def __init__(self, bundle, pki, host, services, log_dir, extra=(), dns=None):
        (ingress_route,) = find(bundle, "IngressRoute", "llm-api")
        namespace = ingress_route["metadata"]["namespace"]
        secret_name = ingress_route["spec"]["tls"]["secretName"]
        objects = [resolve(o, dns or {}) for o in bundle_objects(bundle)]
        objects += [NODE, tls_secret(pki, host, secret_name, namespace), *role_secrets(bundle, pki), *extra]
        self.slices = {}
        for service in find(bundle, "Service"):
            backends = services.get(service["metadata"]["name"])
            if backends:
                self.slices[service["metadata"]["name"]] = slices = endpoint_slice(service, _by_port(service, backends))
                objects += slices
        self.objects = objects
        self.host, self.pki = host, pki
        self.helm_chart_config = resolve(find(bundle, "HelmChartConfig", "traefik")[0], dns or {})
        self.routes = len(ingress_route["spec"]["routes"])
        self.log_dir = log_dir
        self.api = self.traefik = None

    def __enter__(self):
        from kube_standin import KubeStandin
        from traefik import IngressClient, Traefik

        self.api = KubeStandin(self.objects).start()
        try:
            self.traefik = Traefik(self.api.url, self.helm_chart_config, self.log_dir).start()
            self.traefik.wait_router("llm-serving-llm-api", timeout=60, count=self.routes)
        except Exception:
            self.__exit__()
            raise
        self.client = IngressClient(self.traefik.websecure_port, self.host, self.pki / "ca.crt")
        return self

    def __exit__(self, *exc):
        if self.traefik:
            self.traefik.stop()
        if self.api:
            self.api.stop()
        return False

    def withdraw(self, service, address):
        """What Kubernetes does when a pod starts terminating: its endpoint leaves the Service's EndpointSlices."""
        for piece in self.slices[service]:
            kept = [e for e in piece["endpoints"] if address not in e["addresses"]]
            if len(kept) != len(piece["endpoints"]):
                piece["endpoints"] = kept
                self.api.upsert(piece)


def _by_port(service, backends):
    """[(port name, address, port)] from [(address, port)] (the Service's first port) or {port name: [(address, port)]}."""
    if isinstance(backends, dict):
        return [(name, address, port) for name, pairs in backends.items() for address, port in pairs]
    return [(service["spec"]["ports"][0]["name"], address, port) for address, port in backends]


def resolve(obj, dns):
    """The object with cluster DNS names in URLs it holds (a forwardAuth address) replaced by the local address that
    plays them: no cluster DNS runs here. {"name.ns.svc.cluster.local:8081": "127.0.0.7:41234"}; in Traefik's flags too
    (--tracing.otlp.grpc.endpoint=name:4317)."""
    if not dns:
        return obj
    text = json.dumps(obj)
    for name, local in dns.items():
        text = text.replace("//" + name + "/", "//" + local + "/")
        text = text.replace(json.dumps(name), json.dumps(local))  # an address on its own (Redis endpoints)
        text = text.replace("=" + name, "=" + local)  # a static flag's value
    return json.loads(text)


AUTH_MODES = {"api-key": {"llmserve_auth_mode": "api-key", "llmserve_api_keys": SERVING_KEYS},
              "basic": {"llmserve_auth_mode": "basic", "llmserve_basic_auth_users": [BASIC_USER]}}


def render_serving(dest, mode):
    """{path: object} of the serving catalog in an auth mode, through the real render playbook."""
    from k8s_schema import load_bundle
    from playbook import render

    result = render(dest, extra_vars={"llmserve_models": SERVING_MODELS, **AUTH_MODES[mode]})
    if result.returncode != 0:
        raise RuntimeError(f"render ({mode}) failed:\n{result.stdout[-4000:]}")
    return load_bundle(dest)


def frontdoor_for(bundle, urls, address, identities=None, port=None, log_dir=None, env=None, **overrides):
    """The real front door (tests/lib/frontdoor.FrontDoor) with the rendered config, listening on address (API, auth
    and admin ports), with the identities of the serving keys."""
    from frontdoor import FrontDoor, identities_file
    from processes import free_port
    from vllm_server import ensure_vllm_venv

    config = frontdoor_config(bundle, urls)
    config.update(overrides)
    config["listen"] = {"host": address, "port": port or free_port(address)}
    config["auth"] = {"host": address, "port": free_port(address)}
    config["admin"] = {"host": address, "port": free_port(address)}
    config.pop("identities_file", None)
    # The pinned vLLM image runs it (aiohttp comes with vLLM): here the vLLM CPU venv plays that image.
    return FrontDoor(config, python=ensure_vllm_venv(), log_dir=log_dir, env=env,
                     identities=identities if identities is not None else identities_file(SERVING_KEYS))


def frontdoor_dns(bundle, door):
    """The cluster DNS name of the front door's auth port (the forwardAuth address) -> where the test's door listens."""
    (middleware,) = find(bundle, "Middleware", "llm-gateway-auth")
    authority = middleware["spec"]["forwardAuth"]["address"].split("/")[2]
    return {authority: "%s:%d" % (door.config["auth"]["host"], door.config["auth"]["port"])}


def frontdoor_services(*doors):
    """The front door Service's endpoints ({port name: [(address, port)]}) for the stand-in."""
    return {"llmserve-frontdoor": {
        "http": [(d.config["listen"]["host"], d.config["listen"]["port"]) for d in doors],
        "auth": [(d.config["auth"]["host"], d.config["auth"]["port"]) for d in doors],
        "metrics": [(d.config["admin"]["host"], d.config["admin"]["port"]) for d in doors]}}


# What a front door logs when its client (Traefik) closes the connection before the answer ended.
CLIENT_LEFT = "the client closed the connection before the answer ended"


class Cuts:
    """What the serving stack's hops log about answers cut mid-way, from the moment this is made on.

    On this 2-core machine Traefik 3.7 itself now and then aborts a stream it is relaying (about 1 in 3,000 here): its
    access log has the request as status 200 with no status from the backend (OriginStatus 0), and the front door logs
    that its client left mid-answer. `aborted()` and `left()` read those lines, so a test can tell such a cut from one
    made by the front door, the router or vLLM (which log something else, or nothing, and Traefik not an abort)."""

    def __init__(self, serving):
        self.access_log = serving.traefik.access_log_path
        self.doors = [door.log for door in serving.frontdoors]
        self.access_from = _size(self.access_log)
        self.doors_from = [_size(log) for log in self.doors]

    def aborted(self, path="/v1/chat/completions"):
        """Traefik's access log entries, since then, of requests on `path` answered 200 with no status from behind."""
        return [e for e in map(json.loads, _read_from(self.access_log, self.access_from).splitlines())
                if e.get("RequestPath") == path and e.get("OriginStatus") == 0]

    def left(self):
        """How many answers, since then, the front doors saw their client leave before the end."""
        return sum(_read_from(log, start).count(CLIENT_LEFT) for log, start in zip(self.doors, self.doors_from))

    def traefik_cut(self, count, wait=3.0):
        """Whether `count` cuts a client saw are all Traefik's: as many front door "client left" lines and at least as
        many aborts in Traefik's access log (both are written a moment after the cut: waits up to `wait` s)."""
        deadline = time.monotonic() + wait
        while True:
            if self.left() == count <= len(self.aborted()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)


def _size(path):
    return path.stat().st_size if path.exists() else 0


def _read_from(path, start):
    if not path.exists():
        return ""
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read().decode(errors="replace")
