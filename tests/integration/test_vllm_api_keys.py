"""Real vLLM (CPU, the pinned 0.32 line) started with the API-key arguments and environment the role renders.

The model pod's args end with `--api-key $(VLLM_API_KEY) $(VLLM_API_KEY_1) ...` and its env takes those variables
from the vllm-api-keys Secret. Kubernetes cannot run here: the test renders the Deployment with the real playbook,
expands $(VAR) from the keys the way the kubelet does, and starts vLLM with exactly those arguments and variables.
"""

from __future__ import annotations

import re
import urllib.error

import pytest
import yaml

from playbook import render
from vllm_server import VllmServer

KEYS = ["sk-llm-int-key-0000000000000000", "sk-llm-int-key-1111111111111111", "sk-llm-int-key-2222222222222222"]


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    dest = tmp_path_factory.mktemp("keys")
    result = render(dest, extra_vars={"llmserve_api_keys": KEYS}, tags="models")
    assert result.returncode == 0, result.stdout[-3000:]
    deployment = yaml.safe_load((dest / "models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml").read_text())
    (ctr,) = deployment["spec"]["template"]["spec"]["containers"]
    secret = {"key-%d" % i: key for i, key in enumerate(KEYS)}
    env = {e["name"]: secret[e["valueFrom"]["secretKeyRef"]["key"]] for e in ctr["env"] if e["name"].startswith("VLLM_API_KEY")}
    args = ctr["args"][ctr["args"].index("--api-key"):]
    expanded = [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], a) for a in args]
    with VllmServer("tiny-llama", extra_args=expanded, env=env) as server:
        server.wait_ready(300)
        yield server


def _status(server, path, key=None):
    try:
        server.get_json(path, api_key=key)
        return 200
    except urllib.error.HTTPError as err:
        return err.code


def test_every_rendered_key_is_accepted(keyed_server):
    for key in KEYS:
        assert _status(keyed_server, "/v1/models", key) == 200


def test_requests_without_a_valid_key_are_refused_and_health_stays_open(keyed_server):
    assert _status(keyed_server, "/v1/models") == 401
    assert _status(keyed_server, "/v1/models", "sk-llm-int-key-not-one-of-them") == 401
    assert _status(keyed_server, "/v1/models", KEYS[0] + " " + KEYS[1]) == 401
    assert keyed_server.health_status() == 200  # the kubelet's probes need no key
