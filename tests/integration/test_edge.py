"""The edge tried as an attacker would, every hop real: Traefik 3.7 (the pinned k3s release's, loading the rendered
route, middlewares and forwardAuth through its kubernetescrd provider from the API stand-in) -> the gateway (two
front doors, rendered config) -> vLLM on CPU, or the vllm-router in front of two vLLMs.

What reached a backend is read from the backend itself: each vLLM's and the router's own access log (a request that
was refused must leave no line there), not only from the status the client saw. Attack requests are sent with
http.client and the raw target (no client-side normalisation of dot segments or escapes).

Not real here: k3s (the stand-in serves the objects; EndpointSlices point the Services at local processes), cluster
DNS (the forwardAuth address's Service name is replaced by the local front door's address), NetworkPolicies (render
tests evaluate them).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request

import pytest

from frontdoor import INTERNAL_KEY
from traefik_stack import SERVING_KEY, SERVING_KEYS, SERVING_MODELS

MODELS = [m["name"] for m in SERVING_MODELS]
SECOND_KEY = SERVING_KEYS[1]["key"]
ACCESS_LINE = re.compile(r'"(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS) (\S+) HTTP/1\.[01]"')


def access_lines(serving):
    """{log file: [(method, path)]}: every request line each vLLM and the router logged, but GET /health (the front
    doors' health checks)."""
    logs = [server.log_path for server in serving.vllms.values()] + [serving.router.log_path]
    lines = {}
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            found = ACCESS_LINE.search(line)
            if found and found.group(2) != "/health":
                lines.setdefault(path.name, []).append((found.group(1), found.group(2)))
    return lines


def arrivals_since(serving, before):
    """The request lines each backend logged after `before` (an earlier access_lines)."""
    time.sleep(1.0)  # vLLM writes its access line when the answer ends
    after = access_lines(serving)
    return {log: lines[len(before.get(log, [])):] for log, lines in after.items() if lines[len(before.get(log, [])):]}


@contextlib.contextmanager
def nothing_arrives(serving):
    """Asserts that no backend logged a request (other than health checks) while the block ran."""
    time.sleep(0.3)
    before = access_lines(serving)
    yield
    assert arrivals_since(serving, before) == {}


def raw_request(serving, method, target, body=b"", headers=None):
    """One HTTPS request with the target exactly as given; a 429 of the limits is waited out and sent again (the
    attack tables send more than one identity's burst, and what is under test is the answer behind the limits)."""
    for dummy in range(10):
        status, answer, raw = _raw_request(serving, method, target, body, headers)
        if status != 429:
            break
        time.sleep(float(answer.get("Retry-After", "1")))
    return status, answer, raw


def _raw_request(serving, method, target, body=b"", headers=None):
    conn = serving.client.connection(timeout=30)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", serving.host)
        for key, value in dict({"Authorization": "Bearer " + SERVING_KEY}, **(headers or {})).items():
            conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Content-Type", "application/json")
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


TRAVERSALS = ["..%2Finvocations", "..%2finvocations", "%2E%2E%2Finvocations", "%2e%2e/invocations", "..%252Finvocations",
              "..%5Cinvocations", "..\\invocations", "../invocations", "..%2F..%2Ftokenize",
              "..%2F..%2Fmetrics", "..%2F..%2Fpooling", "..%2F..%2Fadd_worker?url=https://evil.example",
              "completions/", "completions?x=1", "completions%00", "completions;x",
              "COMPLETIONS", "load_lora_adapter", "tokenize", "..%2F..%2Finvocations%3F"]
PREFIXES = ["/v1/", "/models/tiny-a/v1/", "/models/tiny-multi/v1/", "/ab/v1/"]
ATTACKS = [p + t for p in PREFIXES for t in TRAVERSALS] + [
    "/v1%2Fcompletions", "/models/tiny-a%2Fv1/completions", "/models/..%2Fv1/completions",
    "/models/tiny-multi/add_worker?url=https://evil.example", "/add_worker?url=https://evil.example", "/invocations",
    "/tokenize", "/pooling", "/metrics", "/health", "/score", "/v1/../invocations"]


@pytest.mark.parametrize("method", ["POST", "GET", "PUT", "DELETE"])
def test_traversals_and_backend_endpoints_are_refused_before_any_backend(serving, method):
    body = json.dumps({"model": "tiny-a", "prompt": "hi", "max_tokens": 1,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    answers, passed = {}, {}
    with nothing_arrives(serving):
        for target in ATTACKS:
            status, headers, raw = raw_request(serving, method, target, body)
            answers[target] = status
            if status not in (400, 404, 405):
                passed[target] = (status, raw[:200])
    assert not passed, passed
    counts = ", ".join(f"{s} x{list(answers.values()).count(s)}" for s in sorted(set(answers.values())))
    print(f"\n{method}: {len(answers)} attack paths: {counts}")


# Paths Traefik itself cleans (sanitizePath, RFC 3986 dot segments and doubled slashes) before any router: what
# arrives is the clean path, an allowed endpoint, and nothing else.
CLEANED = ["/v1/./completions", "/v1//completions", "/v1/%2e/completions", "//v1/completions",
           "/models/tiny-a/v1/./completions", "/models/tiny-a/v1//completions", "/models/tiny-a/v1/%2e/completions"]


def test_paths_traefik_cleans_arrive_as_the_clean_api_path_only(serving):
    body = json.dumps({"model": "tiny-a", "prompt": "hi", "max_tokens": 1}).encode()
    time.sleep(0.3)
    before = access_lines(serving)
    for target in CLEANED:
        status, dummy, raw = raw_request(serving, "POST", target, body)
        assert status == 200 and json.loads(raw)["model"] == "tiny-a", (target, raw[:200])
    arrived = arrivals_since(serving, before)
    assert list(arrived.values()) == [[("POST", "/v1/completions")] * len(CLEANED)], arrived


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer not-a-real-key"},
                                     {"Authorization": "Bearer sk-llmserve-key-of-another-cluster-0000"},
                                     {"Authorization": "bearer " + SERVING_KEY}, {"Authorization": "Basic c2VydmluZzp4"},
                                     {"Authorization": "Bearer " + INTERNAL_KEY},
                                     {"X-Llmserve-User": "serving-user", "X-Llmserve-Groups": "lab", "Authorization": ""}])
def test_a_wrong_key_is_an_openai_401_at_the_gateway_and_nothing_arrives(serving, headers):
    """A bogus key, another cluster's key, a lowercase scheme, the internal key itself, a forged identity header."""
    body = json.dumps({"model": "tiny-a", "prompt": "hi", "max_tokens": 1}).encode()
    with nothing_arrives(serving):
        for target in ("/v1/completions", "/models/tiny-multi/v1/completions", "/v1/models"):
            status, answer, raw = raw_request(serving, "GET" if target.endswith("models") else "POST", target, body, headers)
            assert status == 401, (target, status, raw)
            error = json.loads(raw)["error"]
            assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error", error


def test_vllm_accepts_only_the_internal_key(serving):
    """Straight to a model's port (what a pod inside the cluster could try): a user's key and no key get 401."""
    server = serving.vllms["tiny-a"]
    body = json.dumps({"model": "tiny-a", "prompt": "hi", "max_tokens": 1}).encode()
    for key in (None, SERVING_KEY, "not-a-real-key"):
        request = urllib.request.Request(server.url + "/v1/completions", data=body,
                                         headers={"Content-Type": "application/json",
                                                  **({"Authorization": "Bearer " + key} if key else {})})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 401
    request = urllib.request.Request(server.url + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + INTERNAL_KEY})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200


def test_the_backend_gets_the_internal_key_and_no_identity_or_user_key(serving):
    """The request vLLM receives: the internal key replaced the user's, identity headers are gone (checked through a
    completion's success with the internal key only, and the front door's forward rules in the unit tests)."""
    status, headers, raw = raw_request(serving, "POST", "/v1/completions",
                                       json.dumps({"model": "tiny-b", "prompt": "hi", "max_tokens": 1}).encode(),
                                       {"X-Llmserve-User": "admin", "X-Llmserve-Signature": "00"})
    assert status == 200 and json.loads(raw)["model"] == "tiny-b", raw


def test_every_refusal_is_in_openai_format(serving):
    """Unknown model, unknown path under /models/<name>/v1/, a wrong method, a body over the limit."""
    cases = [("POST", "/v1/completions", {"model": "nope"}, 404, "model_not_found"),
             ("POST", "/models/nope/v1/completions", {"model": "x"}, 404, "model_not_found"),
             ("POST", "/models/tiny-a/v1/tokenize", {"model": "tiny-a"}, 404, "not_found"),
             ("GET", "/v1/completions", None, 405, "method_not_allowed"),
             ("POST", "/v1/chat/completions", {"messages": []}, 400, "missing_model")]
    for method, path, body, status, code in cases:
        response = serving.client.request(method, path, body)
        assert response.status == status, (path, response)
        error = response.json()["error"]
        assert error["code"] == code and {"message", "type", "param"} <= set(error), error


def test_a_client_address_reaches_the_gateway_for_health_yml(serving):
    response = serving.client.request("GET", "/v1/models", source_ip="127.0.0.61")
    assert response.status == 200 and response.headers["X-Llmserve-Client-Address"] == "127.0.0.61", response.headers


def test_in_basic_mode_too_nothing_but_the_api_reaches_a_backend(serving_basic):
    """The same attack table through BasicAuth then the gateway (stand-in backends record every request)."""
    import base64

    from traefik_stack import BASIC_USER
    user = base64.b64encode(f"{BASIC_USER['name']}:{BASIC_USER['password']}".encode()).decode()
    before = {name: list(echo.seen) for name, echo in serving_basic.echoes.items()}
    body = json.dumps({"model": "tiny-a", "prompt": "hi"}).encode()
    for target in ATTACKS:
        status, dummy, raw = raw_request(serving_basic, "POST", target, body, {"Authorization": "Basic " + user})
        assert status in (400, 404, 405), (target, status, raw[:200])
    assert {name: list(echo.seen) for name, echo in serving_basic.echoes.items()} == before
    status, dummy, raw = raw_request(serving_basic, "POST", "/v1/completions", body, {"Authorization": "Basic " + user})
    assert status == 200 and serving_basic.echoes["tiny-a"].seen[-1] == ("POST", "/v1/completions"), raw[:200]
