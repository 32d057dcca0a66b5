"""llmserve.k3s.vllm_health and playbooks/health.yml, run through Ansible against a real vLLM 0.32 on CPU.

Two real servers: the session's shared one (tests/integration/conftest.py) and, for the API key and the
killed engine, a dedicated one started with --api-key (its startup is also what the wait test waits for).
What cannot run here: a GPU, a Kubernetes Service (ClusterIP lookup) and Traefik in front; the ingress URL
form is exercised against the same server, and the proxies' own answers are covered by the unit tests.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from playbook import ROOT, run_playbook
from processes import free_port
from vllm_server import VllmServer

KEY = "test-key-7f3a"


def run_module(**args):
    """Run the module with the ansible CLI (ad-hoc on localhost); returns its result dict."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".venv" / "collections"))
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-c", "local",
           "-i", "localhost,", "-e", "ansible_python_interpreter=" + sys.executable,
           "-m", "llmserve.k3s.vllm_health", "-a", json.dumps(args)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    try:
        output = json.loads(proc.stdout)
        return output["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError("no module result:\n%s\n%s" % (proc.stdout[-3000:], proc.stderr[-3000:])) from None


def test_ready_with_the_model_listed_and_a_real_completion(vllm_server):
    result = run_module(url=vllm_server.url, model="tiny-llama")
    assert result["status"] == "ready" and result["ready"] is True, result["msg"]
    assert not result.get("failed") and result["changed"] is False
    assert result["models"] == ["tiny-llama"]
    assert 0 < result["latency_ms"]["completion"] < 10000
    assert set(result["metrics"]) == {"running", "waiting", "kv_cache_usage_perc"}
    assert "completion" in result["msg"]


def test_queue_and_kv_cache_under_load(vllm_server):
    """Eight clients keep long completions in flight: /metrics shows them running or waiting, KV cache in use."""
    stop = threading.Event()
    produced = []

    def generate():
        body = json.dumps({"model": "tiny-llama", "prompt": "hello", "max_tokens": 240, "ignore_eos": True}).encode()
        while not stop.is_set():
            request = urllib.request.Request(vllm_server.url + "/v1/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=300) as answer:
                produced.append(json.loads(answer.read())["usage"]["completion_tokens"])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        workers = [pool.submit(generate) for worker in range(8)]
        time.sleep(1.0)
        # A single reading can fall between two requests on a busy machine: read up to five times under load.
        for _attempt in range(5):
            result = run_module(url=vllm_server.url, model="tiny-llama", completion_probe=False)
            busy = result.get("metrics") or {}
            if busy.get("running", 0) + busy.get("waiting", 0) >= 1 and busy.get("kv_cache_usage_perc", 0) > 0:
                break
        stop.set()
        for worker in workers:
            worker.result()
    assert produced and set(produced) == {240}
    assert result["status"] == "ready", result["msg"]
    assert result["metrics"]["running"] + result["metrics"]["waiting"] >= 1, result["metrics"]
    assert result["metrics"]["kv_cache_usage_perc"] > 0, result["metrics"]


def test_model_missing_names_the_real_models(vllm_server):
    result = run_module(url=vllm_server.url + "/v1", model="llama-3.1-8b", fail_on_unready=False)
    assert result["status"] == "model_missing" and result["ready"] is False
    assert "tiny-llama" in result["msg"] and "llama-3.1-8b" in result["msg"]
    assert result["models"] == ["tiny-llama"]


def test_not_ready_fails_the_task_by_default(vllm_server):
    result = run_module(url=vllm_server.url, model="llama-3.1-8b")
    assert result["failed"] is True and result["status"] == "model_missing"


def test_unreachable_on_a_closed_port():
    result = run_module(url="http://127.0.0.1:%d" % free_port(), model="tiny-llama", fail_on_unready=False)
    assert result["status"] == "unreachable" and "connection refused" in result["msg"]


def test_loading_when_the_port_accepts_but_does_not_answer():
    """A listening socket that never answers (what a proxy or a server still starting up holds open).

    vLLM 0.32 itself listens only once the model is loaded (a starting server refuses connections; the
    wait test below covers that); this drives the module's read-timeout path through Ansible.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        started = time.monotonic()
        result = run_module(url="http://127.0.0.1:%d" % port, fail_on_unready=False)
    assert result["status"] == "loading", result["msg"]
    assert 9 < time.monotonic() - started < 60


def test_bad_arguments_fail_before_any_request():
    result = run_module(url="127.0.0.1:8000")
    assert result["failed"] and "not an http(s) URL" in result["msg"]
    result = run_module(url="http://127.0.0.1:1", timeout=-5)
    assert result["failed"] and "timeout is -5" in result["msg"]
    result = run_module(url="https://127.0.0.1:1", ca_path="/nonexistent/ca.pem")
    assert result["failed"] and "ca_path /nonexistent/ca.pem cannot be used" in result["msg"]


def _entry(name, **fields):
    """A catalog entry the plan accepts (the playbook plans the catalog before it checks anything)."""
    return {"name": name, "model": "local/tiny", "params_b": 0.01, **fields}


def test_health_playbook_bad_settings_name_the_variable():
    result = run_playbook("health.yml", "inventories/workstation", extra_vars={
        "llmserve_models": [_entry("tiny-llama")], "llmserve_health_endpoints": ["pod"]})
    assert result.returncode != 0
    assert "llmserve_health_endpoints=['pod'] (give service, ingress and/or shared)" in result.stdout


def test_health_playbook_default_service_url_is_the_cluster_dns_name():
    """Without an override the Service is checked at <k8s_name>.<namespace>.svc:8000 (resolves only in-cluster).

    The ClusterIP lookup (kubernetes.core.k8s_info, the default) needs a cluster and is not run here.
    """
    result = run_playbook("health.yml", "inventories/workstation", extra_vars={
        "llmserve_models": [_entry("tiny.llama")], "llmserve_health_endpoints": ["service"],
        "llmserve_health_service_address": "dns", "llmserve_namespace": "llm-test"})
    assert result.returncode != 0
    assert "tiny.llama  service   unreachable  -" in result.stdout
    assert "http://vllm-tiny-llama.llm-test.svc:8000" in result.stdout
    assert "name does not resolve" in result.stdout


def _health_playbook(models, urls, endpoints=("service", "ingress")):
    return run_playbook("health.yml", "inventories/workstation", extra_vars={
        "llmserve_models": models, "llmserve_health_urls": urls, "llmserve_health_endpoints": list(endpoints)})


def test_health_playbook_table_and_failure(vllm_server):
    closed = "http://127.0.0.1:%d" % free_port()
    models = [_entry("tiny-llama"), _entry("ghost"), _entry("off", enabled=False)]
    urls = {"tiny-llama": {"service": vllm_server.url, "ingress": vllm_server.url + "/v1"},
            "ghost": {"service": closed, "ingress": closed}, "off": {"service": closed}}
    result = _health_playbook(models, urls)
    out = result.stdout
    assert result.returncode != 0, out[-3000:]
    health_out, dummy, kv_out = out.partition("KV cache, planned vs allocated by vLLM")
    rows = [line.split() for line in health_out.splitlines()]
    rows = [row for row in rows if len(row) > 3 and row[1] in ("service", "ingress")]
    tiny = [row for row in rows if row[0] == "tiny-llama"]
    ghost = [row for row in rows if row[0] == "ghost"]
    assert len(tiny) == 2 and all(row[2] == "ready" and row[4] == "ms" for row in tiny), rows
    assert len(ghost) == 2 and all(row[2] == "unreachable" and row[3] == "-" for row in ghost), rows
    assert not any(row[0] == "off" for row in rows), "a disabled model was checked"
    assert "ghost (service): unreachable" in out
    # The live KV-cache check read what the real server allocated (no sizing for a params_b-only entry: no prediction).
    kv_rows = [line.split() for line in kv_out.splitlines() if line.split()[:1] == ["tiny-llama"]]
    assert kv_rows and all(row[3].isdigit() and int(row[3]) > 0 for row in kv_rows), kv_out[:2000]

    result = _health_playbook([_entry("tiny-llama")], urls, endpoints=["service"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 endpoints ready" in result.stdout


@pytest.fixture(scope="module")
def keyed_server():
    """A second real server with --api-key, started (not yet ready) when the first test needs it.

    VLLM_KEEP_ALIVE_ON_ENGINE_DEATH=1 keeps its API server up after the engine core dies, so the dead engine
    is observable (/health 503) rather than the server exiting at once.
    """
    with VllmServer("tiny-llama", api_key=KEY, env={"VLLM_KEEP_ALIVE_ON_ENGINE_DEATH": "1"}) as server:
        yield server


def test_waits_while_the_server_loads(keyed_server):
    first = run_module(url=keyed_server.url, model="tiny-llama", api_key=KEY, fail_on_unready=False)
    assert first["status"] == "unreachable", "checked before vLLM listens: %s" % first["msg"]
    short = run_module(url=keyed_server.url, model="tiny-llama", api_key=KEY, timeout=3, interval=1,
                       fail_on_unready=False)
    assert short["status"] == "timeout" and short["last_status"] == "unreachable", short["msg"]
    result = run_module(url=keyed_server.url, model="tiny-llama", api_key=KEY, timeout=400, interval=2)
    assert result["status"] == "ready", result["msg"]
    assert result["checks"] > 1 and result["waited_s"] >= 2
    assert KEY not in json.dumps(result), "the key leaked into the result"


def test_unauthorized_without_the_key_ready_with_it(keyed_server):
    keyed_server.wait_ready(300)
    result = run_module(url=keyed_server.url, model="tiny-llama", fail_on_unready=False)
    assert result["status"] == "unauthorized" and "none was given" in result["msg"], result["msg"]
    result = run_module(url=keyed_server.url, model="tiny-llama", api_key="wrong", fail_on_unready=False)
    assert result["status"] == "unauthorized" and "refused" in result["msg"]
    result = run_module(url=keyed_server.url, model="tiny-llama", api_key=KEY)
    assert result["status"] == "ready", result["msg"]


def test_unhealthy_after_the_engine_process_is_killed(keyed_server):
    keyed_server.wait_ready(300)
    killed = keyed_server.kill(engine_only=True)
    assert killed, "no engine core process found"
    deadline = time.monotonic() + 30
    while keyed_server.health_status() == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    result = run_module(url=keyed_server.url, model="tiny-llama", api_key=KEY, fail_on_unready=False)
    assert result["status"] == "unhealthy", result["msg"]
    assert "503" in result["msg"]
