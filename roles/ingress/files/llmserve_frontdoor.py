# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""llmserve front door: one OpenAI endpoint for every model.

Traefik (TLS, auth, per-client limits) sends every model path here; this routes, streams and refuses:

- POST /v1/<anything>       to the model named by the JSON body's "model" (catalog name or a LoRA adapter name),
                            or to default_model when the body names none (no default_model: 400);
- ANY  /models/<name>/v1/*  to that model, the /models/<name> prefix stripped;
- ANY  <ab path>/v1/*       to one of the A/B models, chosen by weight, the prefix stripped;
- GET  /v1/models           the union of every model's own /v1/models (entries as each backend reports them).

Bodies and responses pass through unchanged (never parsed again into JSON and written back), responses stream
chunk by chunk. Unknown model 404, missing model 400, body over the limit 413, missing or malformed bearer token
401 (api-key mode: the key itself is checked by vLLM, the header is forwarded), all in OpenAI's error format;
a path outside the API (/health, /metrics, /models/<name>/health) is a plain 404, as from Traefik.
Its own /healthz and Prometheus /metrics are served on a second port that the ingress does not route.

Runs from the pinned vLLM image (aiohttp is one of vLLM's dependencies): python3 llmserve_frontdoor.py CONFIG.json
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import signal
import sys
import time

from aiohttp import ClientSession, ClientTimeout, TCPConnector, client_exceptions, web
from multidict import CIMultiDict

LOG = logging.getLogger("llmserve-frontdoor")
BEARER = re.compile(r"^Bearer [!-~]+$")
# Headers of one hop (RFC 9110 7.6.1) and the ones aiohttp writes itself.
HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
       "transfer-encoding", "upgrade", "host", "content-length"}
# Client headers whose name aliases an identity header Traefik or an auth proxy sets (X_Forwarded_User, X.Forwarded.User
# for X-Forwarded-User): never forwarded. Traefik drops them itself only from 3.7.12 on (aliasHeadersStrategy).
ALIASED = ("x-forwarded-", "x-real-ip", "x-auth-request-")


def aliases_identity(name):
    """True for a header name with '_' or '.' that reads as one of the identity headers once those become '-'."""
    return ("_" in name or "." in name) and re.sub(r"[_.]", "-", name.lower()).startswith(ALIASED)


DEFAULTS = {"listen": {"host": "0.0.0.0", "port": 8080}, "admin": {"host": "0.0.0.0", "port": 9090},
            "max_request_body_bytes": 10485760, "require_bearer": False, "connect_timeout_s": 5,
            "read_timeout_s": 600, "health_interval_s": 10, "health_path": "/health", "ab_tests": {}, "default_model": ""}


def load_config(path):
    """The JSON config with defaults filled in; a clear SystemExit naming the field when it is wrong."""
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)
    config = dict(DEFAULTS, **raw)
    models = config.get("models")
    if not isinstance(models, dict) or not models:
        raise SystemExit("%s: models must map each model name to {url, served_names?}" % path)
    for name, backend in models.items():
        if not isinstance(backend, dict) or not str(backend.get("url", "")).startswith(("http://", "https://")):
            raise SystemExit("%s: models.%s.url must be an http(s) base URL, e.g. http://vllm-x:8000" % (path, name))
        backend["url"] = backend["url"].rstrip("/")
        backend.setdefault("served_names", [])
    if config["default_model"] and config["default_model"] not in models:
        raise SystemExit("%s: default_model %r is not one of the models" % (path, config["default_model"]))
    for prefix, choices in config["ab_tests"].items():
        if not re.match(r"^/[a-z0-9][-a-z0-9]*$", prefix) or not choices or any(c.get("model") not in models for c in choices):
            raise SystemExit("%s: ab_tests.%s must be a path such as /ab with [{model, weight}] of known models" % (path, prefix))
    return config


def error(status, message, kind="invalid_request_error", code=None, param=None):
    """A response in OpenAI's error format."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


class Metrics:
    """Counters and gauges in Prometheus text format (no client library needed in the image)."""

    def __init__(self, models):
        self.requests = {}
        self.up = {m: 0 for m in models}
        self.in_flight = {m: 0 for m in models}
        self.seconds = {}

    def count(self, model, code, seconds):
        key = (model, str(code))
        self.requests[key] = self.requests.get(key, 0) + 1
        total, n = self.seconds.get(model, (0.0, 0))
        self.seconds[model] = (total + seconds, n + 1)

    def render(self):
        out = ["# HELP llmserve_frontdoor_requests_total Requests by routed model ('' when none) and status code.",
               "# TYPE llmserve_frontdoor_requests_total counter"]
        out += ['llmserve_frontdoor_requests_total{model="%s",code="%s"} %d' % (m, c, v) for (m, c), v in sorted(self.requests.items())]
        out += ["# HELP llmserve_frontdoor_request_duration_seconds Time until the last byte of the response.",
                "# TYPE llmserve_frontdoor_request_duration_seconds summary"]
        for m, (total, n) in sorted(self.seconds.items()):
            out += ['llmserve_frontdoor_request_duration_seconds_sum{model="%s"} %.6f' % (m, total),
                    'llmserve_frontdoor_request_duration_seconds_count{model="%s"} %d' % (m, n)]
        out += ["# HELP llmserve_frontdoor_backend_up 1 when the model's backend answered its health check.",
                "# TYPE llmserve_frontdoor_backend_up gauge"]
        out += ['llmserve_frontdoor_backend_up{model="%s"} %d' % (m, v) for m, v in sorted(self.up.items())]
        out += ["# HELP llmserve_frontdoor_in_flight Requests being proxied now.", "# TYPE llmserve_frontdoor_in_flight gauge"]
        out += ['llmserve_frontdoor_in_flight{model="%s"} %d' % (m, v) for m, v in sorted(self.in_flight.items())]
        return "\n".join(out) + "\n"


class FrontDoor:
    def __init__(self, config):
        self.config = config
        self.models = config["models"]
        # Body "model" -> catalog model: the catalog names and every served name (LoRA adapters) of a backend.
        self.names = {}
        for model, backend in self.models.items():
            for served in [model] + list(backend["served_names"]):
                self.names.setdefault(served, model)
        self.metrics = Metrics(self.models)
        self.session = None

    # -- plumbing ---------------------------------------------------------------------------------------------
    async def lifetime(self, _app=None):
        """aiohttp cleanup context: the backend session and the health loop live as long as the app."""
        timeout = ClientTimeout(total=None, sock_connect=self.config["connect_timeout_s"], sock_read=self.config["read_timeout_s"])
        # auto_decompress off: compressed answers pass through as they came.
        self.session = ClientSession(timeout=timeout, auto_decompress=False, connector=TCPConnector(limit=0),
                                     skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))

        async def loop():
            while True:
                await self.check_health()
                await asyncio.sleep(self.config["health_interval_s"])
        task = asyncio.create_task(loop())
        yield
        task.cancel()
        await self.session.close()

    def known(self):
        return sorted(self.names)

    async def check_health(self):
        async def one(model, backend):
            try:
                async with self.session.get(backend["url"] + self.config["health_path"], timeout=ClientTimeout(total=5)) as resp:
                    self.metrics.up[model] = int(resp.status == 200)
            except (client_exceptions.ClientError, asyncio.TimeoutError):
                self.metrics.up[model] = 0
        await asyncio.gather(*(one(m, b) for m, b in self.models.items()))

    # -- refusals ---------------------------------------------------------------------------------------------
    def unauthorized(self, request):
        if not self.config["require_bearer"] or BEARER.match(request.headers.get("Authorization", "")):
            return None
        return error(401, "Missing or malformed API key: send the header 'Authorization: Bearer <key>'.", code="invalid_api_key")

    async def read_body(self, request):
        """The raw body, or an error response when it is larger than the limit."""
        limit = self.config["max_request_body_bytes"]
        if request.content_length is not None and request.content_length > limit:
            return None, error(413, "Request body of %d bytes is larger than the limit of %d bytes." % (request.content_length, limit),
                               code="request_too_large")
        chunks, size = [], 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                return None, error(413, "Request body is larger than the limit of %d bytes." % limit, code="request_too_large")
            chunks.append(chunk)
        return b"".join(chunks), None

    # -- handlers ---------------------------------------------------------------------------------------------
    def outside(self, path):
        """Paths that are not the API (vLLM's /health, /metrics, admin): a proxy's plain 404, as Traefik answers them."""
        if path.startswith("/v1/") or any(path.startswith(p + "/v1/") for p in self.config["ab_tests"]):
            return None
        if path.startswith("/models/") and path[len("/models/"):].partition("/")[2].startswith("v1/"):
            return None
        return web.Response(status=404, text="404 page not found\n")

    async def handle(self, request):
        started = time.monotonic()
        model, response = "", None
        try:
            response = self.outside(request.path) or self.unauthorized(request)
            if response is None:
                model, response = await self.dispatch(request)
            return response
        finally:
            status = response.status if response is not None else 499
            self.metrics.count(model, status, time.monotonic() - started)

    async def dispatch(self, request):
        path = request.match_info["tail"]
        path = "/" + path
        if path.startswith("/models/"):
            name, dummy, rest = path[len("/models/"):].partition("/")
            if name not in self.models:
                return "", error(404, "The model `%s` does not exist. Models: %s." % (name, ", ".join(sorted(self.models))), code="model_not_found")
            if not rest.startswith("v1/"):
                return "", error(404, "Not found: only /models/<name>/v1/... is served.", code="not_found")
            body, refused = await self.read_body(request)
            return name, refused or await self.proxy(request, name, "/" + rest, body)
        for prefix, choices in self.config["ab_tests"].items():
            if path.startswith(prefix + "/v1/"):
                name = random.choices([c["model"] for c in choices], [c["weight"] for c in choices])[0]
                body, refused = await self.read_body(request)
                return name, refused or await self.proxy(request, name, path[len(prefix):], body)
        if not path.startswith("/v1/"):
            return "", error(404, "Not found: the API is under /v1/.", code="not_found")
        if path == "/v1/models" and request.method == "GET":
            return "", await self.list_models(request)
        if request.method != "POST":
            return "", error(405, "Use POST for %s." % path, code="method_not_allowed")
        body, refused = await self.read_body(request)
        if refused:
            return "", refused
        try:
            wanted = json.loads(body).get("model")
        except (ValueError, AttributeError, UnicodeDecodeError):
            return "", error(400, "The request body is not a JSON object.", code="invalid_json")
        if (wanted is None or wanted == "") and self.config["default_model"]:
            wanted = self.config["default_model"]  # vLLM serves a request without "model" with its own model
        if wanted is None or wanted == "":
            return "", error(400, "Missing 'model': name one of %s." % ", ".join(self.known()), code="missing_model", param="model")
        if not isinstance(wanted, str) or wanted not in self.names:
            return "", error(404, "The model `%s` does not exist. Models: %s." % (wanted, ", ".join(self.known())),
                             code="model_not_found", param="model")
        name = self.names[wanted]
        return name, await self.proxy(request, name, path, body)

    def forward_headers(self, request, name=None):
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP and not aliases_identity(k)}
        peer = request.remote or ""
        prior = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = prior + ", " + peer if prior else peer
        if name and self.models[name].get("client_affinity") and "x-session-id" not in {k.lower() for k in headers}:
            # The model's vllm-router (consistent_hash) keeps one session key on one replica: the client's address
            # (Traefik's X-Real-Ip) unless the client names its own session.
            client = request.headers.get("X-Real-Ip") or (prior or peer).split(",")[0].strip()
            headers["X-Session-ID"] = client
        return headers

    async def proxy(self, request, name, path, body):
        url = self.models[name]["url"] + path + ("?" + request.query_string if request.query_string else "")
        self.metrics.in_flight[name] += 1
        response = None
        try:
            async with self.session.request(request.method, url, headers=self.forward_headers(request, name), data=body) as upstream:
                headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP]
                if upstream.content_length is not None and upstream.content_length <= self.config["max_request_body_bytes"]:
                    # A whole answer of known length (not a stream): read it, then send status, headers and body at once.
                    raw = await upstream.read()
                    response = web.Response(status=upstream.status, reason=upstream.reason, body=raw, headers=CIMultiDict(headers))
                    return response
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in headers:
                    response.headers.add(key, value)
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                # Each chunk is written as it arrives (SSE: one event at a time), never collected.
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (client_exceptions.ClientError, asyncio.TimeoutError) as exc:
            LOG.warning("model %s: backend %s failed: %s", name, url, exc)
            if response is not None:
                raise  # the answer has begun: cutting the connection is the only way left to say it broke
            return error(502, "The backend of model `%s` is not reachable." % name, kind="server_error", code="backend_unavailable")
        finally:
            self.metrics.in_flight[name] -= 1

    async def list_models(self, request):
        """The union of every backend's /v1/models, asked with the client's own headers (vLLM checks the key)."""
        headers = self.forward_headers(request)

        async def one(backend):
            try:
                async with self.session.get(backend["url"] + "/v1/models", headers=headers) as resp:
                    return resp.status, await resp.read()
            except (client_exceptions.ClientError, asyncio.TimeoutError) as exc:
                return None, str(exc).encode()
        answers = await asyncio.gather(*(one(b) for b in self.models.values()))
        data, seen = [], set()
        for (status, raw), name in zip(answers, self.models):
            if status in (401, 403):
                return web.Response(status=status, body=raw, content_type="application/json")
            if status != 200:
                LOG.warning("model %s: /v1/models answered %s", name, status)
                continue
            for entry in json.loads(raw).get("data", []):
                if entry.get("id") not in seen:
                    seen.add(entry.get("id"))
                    data.append(entry)
        if not data and any(status != 200 for status, dummy in answers):
            return error(503, "No model backend answered.", kind="server_error", code="backend_unavailable")
        return web.json_response({"object": "list", "data": data})

    async def healthz(self, _request):
        return web.json_response({"status": "ok", "backends": self.metrics.up})

    async def metrics_page(self, _request):
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8")


def apps(config):
    """The API app and the admin app (healthz, metrics), sharing one FrontDoor."""
    door = FrontDoor(config)
    # The body limit is enforced by read_body (OpenAI-style 413); aiohttp's own limit stays out of the way.
    api = web.Application(client_max_size=config["max_request_body_bytes"] + 1)
    api.cleanup_ctx.append(door.lifetime)
    api.router.add_route("*", "/{tail:.*}", door.handle)
    admin = web.Application()
    admin.router.add_get("/healthz", door.healthz)
    admin.router.add_get("/metrics", door.metrics_page)
    return door, api, admin


async def serve(config):
    _door, api, admin = apps(config)
    runners = []
    for app, where in ((api, config["listen"]), (admin, config["admin"])):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, where["host"], int(where["port"])).start()
        runners.append(runner)
    LOG.info("listening on %s:%s (admin %s:%s), models %s", config["listen"]["host"], config["listen"]["port"],
             config["admin"]["host"], config["admin"]["port"], ", ".join(sorted(config["models"])))
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    await stopping.wait()
    # SIGTERM (pod deletion): stop accepting, let answers in progress finish within the grace period.
    for runner in reversed(runners):
        await runner.cleanup()


def main(argv):
    logging.basicConfig(level=os.environ.get("LLMSERVE_FRONTDOOR_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")
    if len(argv) != 2:
        raise SystemExit("usage: %s CONFIG.json" % argv[0])
    config = load_config(argv[1])
    asyncio.run(serve(config))


if __name__ == "__main__":
    main(sys.argv)
