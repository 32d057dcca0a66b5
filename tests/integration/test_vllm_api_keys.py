"""Real vLLM (CPU, the pinned 0.32 line) started with the key environment the role renders: the internal key only.

The model pod's env takes VLLM_API_KEY from the Secret llmserve-internal (key vllm-api-key) and its args carry no
--api-key: vLLM 0.32 reads the variable when the flag is absent (vllm/entrypoints/serve/middleware/register.py,
`args.api_key or [envs.VLLM_API_KEY]`). Kubernetes cannot run here: the test renders the Deployment with the real
playbook (with users' API keys configured, which must not reach the models), resolves its Secret-backed variables
from a Secret as the apply step writes it, and starts vLLM with exactly those variables and no key argument.
"""

from __future__ import annotations

import pathlib
import urllib.error

import pytest
import yaml

from playbook import render
from vllm_server import VllmServer

INTERNAL = "5f0c2d8e9a7b4c1d3e6f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d"
SECRETS = {"llmserve-internal": {"vllm-api-key": INTERNAL, "signing-key": "a" * 64}}
USER_KEYS = ["sk-llm-int-key-0000000000000000", "sk-llm-int-key-1111111111111111"]


@pytest.fixture(scope="module")
def internal_server(tmp_path_factory):
    dest = tmp_path_factory.mktemp("keys")
    result = render(dest, extra_vars={"llmserve_api_keys": USER_KEYS}, tags="models")
    assert result.returncode == 0, result.stdout[-3000:]
    deployment = yaml.safe_load((dest / "models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml").read_text())
    (ctr,) = deployment["spec"]["template"]["spec"]["containers"]
    assert not [a for a in ctr["args"] if "api-key" in a.replace("_", "-")]
    env = {e["name"]: SECRETS[e["valueFrom"]["secretKeyRef"]["name"]][e["valueFrom"]["secretKeyRef"]["key"]]
           for e in ctr["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert env == {"VLLM_API_KEY": INTERNAL}
    with VllmServer("tiny-llama", env=env) as server:
        server.wait_ready(300)
        yield server


def _status(server, path, key=None):
    try:
        server.get_json(path, api_key=key)
        return 200
    except urllib.error.HTTPError as err:
        return err.code


def test_the_internal_key_is_accepted(internal_server):
    assert _status(internal_server, "/v1/models", INTERNAL) == 200


def test_users_keys_and_no_key_are_refused_and_health_stays_open(internal_server):
    assert _status(internal_server, "/v1/models") == 401
    for key in USER_KEYS + [INTERNAL[:-1], INTERNAL + " " + INTERNAL]:
        assert _status(internal_server, "/v1/models", key) == 401
    assert internal_server.health_status() == 200  # the kubelet's probes need no key


def test_the_key_is_not_in_the_process_arguments_or_the_log(internal_server):
    """What `ps` on the node shows: the command line of the server and of every process it started."""
    pids = [internal_server.proc.pid] + [int(p) for p in _children(internal_server.proc.pid)]
    for pid in pids:
        cmdline = pathlib.Path("/proc/%d/cmdline" % pid).read_bytes().decode(errors="replace")
        assert INTERNAL not in cmdline, pid
    assert INTERNAL not in internal_server.log_path.read_text(errors="replace")


def _children(pid):
    out = []
    for task in pathlib.Path("/proc/%d/task" % pid).iterdir():
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        out += children + [c for child in children for c in _children(int(child))]
    return out
