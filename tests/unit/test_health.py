"""vllm_health's logic (module_utils/_health.py) from recorded real answers of vLLM 0.32 and Traefik v3.

Each case plays a table of (method, path) -> recorded answer through check_once / wait_ready; the answers
live in tests/unit/data/vllm_http/ (see its README for where each comes from).
"""

from __future__ import annotations

import json
import pathlib

import pytest

from ansible_collections.llmserve.k3s.plugins.module_utils import _health

DATA = pathlib.Path(__file__).parent / "data" / "vllm_http"
URL = "http://10.43.0.20:8000"


def recorded(name):
    data = json.loads((DATA / (name + ".json")).read_text())
    return _health.Response(status=data["status"], body=data["body"], headers=data["headers"], kind=data["kind"],
                            elapsed_ms=3.0)


def transport(kind, error="x"):
    return _health.Response(kind=kind, error=error, elapsed_ms=1.0)


HEALTHY = {
    ("GET", "/health"): "vllm_health_200",
    ("GET", "/v1/models"): "vllm_models",
    ("POST", "/v1/completions"): "vllm_completion",
    ("GET", "/metrics"): "vllm_metrics",
}


class Fetch:
    """Answers requests from a table {(method, path): recorded name | Response | [one per call]}."""

    def __init__(self, table, base=URL):
        self.table = dict(table)
        self.base = base
        self.calls = []

    def __call__(self, url, method, headers, body, timeout):
        path = url[len(self.base):]
        self.calls.append((method, path, dict(headers), body))
        answer = self.table[(method, path)]
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        return recorded(answer) if isinstance(answer, str) else answer


def check(table, **kwargs):
    fetch = Fetch(table)
    kwargs.setdefault("model", "tiny-llama")
    return _health.check_once(fetch, URL, **kwargs), fetch


def with_(**changes):
    table = dict(HEALTHY)
    for key, value in changes.items():
        method, path = key.split(" ", 1)
        table[(method, path)] = value
    return table


def test_ready_from_real_vllm_answers():
    result, fetch = check(HEALTHY, api_key="k")
    assert result["status"] == "ready", result["msg"]
    assert result["models"] == ["tiny-llama"]
    assert result["metrics"] == {"running": 0, "waiting": 0, "kv_cache_usage_perc": 0.0}
    assert set(result["latency_ms"]) == {"health", "models", "completion", "metrics"}
    # /health goes without the key; /v1/* carries it.
    auth = {(c[0], c[1]): c[2].get("Authorization") for c in fetch.calls}
    assert auth[("GET", "/health")] is None
    assert auth[("GET", "/v1/models")] == auth[("POST", "/v1/completions")] == "Bearer k"
    completion = [c[3] for c in fetch.calls if c[1] == "/v1/completions"][0]
    assert completion["max_tokens"] == 1 and completion["model"] == "tiny-llama"


def test_probes_can_be_turned_off():
    result, fetch = check(HEALTHY, completion_probe=False, check_metrics=False)
    assert result["status"] == "ready"
    assert [c[1] for c in fetch.calls] == ["/health", "/v1/models"]
    assert result["metrics"] == {}


def test_without_model_the_first_served_one_is_probed():
    result, fetch = check(HEALTHY, model=None)
    assert result["status"] == "ready"
    assert [c[3] for c in fetch.calls if c[1] == "/v1/completions"][0]["model"] == "tiny-llama"


@pytest.mark.parametrize("changes, status, words", [
    # nothing listens (vLLM listens only once loaded)
    ({"GET /health": transport("refused", "[Errno 111] Connection refused")}, "unreachable", ["refused"]),
    ({"GET /health": transport("dns", "[Errno -2] Name or service not known")}, "unreachable", ["resolve", ".svc"]),
    ({"GET /health": transport("tls", "CERTIFICATE_VERIFY_FAILED")}, "unreachable", ["ca_path"]),
    ({"GET /health": transport("connect_timeout")}, "unreachable", ["connect"]),
    # connected, no answer
    ({"GET /health": transport("read_timeout", "no answer within 10s")}, "loading", ["still starting"]),
    # the ingress has no ready pod behind it yet
    ({"GET /health": "traefik_503_no_server"}, "loading", ["no available server", "status.yml"]),
    ({"GET /health": "traefik_502"}, "loading", ["Bad Gateway"]),
    # keys
    ({"GET /v1/models": "vllm_models_401"}, "unauthorized", ["401", "none was given"]),
    ({"GET /health": "traefik_401_basic", "GET /v1/models": "traefik_401_basic"}, "unauthorized", ["proxy"]),
    # throttled by the ingress's rate limit
    ({"GET /v1/models": "traefik_429"}, "rate_limited", ["429", "retry after 2s"]),
    ({"POST /v1/completions": "traefik_429"}, "rate_limited", ["429"]),
    # engine trouble
    ({"GET /health": "vllm_health_503_engine_dead"}, "unhealthy", ["503", "vLLM"]),
    ({"POST /v1/completions": "vllm_completion_500_engine_dead"}, "unhealthy", ["500", "EngineCore"]),
    ({"POST /v1/completions": transport("read_timeout")}, "unhealthy", ["no answer"]),
    # no vLLM behind this ingress path
    ({"GET /health": "traefik_404", "GET /v1/models": "traefik_404"}, "unreachable", ["no route"]),
])
def test_statuses(changes, status, words):
    result, _calls = check(with_(**changes))
    assert result["status"] == status, result["msg"]
    for word in words:
        assert word in result["msg"], (word, result["msg"])


def test_model_missing_names_the_served_models():
    result, fetch = check(HEALTHY, model="llama-3.1-8b")
    assert result["status"] == "model_missing"
    assert "tiny-llama" in result["msg"] and "llama-3.1-8b" in result["msg"]
    assert ("POST", "/v1/completions") not in [(c[0], c[1]) for c in fetch.calls]


def test_completion_404_from_vllm_is_model_missing():
    result, _calls = check(with_(**{"POST /v1/completions": "vllm_completion_wrong_model"}))
    assert result["status"] == "model_missing"
    assert "does not exist" in result["msg"]


def test_ingress_without_health_route_uses_models_as_readiness():
    result, _calls = check(with_(**{"GET /health": "traefik_404", "GET /metrics": "traefik_404"}))
    assert result["status"] == "ready", result["msg"]
    assert "/health is not routed" in result["msg"]
    assert result["metrics"] == {}
    assert any("/metrics not readable (404)" in note for note in result["notes"])


def test_auth_in_front_of_health_retries_with_the_key():
    table = with_(**{"GET /health": ["traefik_401_basic", "vllm_health_200"]})
    result, fetch = check(table, api_key="k")
    assert result["status"] == "ready"
    assert [c[2].get("Authorization") for c in fetch.calls if c[1] == "/health"] == [None, "Bearer k"]


def test_metrics_of_a_busy_server():
    text = recorded("vllm_metrics_busy").body
    metrics = _health.vllm_metrics(text, "tiny-llama")
    assert metrics["running"] + metrics["waiting"] >= 1
    assert 0.0 < metrics["kv_cache_usage_perc"] <= 1.0


def test_metrics_add_up_engines_and_keep_the_fullest_cache():
    text = "\n".join([
        '# TYPE vllm:num_requests_running gauge',
        'vllm:num_requests_running{engine="0",model_name="a"} 3.0',
        'vllm:num_requests_running{engine="1",model_name="a"} 2.0',
        'vllm:num_requests_running{engine="0",model_name="b"} 7.0',
        'vllm:num_requests_waiting{engine="0",model_name="a"} 4.0',
        'vllm:kv_cache_usage_perc{engine="0",model_name="a"} 0.25',
        'vllm:kv_cache_usage_perc{engine="1",model_name="a"} 0.5',
    ])
    assert _health.vllm_metrics(text, "a") == {"running": 5, "waiting": 4, "kv_cache_usage_perc": 0.5}
    assert _health.vllm_metrics(text, None)["running"] == 12


def test_metrics_of_older_vllm_names():
    text = 'vllm:gpu_cache_usage_perc{model_name="m"} 0.125\nvllm:num_requests_waiting{model_name="m"} 2\n'
    assert _health.vllm_metrics(text, "m") == {"waiting": 2, "kv_cache_usage_perc": 0.125}


def test_prometheus_labels_with_escapes():
    samples = _health.parse_prometheus('x{a="q\\"uote",b="c,d"} 1.5 1700000000\nbad line\n# c\ny 2\n')
    assert samples["x"] == [({"a": 'q"uote', "b": "c,d"}, 1.5)]
    assert samples["y"] == [({}, 2.0)]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def wait(table, **kwargs):
    clock = Clock()
    fetch = Fetch(table)
    kwargs.setdefault("model", "tiny-llama")
    return _health.wait_ready(fetch, URL, clock=clock, sleep=clock.sleep, **kwargs), fetch


def test_waits_while_the_server_starts():
    refused = transport("refused")
    result, _calls = wait(with_(**{"GET /health": [refused, refused, refused, "vllm_health_200"]}), timeout=60, interval=5)
    assert result["ready"] and result["status"] == "ready"
    assert result["checks"] == 4 and result["waited_s"] == 15.0


def test_gives_up_with_timeout_and_the_last_status():
    result, _calls = wait(with_(**{"GET /health": transport("refused")}), timeout=12, interval=5)
    assert result["status"] == "timeout" and not result["ready"]
    assert result["last_status"] == "unreachable"
    assert result["checks"] == 3 and "not ready after 12s" in result["msg"]


@pytest.mark.parametrize("changes, status", [
    ({"GET /v1/models": "vllm_models_401"}, "unauthorized"),
    ({}, "model_missing"),
])
def test_does_not_wait_for_what_waiting_cannot_fix(changes, status):
    result, _calls = wait(with_(**changes), model="nope" if status == "model_missing" else "tiny-llama", timeout=600)
    assert result["status"] == status and result["checks"] == 1


def test_single_check_when_timeout_is_zero():
    result, _calls = wait(with_(**{"GET /health": transport("refused")}), timeout=0)
    assert result["status"] == "unreachable" and result["checks"] == 1 and result["last_status"] == "unreachable"


@pytest.mark.parametrize("url, expected", [
    ("http://10.43.0.20:8000", "http://10.43.0.20:8000"),
    ("http://10.43.0.20:8000/", "http://10.43.0.20:8000"),
    ("http://10.43.0.20:8000/v1", "http://10.43.0.20:8000"),
    ("https://llm.example/models/llama-3.1-8b/v1/", "https://llm.example/models/llama-3.1-8b"),
])
def test_normalize_url(url, expected):
    assert _health.normalize_url(url) == expected


@pytest.mark.parametrize("url, words", [
    ("", "empty"),
    ("10.43.0.20:8000", "not an http(s) URL"),
    ("ftp://x/", "not an http(s) URL"),
    ("http://x:8000/?a=1", "query"),
])
def test_bad_url_names_the_problem(url, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        _health.normalize_url(url)


@pytest.mark.parametrize("timeout, interval, headers, words", [
    (-1, 5, {}, "timeout is -1"),
    (0, 0, {}, "interval is 0"),
    (0, 5, {"Host": 1}, "headers['Host']"),
])
def test_bad_arguments_name_the_argument(timeout, interval, headers, words):
    errors = _health.validate_args(timeout, interval, headers)
    assert any(words in error for error in errors), errors


def test_statuses_are_the_documented_ones():
    from ansible_collections.llmserve.k3s.plugins.modules import vllm_health
    documented = vllm_health.RETURN.split("status:", 1)[1].split("last_status:", 1)[0]
    for status in _health.STATUSES:
        assert "V(%s)" % status in documented


# --- The client address Traefik recorded (the front door's X-Llmserve-Client-Address on /v1/models). ---

def models_with_client(address):
    """vLLM's recorded /v1/models answer as the front door passes it on, with the address Traefik recorded."""
    answer = recorded("vllm_models")
    answer.headers["x-llmserve-client-address"] = address
    return answer


def test_the_check_returns_the_client_address_traefik_recorded():
    result, dummy = check(with_(**{"GET /v1/models": models_with_client("203.0.113.7")}), api_key="k")
    assert result["status"] == "ready" and result["client_address"] == "203.0.113.7"
    result, dummy = check(HEALTHY, api_key="k")
    assert result["client_address"] is None  # straight to vLLM: no front door, no header


NODES = ["192.168.1.20", "192.168.1.21"]
LAPTOP = ["192.168.1.50", "127.0.0.1"]


@pytest.mark.parametrize("recorded_address,own,level", [
    ("192.168.1.50", LAPTOP, None),            # externalTrafficPolicy Local: Traefik saw the laptop itself
    ("203.0.113.7", LAPTOP, None),             # a NAT router between: not the cluster's doing
    ("10.42.0.1", LAPTOP, "warning"),          # Cluster policy, kube-proxy masquerade to cni0 (k3s' flannel)
    ("10.42.1.0", LAPTOP, "warning"),          # ... through flannel.1 to a Traefik on another node
    ("10.42.0.9", LAPTOP, "warning"),          # a svclb pod's address (ServiceLB's hostPort path)
    ("10.43.0.10", LAPTOP, "warning"),         # the service network
    ("192.168.1.21", LAPTOP, "warning"),       # a node's own address
    ("10.42.0.1", ["192.168.1.20"], "note"),   # the check ran on a node: kube-proxy rewrites it whatever the policy
    ("192.168.1.20", ["192.168.1.20"], None),  # ... and sees its own address: nothing to say
    ("not-an-address", LAPTOP, None),
    ("", LAPTOP, None),
    (None, LAPTOP, None),
    ("fd00::1", LAPTOP, None),                 # IPv6 client, IPv4 networks
])
def test_a_cluster_internal_client_address_is_a_warning_naming_the_fix(recorded_address, own, level):
    finding = _health.client_address_finding(recorded_address, NODES, _health.K3S_INTERNAL_NETWORKS, own)
    if level is None:
        assert finding is None
        return
    assert finding["level"] == level and finding["address"] == recorded_address
    if level == "warning":
        assert "ingress_traefik_external_traffic_policy: Local" in finding["msg"]
    else:
        assert "outside the cluster" in finding["msg"]


def test_other_cluster_networks_can_be_given():
    assert _health.client_address_finding("10.42.0.1", [], ["10.244.0.0/16"], LAPTOP) is None
    assert _health.client_address_finding("10.244.3.4", [], ["10.244.0.0/16"], LAPTOP)["level"] == "warning"
    assert _health.client_address_finding("fd00:42::5", [], ["fd00:42::/56"], LAPTOP)["level"] == "warning"
