"""The cluster's internal keys (Secret llmserve-internal): created once by the apply step, kept by every later run,
replaced only on request, never printed; health.yml sends the internal key to the models' Services.

The tasks (roles/llm_namespace/tasks/internal_key.yml) run for real through kubernetes.core against a writable API
stand-in (tests/lib/kube_api.py: discovery, get, list, create, replace, patch), since no API server runs here; what a
run asked of the API is checked from its request log, what it printed at -vvv from its output.
"""

from __future__ import annotations

import base64
import http.server
import re
import threading

import pytest

from kube_api import KubeApi
from playbook import recap, run_playbook

NS = "llm-serving"
PLAY = """- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: llmserve.k3s.plan
    - ansible.builtin.include_role:
        name: llmserve.k3s.llm_namespace
        tasks_from: internal_key
"""


def _deployment(name, app):
    labels = {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "llmserve"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {"containers": []}}}}


WORKLOADS = [_deployment("vllm-llama-3-1-8b", "vllm"), _deployment("llmserve-frontdoor", "llmserve-frontdoor"),
             _deployment("vllm-llama-3-1-8b-multi-router", "vllm-router")]


@pytest.fixture()
def api():
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    with KubeApi([namespace] + WORKLOADS) as server:
        yield server


def _run(api, tmp_path, check=False, **extra):
    play = tmp_path / "internal_key.yml"
    play.write_text(PLAY)
    extra_vars = {"llmserve_kubeconfig": api.kubeconfig(tmp_path), "llmserve_apply": True, **extra}
    return run_playbook(str(play), "inventories/workstation", extra_vars=extra_vars, check=check, extra_args=["-vvv"])


def _keys(api):
    secret = api.get("Secret", NS, "llmserve-internal")
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}, secret


def _printed(output, keys):
    """Keys found in the output, as they are or base64-encoded (how a Secret's data comes back from the API)."""
    return [k for k in keys if k in output or base64.b64encode(k.encode()).decode() in output]


def _writes(api, kind):
    """Writes that change something (not dry runs: check mode asks the API server to validate only)."""
    return [(m, p) for m, p, q in api.requests if m in ("POST", "PUT", "PATCH", "DELETE") and "/%s" % kind in p
            and q.get("dryRun") != "All"]


def _restarted(api):
    return sorted(name for name in (d["metadata"]["name"] for d in WORKLOADS)
                  if "llmserve.io/internal-key-rotated-at" in
                  (api.get("Deployment", NS, name)["spec"]["template"]["metadata"].get("annotations") or {}))


def test_created_once_then_kept(api, tmp_path):
    first = _run(api, tmp_path)
    assert first.returncode == 0, first.stdout[-4000:]
    keys, secret = _keys(api)
    assert sorted(keys) == ["signing-key", "vllm-api-key"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", k) for k in keys.values()) and keys["vllm-api-key"] != keys["signing-key"]
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/part-of": "llmserve", "app.kubernetes.io/managed-by": "llmserve.k3s"}
    assert _printed(first.stdout, keys.values()) == []
    assert _writes(api, "secrets") == [("POST", "/api/v1/namespaces/%s/secrets" % NS)]
    assert _restarted(api) == []  # nothing ran with a key yet that could be out of date

    api.requests.clear()
    second = _run(api, tmp_path)
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second.stdout)["changed"] == 0
    assert _writes(api, "secrets") == [] and _keys(api)[0] == keys
    assert _printed(second.stdout, keys.values()) == []


def test_rotation_replaces_both_keys_and_restarts_their_readers(api, tmp_path):
    # The Secret as the first run leaves it (test_created_once_then_kept runs that first run).
    labels = {"app.kubernetes.io/part-of": "llmserve", "app.kubernetes.io/managed-by": "llmserve.k3s"}
    api._store({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "llmserve-internal", "namespace": NS, "labels": labels},
                "stringData": {"vllm-api-key": "a1" * 32, "signing-key": "b2" * 32}})
    old, dummy = _keys(api)
    rotated = _run(api, tmp_path, llmserve_internal_key_rotate=True)
    assert rotated.returncode == 0, rotated.stdout[-4000:]
    new, dummy = _keys(api)
    assert sorted(new) == ["signing-key", "vllm-api-key"]
    assert new["vllm-api-key"] != old["vllm-api-key"] and new["signing-key"] != old["signing-key"]
    assert _printed(rotated.stdout, list(old.values()) + list(new.values())) == []
    # The models and the front door read the keys at start; the router passes the front door's header on.
    assert _restarted(api) == ["llmserve-frontdoor", "vllm-llama-3-1-8b"]


def test_check_mode_and_render_only_write_nothing(api, tmp_path):
    checked = _run(api, tmp_path, check=True)
    assert checked.returncode == 0, checked.stdout[-4000:]
    assert api.get("Secret", NS, "llmserve-internal") is None and _writes(api, "secrets") == []
    api.requests.clear()
    rendered = _run(api, tmp_path, llmserve_apply=False)
    assert rendered.returncode == 0 and api.requests == []


class _Endpoint:
    """An HTTP server that records the Authorization header of each request and answers only /health."""

    def __init__(self):
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 (http.server's naming)
                seen.append((self.path, self.headers.get("Authorization")))
                status = 200 if self.path == "/health" else 401
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET  # noqa: N815

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]

    def keys(self):
        return {auth for path, auth in self.seen if path.startswith("/v1/")}


@pytest.mark.parametrize("given", [False, True])
def test_health_sends_the_internal_key_to_the_service_and_the_users_key_through_the_ingress(api, tmp_path, given):
    """health.yml: vLLM accepts only the internal key (read from the Secret, or given); the ingress wants a user's key."""
    internal, user = "0123456789abcdef" * 4, "sk-health-user-key-0000000000000"
    api._store({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "llmserve-internal", "namespace": NS},
                "stringData": {"vllm-api-key": "f" * 64 if given else internal, "signing-key": "e" * 64}})
    service, ingress = _Endpoint(), _Endpoint()
    try:
        extra = {"llmserve_kubeconfig": api.kubeconfig(tmp_path),
                 "llmserve_models": [{"name": "tiny-llama", "model": "local/tiny", "params_b": 0.01}],
                 "llmserve_health_urls": {"tiny-llama": {"service": service.url, "ingress": ingress.url}},
                 "llmserve_health_endpoints": ["service", "ingress"], "llmserve_health_api_key": user,
                 "llmserve_health_completion_probe": False}
        if given:
            extra["llmserve_health_internal_key"] = internal
        result = run_playbook("health.yml", "inventories/workstation", extra_vars=extra, extra_args=["-vvv"])
    finally:
        service.server.shutdown()
        ingress.server.shutdown()
    assert result.returncode != 0  # both answer 401: the run reports them, after sending the keys
    assert service.keys() == {"Bearer " + internal} and ingress.keys() == {"Bearer " + user}, result.stdout[-3000:]
    assert _printed(result.stdout, [internal, user]) == []
    read = [p for m, p, q in api.requests if m == "GET" and "/secrets" in p]
    assert bool(read) is not given
