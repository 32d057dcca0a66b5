"""The front door, run for real (its own process) in front of stand-in OpenAI backends (aiohttp on 127.0.0.1).

The backends record what reached them (path, headers, raw body) and answer with fixed raw bytes, so the tests see
routing, byte-for-byte pass-through and chunk-by-chunk streaming from both sides.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import re
import threading
import time
import urllib.request

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

from frontdoor import FrontDoor, free_port  # noqa: E402

KEY = "sk-test-0123456789abcdef"
AUTH = {"Authorization": "Bearer " + KEY}
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
        if request.headers.get("Authorization") != "Bearer " + KEY:
            return web.json_response({"error": "Unauthorized"}, status=401)
        return web.json_response({"object": "list", "data": [self.entry]})

    async def any(self, request):
        body = await request.read()
        self.seen.append({"method": request.method, "path": request.path_qs, "headers": dict(request.headers), "body": body})
        if b'"stream": true' in body or b'"stream":true' in body:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(STREAM_EVENTS):
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


@pytest.fixture(scope="module")
def door(backends):
    dead = free_port()  # nothing listens here: a model whose backend is down
    config = {
        "models": {"tiny-a": {"url": backends["tiny-a"].url}, "tiny-b": {"url": backends["tiny-b"].url, "served_names": ["tiny-b-lora"]},
                   "multi": {"url": backends["multi"].url + "/", "client_affinity": True}, "gone": {"url": "http://127.0.0.1:%d" % dead}},
        "max_request_body_bytes": LIMIT,
        "require_bearer": True,
        "ab_tests": {"/ab": [{"model": "tiny-a", "weight": 1}, {"model": "tiny-b", "weight": 1}]},
    }
    with FrontDoor(config) as running:
        yield running


def call(door, method, path, body=None, headers=None, chunked=False):
    conn = http.client.HTTPConnection(door.config["listen"]["host"], door.config["listen"]["port"], timeout=30)
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


def error_of(raw):
    err = json.loads(raw)["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    return err


@pytest.mark.parametrize("model, backend", [("tiny-a", "tiny-a"), ("tiny-b", "tiny-b"), ("tiny-b-lora", "tiny-b"), ("multi", "multi")])
def test_post_v1_goes_to_the_model_named_in_the_body(door, backends, model, backend):
    body = (RAW_BODY % model).encode()
    before = {n: len(b.seen) for n, b in backends.items()}
    status, headers, raw = call(door, "POST", "/v1/chat/completions?x=1", body, dict(AUTH, **{"Content-Type": "application/json"}))
    assert status == 200 and headers["X-Backend"] == backend and headers["Content-Type"] == "application/json"
    assert {n: len(b.seen) - before[n] for n, b in backends.items()} == {n: int(n == backend) for n in backends}
    seen = backends[backend].seen[-1]
    # The request arrives unchanged: path and query, key header, every byte of the body.
    assert seen["path"] == "/v1/chat/completions?x=1"
    assert seen["headers"]["Authorization"] == AUTH["Authorization"]
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


@pytest.mark.parametrize("path", ["/models/tiny-a/metrics", "/models/tiny-a/health", "/models/tiny-a/v1", "/metrics", "/health",
                                  "/v2/completions", "/", "/ab/metrics"])
@pytest.mark.parametrize("headers", [AUTH, {}])
def test_paths_outside_the_api_are_a_plain_404_and_never_forwarded(door, backends, path, headers):
    before = sum(len(b.seen) for b in backends.values())
    status, dummy, raw = call(door, "POST", path, b'{"model": "tiny-a"}', headers=headers)
    # Plain text, as Traefik answers an unrouted path (vllm_health reads a JSON 404 as vLLM's own).
    assert status == 404 and raw == b"404 page not found\n"
    assert sum(len(b.seen) for b in backends.values()) == before


def test_unknown_model_in_the_path_is_an_openai_404(door, backends):
    before = sum(len(b.seen) for b in backends.values())
    status, dummy, raw = call(door, "POST", "/models/nope/v1/completions", b'{"model": "tiny-a"}')
    assert status == 404 and error_of(raw)["code"] == "model_not_found" and "tiny-a" in error_of(raw)["message"]
    assert sum(len(b.seen) for b in backends.values()) == before
    assert call(door, "POST", "/models/nope/v1/completions", b"{}", headers={})[0] == 401


def test_v1_models_is_the_union_of_every_backend(door, backends):
    status, dummy, raw = call(door, "GET", "/v1/models")
    assert status == 200
    listing = json.loads(raw)
    assert listing["object"] == "list"
    # Entries exactly as each backend reports them; the model that is down is left out.
    assert sorted(listing["data"], key=lambda e: e["id"]) == sorted((b.entry for b in backends.values()), key=lambda e: e["id"])
    # A wrong key: the backends' own 401 comes back (vLLM checks the key, not the front door).
    status, dummy, raw = call(door, "GET", "/v1/models", headers={"Authorization": "Bearer wrong-key-0123456789"})
    assert status == 401 and json.loads(raw) == {"error": "Unauthorized"}


@pytest.mark.parametrize("model", ["mixtral-8x7b", "TINY-A", 7, ["tiny-a"]])
def test_unknown_model_is_an_openai_404_naming_the_models(door, backends, model):
    before = sum(len(b.seen) for b in backends.values())
    status, dummy, raw = call(door, "POST", "/v1/completions", json.dumps({"model": model, "prompt": "x"}).encode())
    assert status == 404
    err = error_of(raw)
    assert err["code"] == "model_not_found" and err["type"] == "invalid_request_error"
    assert all(name in err["message"] for name in ("tiny-a", "tiny-b", "tiny-b-lora", "multi", "gone"))
    assert sum(len(b.seen) for b in backends.values()) == before


@pytest.mark.parametrize("body, code", [(b'{"prompt": "x"}', "missing_model"), (b'{"model": "", "prompt": "x"}', "missing_model"),
                                        (b'{"model": "tiny-a"', "invalid_json"), (b'["tiny-a"]', "invalid_json"), (b"", "invalid_json")])
def test_missing_model_or_bad_json_is_400(door, body, code):
    status, dummy, raw = call(door, "POST", "/v1/chat/completions", body)
    assert status == 400
    err = error_of(raw)
    assert err["code"] == code
    if code == "missing_model":
        assert err["param"] == "model" and "tiny-a" in err["message"]


@pytest.mark.parametrize("path", ["/v1/completions", "/models/tiny-a/v1/completions", "/ab/v1/completions"])
@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_the_limit_is_413_and_not_forwarded(door, backends, path, chunked):
    before = sum(len(b.seen) for b in backends.values())
    body = b'{"model": "tiny-a", "prompt": "' + b"x" * LIMIT + b'"}'
    status, dummy, raw = call(door, "POST", path, body, chunked=chunked)
    assert status == 413 and error_of(raw)["code"] == "request_too_large"
    assert sum(len(b.seen) for b in backends.values()) == before
    # Exactly at the limit still passes.
    body = b'{"model": "tiny-a", "prompt": "' + b"x" * (LIMIT - 33) + b'"}'
    assert len(body) == LIMIT
    assert call(door, "POST", path, body, chunked=chunked)[0] == 200


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions", "/models/tiny-a/v1/completions", "/ab/v1/completions",
                                  "/v1/embeddings", "/models/gone/v1/models"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic YWxpY2U6eA=="}, {"Authorization": "Bearer "},
                                     {"Authorization": "Bearer two words"}])
def test_missing_or_malformed_key_is_401_on_every_path(door, backends, path, headers):
    before = sum(len(b.seen) for b in backends.values())
    status, dummy, raw = call(door, "POST" if "completions" in path else "GET", path, b'{"model": "tiny-a"}', headers=headers)
    assert status == 401
    assert error_of(raw)["code"] == "invalid_api_key"
    assert sum(len(b.seen) for b in backends.values()) == before


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
    assert 'model="nope"' not in text
    with urllib.request.urlopen(door.admin_url + "/healthz", timeout=5) as resp:
        health = json.loads(resp.read())
    assert health["backends"] == {"tiny-a": 1, "tiny-b": 1, "multi": 1, "gone": 0}


def test_bad_config_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match=r"models.x.url must be an http\(s\) base URL"):
        with FrontDoor({"models": {"x": {"url": "vllm-x:8000"}}}):
            pass


def test_client_affinity_sends_the_client_address_as_session_key(door, backends):
    body = b'{"model": "multi", "prompt": "x"}'
    call(door, "POST", "/v1/completions", body, dict(AUTH, **{"X-Real-Ip": "192.0.2.7"}))
    assert backends["multi"].seen[-1]["headers"]["X-Session-ID"] == "192.0.2.7"
    call(door, "POST", "/v1/completions", body, dict(AUTH, **{"X-Session-ID": "chat-42", "X-Real-Ip": "192.0.2.7"}))
    assert backends["multi"].seen[-1]["headers"]["X-Session-ID"] == "chat-42"
    call(door, "POST", "/v1/completions", body)
    assert backends["multi"].seen[-1]["headers"]["X-Session-ID"] == "127.0.0.1"
    # Models without it get no session header.
    call(door, "POST", "/v1/completions", b'{"model": "tiny-a", "prompt": "x"}')
    assert "X-Session-ID" not in backends["tiny-a"].seen[-1]["headers"]


def test_default_model_takes_requests_that_name_none(backends):
    config = {"models": {"tiny-a": {"url": backends["tiny-a"].url}, "tiny-b": {"url": backends["tiny-b"].url}}, "default_model": "tiny-b"}
    with FrontDoor(config) as door:
        status, headers, dummy = call(door, "POST", "/v1/completions", b'{"prompt": "x"}', headers={})
        assert status == 200 and headers["X-Backend"] == "tiny-b"
        # require_bearer is off here: no Authorization header reaches the backend, and none is refused.
        assert "Authorization" not in backends["tiny-b"].seen[-1]["headers"]
        assert call(door, "POST", "/v1/completions", b'{"model": "tiny-c"}', headers={})[0] == 404


def test_the_health_check_of_the_collection_passes_through_the_front_door(door):
    """vllm_health's own check (module_utils/_health) against the shared endpoint: /health is not routed (plain 404),
    /v1/models lists the model, a one-token completion naming it is answered by that model."""
    from ansible_collections.llmserve.k3s.plugins.module_utils import _health
    result = _health.check_once(_health.http_fetch, door.url, model="tiny-b", api_key=KEY, check_metrics=False)
    assert result["status"] == "ready", result
    assert set(result["models"]) >= {"tiny-a", "tiny-b", "multi"}
    result = _health.check_once(_health.http_fetch, door.url, model="tiny-b", api_key=None, check_metrics=False)
    assert result["status"] != "ready" and "none was given" in result["msg"], result


def test_headers_aliasing_identity_headers_are_never_forwarded(door, backends):
    """X_Forwarded_User / X.Forwarded.User would read as X-Forwarded-User to a backend that folds '_' and '.'."""
    spoof = dict(AUTH, **{"X_Forwarded_User": "admin", "X.Forwarded.Email": "root@x", "X_Real_Ip": "10.0.0.1",
                          "X_Custom_Thing": "kept", "X-Forwarded-Proto": "https"})
    status, dummy, dummy = call(door, "POST", "/models/tiny-a/v1/completions", b'{"model": "tiny-a"}', headers=spoof)
    assert status == 200
    seen = {k.lower(): v for k, v in backends["tiny-a"].seen[-1]["headers"].items()}
    assert not any(k in seen for k in ("x_forwarded_user", "x.forwarded.email", "x_real_ip"))
    assert seen["x_custom_thing"] == "kept" and seen["x-forwarded-proto"] == "https"
