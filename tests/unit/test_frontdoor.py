"""The front door (the gateway), run for real (its own process) in front of stand-in OpenAI backends (aiohttp on
127.0.0.1).

The backends record what reached them (path, headers, raw body) and answer with fixed raw bytes, so the tests see
routing, byte-for-byte pass-through and chunk-by-chunk streaming from both sides, and that a refused request never
arrived. The front door's /auth is asked as Traefik's forwardAuth asks it; its API port gets the identity headers
Traefik copies from that answer. Attack requests go out through http.client with the raw target, never normalised.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

from frontdoor import INTERNAL_KEY, FrontDoor, identities_file, signed  # noqa: E402
from processes import free_port  # noqa: E402

KEY = "sk-test-0123456789abcdef"
OTHER_KEY = "sk-test-bob-0123456789abcdef"
KEYS = [{"name": "alice", "key": KEY, "groups": ["physics", "staff"]}, {"name": "bob", "key": OTHER_KEY, "groups": []}]
# What the API port gets from Traefik once /auth accepted alice's key.
AUTH = signed("alice", "physics,staff")
LIMIT = 4096
# Deliberately not what json.dumps would write: spacing, key order, escapes, a vLLM-only field.
RAW_BODY = ('{ "priority":3,  "model" : "%s","messages":[{"role":"user","content":"caf\\u00e9 \u00e9"}],'
            '"guided_json":{"type":"object"},"chat_template_kwargs":{"enable_thinking":false} }')
RAW_ANSWER = b'{"id": "cmpl-1",  "object":"text_completion", "choices":[{"index":0,"text":" x"}], "note":"caf\\u00e9"}\n'
STREAM_EVENTS, STREAM_GAP_S = 5, 0.2


class Backend:
    """One stand-in model server: /health, /v1/models (checks the key like vLLM --api-key), echo and SSE."""

    def __init__(self, name, models_entry_extra=None):
        self.name, self.seen = name, []
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.entry = dict({"id": name, "object": "model", "created": 1, "owned_by": "vllm", "root": "/models/" + name,
                           "parent": None, "max_model_len": 256}, **(models_entry_extra or {}))

    async def health(self, _request):
        return web.Response(text="ok")

    async def models(self, request):
        if request.headers.get("Authorization") != "Bearer " + INTERNAL_KEY:
            return web.json_response({"error": "Unauthorized"}, status=401)
        return web.json_response({"object": "list", "data": [self.entry]})

    async def any(self, request):
        body = await request.read()
        self.seen.append({"method": request.method, "path": request.path_qs, "headers": dict(request.headers), "body": body})
        if b'"stream": true' in body or b'"stream":true' in body:
            events = int(re.search(rb'"events": (\d+)', body).group(1)) if b'"events": ' in body else STREAM_EVENTS
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(events):
                await resp.write(b'data: {"model": "%s", "i": %d}\n\n' % (self.name.encode(), i))
                await asyncio.sleep(STREAM_GAP_S)
            await resp.write(b"data: [DONE]\n\n")
            return resp
        return web.Response(body=RAW_ANSWER, content_type="application/json",
                            headers={"X-Backend": self.name, "X-Body-Sha256": hashlib.sha256(body).hexdigest()})

    def app(self):
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_route("*", "/{tail:.*}", self.any)
        return app


@pytest.fixture(scope="module")
def backends():
    """Three stand-ins on one event loop in a thread; "tiny-b" also serves a LoRA adapter name."""
    found = {"tiny-a": Backend("tiny-a"), "tiny-b": Backend("tiny-b"), "multi": Backend("multi")}
    loop = asyncio.new_event_loop()
    runners = []

    async def start():
        for backend in found.values():
            runner = web.AppRunner(backend.app(), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", backend.port).start()
            runners.append(runner)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    yield found

    async def stop():
        for runner in runners:
            await runner.cleanup()
    asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def door_config(backends, **overrides):
    dead = free_port()  # nothing listens here: a model whose backend is down
    config = {
        "models": {"tiny-a": {"url": backends["tiny-a"].url},
                   "tiny-b": {"url": backends["tiny-b"].url, "served_names": ["tiny-b-lora"]},
                   "multi": {"url": backends["multi"].url + "/", "client_affinity": True},
                   "gone": {"url": "http://127.0.0.1:%d" % dead}},
        "max_request_body_bytes": LIMIT,
        "small_body_bytes": 1024,
        "ab_tests": {"/ab": [{"model": "tiny-a", "weight": 1}, {"model": "tiny-b", "weight": 1}]},
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def door(backends):
    with FrontDoor(door_config(backends), identities=identities_file(KEYS)) as running:
        yield running


def call(door, method, path, body=None, headers=None, chunked=False, port=None):
    """One request with the raw target as given (http.client sends the path unchanged)."""
    conn = http.client.HTTPConnection(door.config["listen"]["host"], port or door.config["listen"]["port"], timeout=30)
    try:
        conn.request(method, path, body=body, headers=dict(AUTH if headers is None else headers), encode_chunked=chunked)
        resp = conn.getresponse()
        listed = resp.getheaders()
        headers = dict(listed)
        # No header comes twice (a proxy that adds its own Content-Type beside the backend's would).
        assert len({k.lower() for k, dummy in listed}) == len(listed), listed
        return resp.status, headers, resp.read()
    finally:
        conn.close()


def auth(door, headers):
    """Traefik's forwardAuth request: GET /auth with the client's headers."""
    return call(door, "GET", "/auth", headers=headers, port=door.config["auth"]["port"])


def error_of(raw):
    err = json.loads(raw)["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    return err


def arrived(backends):
    return sum(len(b.seen) for b in backends.values())


# -- authentication: /auth as Traefik's forwardAuth asks it ---------------------------------------------------------

def test_a_known_key_gets_its_name_groups_and_a_signature_the_api_port_accepts(door, backends):
    status, headers, dummy = auth(door, {"Authorization": "Bearer " + KEY, "X-Llmserve-User": "root"})
    assert status == 200
    assert headers["X-Llmserve-User"] == "alice" and headers["X-Llmserve-Groups"] == "physics,staff"
    identity = {k: headers[k] for k in ("X-Llmserve-User", "X-Llmserve-Groups", "X-Llmserve-Signature")}
    assert identity == AUTH
    status, dummy, dummy = auth(door, {"Authorization": "Bearer " + OTHER_KEY})
    assert status == 200
    before = arrived(backends)
    assert call(door, "POST", "/v1/completions", b'{"model": "tiny-a"}', headers=identity)[0] == 200
    assert arrived(backends) == before + 1


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-real-key"},
                                     {"Authorization": "Bearer sk-llmserve-key-of-another-cluster-000"},
                                     {"Authorization": "bearer " + KEY}, {"Authorization": "Basic YWxpY2U6eA=="},
                                     {"Authorization": "Bearer  " + KEY}, {"Authorization": "Bearer"}])
def test_a_wrong_key_is_an_openai_401_with_no_identity(door, headers):
    status, answer, raw = auth(door, headers)
    assert status == 401 and error_of(raw)["code"] == "invalid_api_key" and answer["WWW-Authenticate"] == "Bearer"
    assert not {"x-llmserve-user", "x-llmserve-groups", "x-llmserve-signature"} & {k.lower() for k in answer}


@pytest.mark.parametrize("forged", [signed("alice", "physics,staff", key="another-cluster-signing-key"),
                                    dict(signed("alice", ""), **{"X-Llmserve-Groups": "admins"}),
                                    {"X-Llmserve-User": "alice", "X-Llmserve-Groups": "physics,staff"},
                                    {"Authorization": "Bearer not-a-real-key"}, {}])
def test_the_api_port_refuses_an_identity_it_did_not_sign(door, backends, forged):
    before = arrived(backends)
    status, dummy, raw = call(door, "POST", "/models/tiny-a/v1/completions", b'{"model": "tiny-a"}', headers=forged)
    assert status == 401 and error_of(raw)["type"] == "invalid_request_error"
    assert arrived(backends) == before


def test_standalone_the_api_port_takes_a_key_itself(door, backends):
    """Without Traefik in front (another ingress, a test): the key in the request is checked the same way."""
    assert call(door, "POST", "/v1/completions", b'{"model": "tiny-a"}', headers={"Authorization": "Bearer " + KEY})[0] == 200
    assert backends["tiny-a"].seen[-1]["headers"]["Authorization"] == "Bearer " + INTERNAL_KEY


@pytest.mark.parametrize("mode, headers, user, groups", [
    ("basic", {"X-Forwarded-User": "carol"}, "carol", "chemistry"),
    ("forward", {"X-Forwarded-User": "dave", "X-Forwarded-Groups": "students, physics"}, "dave", "physics,students"),
    ("forward", {"X-Forwarded-User": "carol", "X-Forwarded-Groups": "x"}, "carol", "chemistry,x"),
    ("none", {"X-Real-Ip": "192.0.2.9"}, "address:192.0.2.9", ""),
])
def test_basic_and_sso_users_get_the_same_kind_of_identity(backends, mode, headers, user, groups):
    with FrontDoor(door_config(backends, auth_mode=mode), identities=identities_file(users={"carol": ["chemistry"]})) as door:
        status, answer, dummy = auth(door, headers)
        assert status == 200 and answer["X-Llmserve-User"] == user and answer["X-Llmserve-Groups"] == groups
        assert answer["X-Llmserve-Signature"] == signed(user, groups)["X-Llmserve-Signature"]
        if mode != "none":
            status, dummy, raw = auth(door, {})
            assert status == 401 and error_of(raw)["code"] == "unauthenticated"


@pytest.mark.parametrize("status, code, retry", [(429, "rate_limit_exceeded", "1"), (503, "service_unavailable", "1"),
                                                 (502, "bad_gateway", None), (504, "gateway_timeout", None)])
def test_error_pages_for_traefik_are_openai_errors(door, status, code, retry):
    got, headers, raw = call(door, "GET", "/error/%d" % status, headers={}, port=door.config["auth"]["port"])
    assert got == status and error_of(raw)["code"] == code and headers.get("Retry-After") == retry
    assert headers["Content-Type"].startswith("application/json")


# -- only the OpenAI API passes, checked on the raw target -----------------------------------------------------

ATTACKS = [
    "/v1/..%2Finvocations", "/v1/..%2finvocations", "/v1/%2E%2E/invocations", "/v1/%2e%2e%2finvocations",
    "/v1/..%252Finvocations", "/v1/..%5Cinvocations", "/v1/..\\invocations", "/v1/../invocations", "/v1/./completions",
    "/models/tiny-a/v1/..%2F..%2Ftokenize", "/models/tiny-a/v1/../../metrics", "/models/multi/v1/..%2F..%2Fadd_worker?url=https://evil.example",
    "/ab/v1/..%2F..%2Fpooling", "//v1/completions", "/v1//completions", "/v1/completions/", "/v1/completions?x=1",
    "/v1/completions%00", "/v1/completions;x=1", "/V1/completions", "/v1/COMPLETIONS", "/v1%2Fcompletions",
    "/invocations", "/tokenize", "/pooling", "/metrics", "/health", "/add_worker?url=http://x", "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter", "/models/tiny-a/invocations", "/models/tiny-a/v1", "/v2/completions", "/", "/ab/metrics",
    "/models/tiny-a/v1/tokenize", "/v1/audio/transcriptions", "/models/nope/v1/completions", "/score", "/v1/chat",
]


@pytest.mark.parametrize("method", ["POST", "GET", "PUT", "DELETE"])
@pytest.mark.parametrize("path", ATTACKS)
def test_attack_paths_are_refused_and_never_reach_a_backend(door, backends, path, method):
    before = arrived(backends)
    status, dummy, raw = call(door, method, path, b'{"model": "tiny-a", "prompt": "x"}')
    assert status in (400, 404, 405), (path, status, raw)
    assert error_of(raw)["code"] in ("invalid_path", "not_found", "method_not_allowed", "model_not_found")
    assert arrived(backends) == before, backends


@pytest.mark.parametrize("path, method", [("/v1/models", "POST"), ("/v1/completions", "GET"), ("/models/tiny-a/v1/models", "DELETE")])
def test_a_wrong_method_is_405_naming_the_right_one(door, backends, path, method):
    before = arrived(backends)
    status, headers, raw = call(door, method, path, b"{}")
    assert status == 405 and error_of(raw)["code"] == "method_not_allowed" and headers["Allow"] in ("GET", "POST")
    assert arrived(backends) == before


@pytest.mark.parametrize("endpoint", ["chat/completions", "completions", "embeddings", "responses", "rerank", "score"])
def test_every_allowed_endpoint_is_forwarded_as_checked(door, backends, endpoint):
    body = b'{"model": "tiny-a", "input": "x"}'
    for path in ("/v1/" + endpoint, "/models/tiny-a/v1/" + endpoint):
        status, dummy, dummy = call(door, "POST", path, body)
        assert status == 200 and backends["tiny-a"].seen[-1]["path"] == "/v1/" + endpoint


# -- routing and pass-through ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model, backend", [("tiny-a", "tiny-a"), ("tiny-b", "tiny-b"), ("tiny-b-lora", "tiny-b"), ("multi", "multi")])
def test_post_v1_goes_to_the_model_named_in_the_body(door, backends, model, backend):
    body = (RAW_BODY % model).encode()
    before = {n: len(b.seen) for n, b in backends.items()}
    status, headers, raw = call(door, "POST", "/v1/chat/completions", body,
                                dict(AUTH, **{"Content-Type": "application/json", "Authorization": "Bearer " + KEY}))
    assert status == 200 and headers["X-Backend"] == backend and headers["Content-Type"] == "application/json"
    assert {n: len(b.seen) - before[n] for n, b in backends.items()} == {n: int(n == backend) for n in backends}
    seen = backends[backend].seen[-1]
    # The request arrives unchanged but for the key: the cluster's internal key, never the caller's or an identity.
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["Authorization"] == "Bearer " + INTERNAL_KEY
    assert not any(k.lower().startswith("x-llmserve-") for k in seen["headers"])
    assert seen["body"] == body and headers["X-Body-Sha256"] == hashlib.sha256(body).hexdigest()
    # ... and so does the answer.
    assert raw == RAW_ANSWER


def test_per_model_path_strips_the_prefix_and_ignores_the_body(door, backends):
    body = b'{"model": "tiny-a", "prompt": "x"}'
    status, headers, raw = call(door, "POST", "/models/tiny-b/v1/completions", body)
    assert status == 200 and headers["X-Backend"] == "tiny-b" and raw == RAW_ANSWER
    assert backends["tiny-b"].seen[-1]["path"] == "/v1/completions" and backends["tiny-b"].seen[-1]["body"] == body
    status, dummy, raw = call(door, "GET", "/models/multi/v1/models")
    assert status == 200 and [m["id"] for m in json.loads(raw)["data"]] == ["multi"]


def test_v1_models_is_the_union_of_every_backend_asked_with_the_internal_key(door, backends):
    status, headers, raw = call(door, "GET", "/v1/models", headers=dict(AUTH, **{"X-Real-Ip": "192.0.2.44"}))
    assert status == 200
    listing = json.loads(raw)
    assert listing["object"] == "list"
    # Entries exactly as each backend reports them (the stand-ins answer only the internal key); the model that is
    # down is left out.
    assert sorted(listing["data"], key=lambda e: e["id"]) == sorted((b.entry for b in backends.values()), key=lambda e: e["id"])
    # The client address Traefik recorded comes back, for health.yml's check.
    assert headers["X-Llmserve-Client-Address"] == "192.0.2.44"


@pytest.mark.parametrize("model", ["mixtral-8x7b", "TINY-A", 7, ["tiny-a"]])
def test_unknown_model_is_an_openai_404_naming_the_models(door, backends, model):
    before = arrived(backends)
    status, dummy, raw = call(door, "POST", "/v1/completions", json.dumps({"model": model, "prompt": "x"}).encode())
    err = error_of(raw)
    if isinstance(model, str):
        assert status == 404 and err["code"] == "model_not_found" and err["type"] == "invalid_request_error"
        assert all(name in err["message"] for name in ("tiny-a", "tiny-b", "tiny-b-lora", "multi", "gone"))
    else:
        assert status == 400 and err["code"] == "invalid_json"
    assert arrived(backends) == before


@pytest.mark.parametrize("body, code", [(b'{"prompt": "x"}', "missing_model"), (b'{"model": "", "prompt": "x"}', "missing_model"),
                                        (b'{"model": "tiny-a"', "invalid_json"), (b'["tiny-a"]', "invalid_json"), (b"", "invalid_json")])
@pytest.mark.parametrize("pad", [0, 2000])
def test_missing_model_or_bad_json_is_400(door, body, code, pad):
    # Padded past small_body_bytes, the body goes through the large-body scanner instead of json.loads.
    if pad and body.startswith(b"{"):
        body = b'{"pad": "' + b"p" * pad + b'", ' + body[1:]
    status, dummy, raw = call(door, "POST", "/v1/chat/completions", body)
    assert status == 400
    err = error_of(raw)
    assert err["code"] == code
    if code == "missing_model":
        assert err["param"] == "model" and "tiny-a" in err["message"]


def test_a_large_body_is_routed_by_its_top_level_model_only(door, backends):
    body = json.dumps({"messages": [{"role": "user", "content": 'say "model": "tiny-a"', "model": "tiny-a"}] * 40,
                       "m\\u006fdel": "x", "model": "tiny-b", "tools": [{"model": "multi"}]}).encode()
    assert len(body) > 1024
    status, headers, dummy = call(door, "POST", "/v1/chat/completions", body)
    assert status == 200 and headers["X-Backend"] == "tiny-b" and backends["tiny-b"].seen[-1]["body"] == body


@pytest.mark.parametrize("path", ["/v1/completions", "/models/tiny-a/v1/completions", "/ab/v1/completions"])
@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_the_limit_is_413_and_not_forwarded(door, backends, path, chunked):
    before = arrived(backends)
    body = b'{"model": "tiny-a", "prompt": "' + b"x" * LIMIT + b'"}'
    status, dummy, raw = call(door, "POST", path, body, chunked=chunked)
    assert status == 413 and error_of(raw)["code"] == "request_too_large"
    assert arrived(backends) == before
    # Exactly at the limit still passes.
    body = b'{"model": "tiny-a", "prompt": "' + b"x" * (LIMIT - 33) + b'"}'
    assert len(body) == LIMIT
    assert call(door, "POST", path, body, chunked=chunked)[0] == 200


def test_stream_arrives_chunk_by_chunk(door):
    conn = http.client.HTTPConnection(door.config["listen"]["host"], door.config["listen"]["port"], timeout=30)
    body = b'{"model": "tiny-b", "stream": true, "messages": []}'
    started = time.monotonic()
    conn.request("POST", "/v1/chat/completions", body=body, headers=AUTH)
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
    arrivals, events = [], []
    while True:
        line = resp.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            arrivals.append(time.monotonic() - started)
            events.append(line)
    conn.close()
    assert events[0] == b'data: {"model": "tiny-b", "i": 0}\n' and events[-1] == b"data: [DONE]\n"
    assert len(events) == STREAM_EVENTS + 1
    # The first event is here long before the backend finished (5 events 0.2 s apart): nothing is buffered.
    assert arrivals[0] < STREAM_GAP_S, arrivals
    assert arrivals[-1] - arrivals[0] > (STREAM_EVENTS - 1) * STREAM_GAP_S * 0.9, arrivals
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert min(gaps) > STREAM_GAP_S * 0.5, gaps


def read_until_done(sock):
    got = b""
    while b"data: [DONE]" not in got:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_a_client_closing_after_the_last_event_ends_normally(door):
    """The openai SDK's sync client closes the connection once it has read [DONE]: a 200, no error in the log."""
    before = door.metrics()
    start = int((re.search(r'requests_total\{model="tiny-b",code="200"\} (\d+)', before) or [0, 0])[1])
    for dummy in range(3):
        with socket.create_connection((door.config["listen"]["host"], door.config["listen"]["port"]), timeout=10) as sock:
            body = b'{"model": "tiny-b", "stream": true, "events": 2}'
            head = "".join("%s: %s\r\n" % kv for kv in AUTH.items())
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s"
                         % (len(body), head.encode(), body))
            assert b"data: [DONE]" in read_until_done(sock)
    time.sleep(0.5)
    text = door.metrics()
    assert int(re.search(r'requests_total\{model="tiny-b",code="200"\} (\d+)', text)[1]) == start + 3
    log = door.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-2000:]


def test_a_client_leaving_mid_stream_is_counted_499_and_the_backend_is_let_go(door):
    with socket.create_connection((door.config["listen"]["host"], door.config["listen"]["port"]), timeout=10) as sock:
        body = b'{"model": "tiny-a", "stream": true, "events": 30}'
        head = "".join("%s: %s\r\n" % kv for kv in AUTH.items())
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), head.encode(), body))
        got = b""
        while b"data:" not in got:
            got += sock.recv(65536)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and 'model="tiny-a",code="499"' not in door.metrics():
        time.sleep(0.2)
    assert 'llmserve_frontdoor_in_flight{model="tiny-a"} 0' in door.metrics()
    assert 'model="tiny-a",code="499"' in door.metrics()


def test_ab_path_spreads_over_both_models_and_strips_the_prefix(door, backends):
    hits = {"tiny-a": 0, "tiny-b": 0}
    for dummy in range(40):
        status, headers, dummy = call(door, "POST", "/ab/v1/completions", b'{"prompt": "x"}')
        assert status == 200
        hits[headers["X-Backend"]] += 1
    assert hits["tiny-a"] >= 5 and hits["tiny-b"] >= 5, hits
    assert backends["tiny-a"].seen[-1]["path"] == "/v1/completions" or backends["tiny-b"].seen[-1]["path"] == "/v1/completions"


def test_down_backend_is_502_and_reported_on_metrics_and_healthz(door):
    status, dummy, raw = call(door, "POST", "/v1/completions", b'{"model": "gone", "prompt": "x"}')
    assert status == 502 and error_of(raw)["code"] == "backend_unavailable"
    call(door, "POST", "/v1/completions", b'{"model": "tiny-a", "prompt": "x"}')
    call(door, "POST", "/v1/completions", b'{"model": "nope", "prompt": "x"}')
    text = door.metrics()
    assert 'llmserve_frontdoor_backend_up{model="gone"} 0' in text
    assert 'llmserve_frontdoor_backend_up{model="tiny-a"} 1' in text
    assert 'llmserve_frontdoor_requests_total{model="gone",code="502"} ' in text
    assert re.search(r'llmserve_frontdoor_requests_total\{model="tiny-a",code="200"\} [1-9]', text)
    # Refused before routing: counted without a model (a client cannot add label values).
    assert re.search(r'llmserve_frontdoor_requests_total\{model="",code="404"\} [1-9]', text)
    assert re.search(r'llmserve_frontdoor_refusals_total\{reason="model_not_found"\} [1-9]', text)
    assert 'model="nope"' not in text
    with urllib.request.urlopen(door.admin_url + "/healthz", timeout=5) as resp:
        health = json.loads(resp.read())
    assert health["backends"] == {"tiny-a": 1, "tiny-b": 1, "multi": 1, "gone": 0}


def test_a_router_that_is_down_falls_back_to_the_model_service(backends):
    """A multi-replica model's router refusing connections: the request goes to the model's Service instead."""
    config = door_config(backends)
    config["models"]["multi"] = {"url": "http://127.0.0.1:%d" % free_port(), "fallback_url": backends["multi"].url}
    with FrontDoor(config) as door:
        before = len(backends["multi"].seen)
        status, headers, dummy = call(door, "POST", "/v1/completions", b'{"model": "multi", "prompt": "x"}')
        assert status == 200 and headers["X-Backend"] == "multi" and len(backends["multi"].seen) == before + 1


def test_bad_config_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match=r"models.x.url must be an http\(s\) base URL"):
        with FrontDoor({"models": {"x": {"url": "vllm-x:8000"}}}):
            pass
    with pytest.raises(RuntimeError, match=r"auth_mode must be api-key, basic, forward or none"):
        with FrontDoor({"models": {"x": {"url": "http://x:8000"}}, "auth_mode": "keys"}):
            pass


def test_client_affinity_keys_the_session_on_the_identity(door, backends):
    body = b'{"model": "multi", "prompt": "x"}'
    call(door, "POST", "/v1/completions", body, dict(AUTH, **{"X-Real-Ip": "192.0.2.7"}))
    assert backends["multi"].seen[-1]["headers"]["X-Session-ID"] == "alice"
    call(door, "POST", "/v1/completions", body, dict(AUTH, **{"X-Session-ID": "chat-42"}))
    assert backends["multi"].seen[-1]["headers"]["X-Session-ID"] == "chat-42"
    # Models without it get no session header.
    call(door, "POST", "/v1/completions", b'{"model": "tiny-a", "prompt": "x"}')
    assert "X-Session-ID" not in backends["tiny-a"].seen[-1]["headers"]


def test_default_model_takes_requests_that_name_none(backends):
    config = {"models": {"tiny-a": {"url": backends["tiny-a"].url}, "tiny-b": {"url": backends["tiny-b"].url}},
              "default_model": "tiny-b", "auth_mode": "none"}
    with FrontDoor(config) as door:
        status, headers, dummy = call(door, "POST", "/v1/completions", b'{"prompt": "x"}', headers={})
        assert status == 200 and headers["X-Backend"] == "tiny-b"
        assert call(door, "POST", "/v1/completions", b'{"model": "tiny-c"}', headers={})[0] == 404


def test_the_health_check_of_the_collection_passes_through_the_front_door(door):
    """vllm_health's own check (module_utils/_health) against the shared endpoint with a user's key: /health is not
    routed, /v1/models lists the model, a one-token completion naming it is answered by that model."""
    from ansible_collections.llmserve.k3s.plugins.module_utils import _health
    result = _health.check_once(_health.http_fetch, door.url, model="tiny-b", api_key=KEY, check_metrics=False)
    assert result["status"] == "ready", result
    assert set(result["models"]) >= {"tiny-a", "tiny-b", "multi"}
    result = _health.check_once(_health.http_fetch, door.url, model="tiny-b", api_key=None, check_metrics=False)
    assert result["status"] != "ready", result


def test_identity_headers_and_their_aliases_are_never_forwarded(door, backends):
    """X_Forwarded_User / X.Forwarded.User would read as X-Forwarded-User to a backend that folds '_' and '.'."""
    spoof = dict(AUTH, **{"X_Forwarded_User": "admin", "X.Forwarded.Email": "root@x", "X_Real_Ip": "10.0.0.1",
                          "X_Llmserve_User": "root", "X_Custom_Thing": "kept"})
    status, dummy, dummy = call(door, "POST", "/models/tiny-a/v1/completions", b'{"model": "tiny-a"}', headers=spoof)
    assert status == 200
    seen = {k.lower(): v for k, v in backends["tiny-a"].seen[-1]["headers"].items()}
    assert not any(k in seen for k in ("x_forwarded_user", "x.forwarded.email", "x_real_ip", "x_llmserve_user",
                                       "x-llmserve-user", "x-llmserve-signature"))
    assert seen["x_custom_thing"] == "kept"


# -- a front door that stays up ---------------------------------------------------------------------------------

def test_a_slow_body_is_408_within_the_body_timeout(backends):
    with FrontDoor(door_config(backends, body_timeout_s=1)) as door:
        before = arrived(backends)
        with socket.create_connection((door.config["listen"]["host"], door.config["listen"]["port"]), timeout=10) as sock:
            head = "".join("%s: %s\r\n" % kv for kv in AUTH.items())
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n%s\r\n{\"model\"" % head.encode())
            started = time.monotonic()
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5, answer
        assert arrived(backends) == before


def test_large_bodies_wait_for_a_slot_and_overflow_is_503(backends):
    """Two large bodies sent slowly hold both slots; a third waits slot_wait_s, then 503 with Retry-After."""
    with FrontDoor(door_config(backends, large_body_slots=2, slot_wait_s=1, body_timeout_s=10)) as door:
        socks = []
        head = "".join("%s: %s\r\n" % kv for kv in AUTH.items()).encode()
        try:
            for dummy in range(2):
                sock = socket.create_connection((door.config["listen"]["host"], door.config["listen"]["port"]), timeout=10)
                sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n%s\r\n{" % head)
                socks.append(sock)
            time.sleep(0.3)
            status, headers, raw = call(door, "POST", "/v1/completions", b'{"model": "tiny-a", "p": "' + b"x" * 2000 + b'"}')
            assert status == 503 and error_of(raw)["code"] == "overloaded" and headers["Retry-After"] == "1"
            # Small bodies never wait for a large-body slot.
            assert call(door, "POST", "/v1/completions", b'{"model": "tiny-a"}')[0] == 200
        finally:
            for sock in socks:
                sock.close()


def test_requests_above_max_in_flight_are_503(backends):
    with FrontDoor(door_config(backends, max_in_flight=2)) as door:
        conns = []
        for dummy in range(2):
            conn = http.client.HTTPConnection(door.config["listen"]["host"], door.config["listen"]["port"], timeout=30)
            conn.request("POST", "/v1/completions", body=b'{"model": "tiny-a", "stream": true, "events": 10}', headers=AUTH)
            conns.append(conn)
        time.sleep(0.5)
        status, headers, raw = call(door, "POST", "/v1/completions", b'{"model": "tiny-b"}')
        assert status == 503 and error_of(raw)["code"] == "overloaded" and headers["Retry-After"]
        for conn in conns:
            assert conn.getresponse().read().endswith(b"data: [DONE]\n\n")
            conn.close()
        assert call(door, "POST", "/v1/completions", b'{"model": "tiny-b"}')[0] == 200


def test_sigterm_finishes_the_stream_in_progress_and_refuses_new_connections(backends):
    with FrontDoor(door_config(backends)) as door:
        conn = http.client.HTTPConnection(door.config["listen"]["host"], door.config["listen"]["port"], timeout=30)
        conn.request("POST", "/v1/completions", body=b'{"model": "tiny-a", "stream": true, "events": 15}', headers=AUTH)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.readline().startswith(b"data: ")
        door.terminate()
        time.sleep(0.5)
        # Draining: readiness fails, new connections to the API port are refused, the stream goes on to its end.
        with pytest.raises(urllib.error.HTTPError) as ready:
            urllib.request.urlopen(door.admin_url + "/readyz", timeout=5)
        assert ready.value.code == 503
        with pytest.raises(OSError):
            socket.create_connection((door.config["listen"]["host"], door.config["listen"]["port"]), timeout=2).close()
        rest = resp.read()
        assert rest.endswith(b"data: [DONE]\n\n") and rest.count(b"data: ") == 15, rest
        conn.close()
        door.proc.wait(timeout=15)
        assert door.proc.returncode == 0, door.log.read_text()[-2000:]


def random_json(rng, depth=0):
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.choice([None, True, False, rng.randrange(-5, 5), rng.random()])
    if kind in (1, 2, 3):
        return rng.choice(["", "model", 'a"b', "x\\y", "\u00e9\u4e2d", "}{][", "\n\t", '"model": "z"'])
    if kind in (4, 5):
        return [random_json(rng, depth + 1) for dummy in range(rng.randrange(4))]
    return {rng.choice(["model", "m", "x", "model ", "Model", '"', "\\"]): random_json(rng, depth + 1) for dummy in range(rng.randrange(4))}


def test_the_large_body_scanner_finds_what_json_finds():
    """top_level_model (no document built) against json.loads on random documents, written in several styles."""
    import random
    import sys
    sys.path.insert(0, str(__import__("frontdoor").SCRIPT.parent))
    import llmserve_frontdoor as script  # pylint: disable=import-outside-toplevel
    rng = random.Random(7)
    checked = 0
    for dummy in range(3000):
        fields = {k: random_json(rng, 1) for k in ("a", "b")}
        doc = random_json(rng, 1) if rng.random() < 0.2 else dict(fields, model=random_json(rng, 2))
        raw = json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1])).encode()
        expected = doc.get("model") if isinstance(doc, dict) else ValueError
        if isinstance(doc, dict) and expected is not None and not isinstance(expected, str):
            expected = ValueError
        scan, got = script.top_level_model(raw), None
        try:
            while True:
                next(scan)
        except StopIteration as done:
            got = done.value
        except ValueError:
            got = ValueError
        assert got == expected, raw
        checked += 1
    assert checked == 3000


def test_several_workers_share_the_ports_and_one_admin_view(backends):
    """workers: 2 runs two processes on the API and auth ports under a supervisor that holds the admin port: both
    take requests, /metrics sums them, /healthz answers, SIGTERM lets a stream in progress finish and all exit."""
    with FrontDoor(door_config(backends, workers=2), identities=identities_file(KEYS)) as door:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(door.children()) < 2:
            time.sleep(0.2)
        assert len(door.children()) == 2, door.log.read_text()[-2000:]
        before = sum(int(v) for v in re.findall(r'requests_total\{model="tiny-a",code="200"\} (\d+)', door.metrics()))
        for dummy in range(30):
            assert call(door, "POST", "/v1/completions", b'{"model": "tiny-a"}')[0] == 200
            assert auth(door, {"Authorization": "Bearer " + KEY})[0] == 200
        time.sleep(1.5)
        after = sum(int(v) for v in re.findall(r'requests_total\{model="tiny-a",code="200"\} (\d+)', door.metrics()))
        assert after - before == 30
        with urllib.request.urlopen(door.admin_url + "/healthz", timeout=5) as resp:
            assert resp.status == 200
        conn = http.client.HTTPConnection(door.config["listen"]["host"], door.config["listen"]["port"], timeout=30)
        conn.request("POST", "/v1/completions", body=b'{"model": "tiny-a", "stream": true, "events": 10}', headers=AUTH)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.readline().startswith(b"data: ")
        door.terminate()
        rest = resp.read()
        assert rest.endswith(b"data: [DONE]\n\n"), rest[-200:]
        conn.close()
        door.proc.wait(timeout=20)
        assert door.proc.returncode == 0 and not door.children(), door.log.read_text()[-2000:]
