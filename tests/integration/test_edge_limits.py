"""Limits per identity and per address, and a front door that stays up under floods: real Traefik (the pinned k3s
release's) with a bundle rendered with tight limits, its forwardAuth to the real front door (rendered config), and
zero-latency stand-in backends that record what reached them (the limits, not vLLM, are under test here).

Not real here: k3s, cluster DNS (the forwardAuth address is pointed at the local front door), the pod's cgroup memory
limit (the front door's peak resident memory is read from /proc and compared with the rendered limit).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import subprocess
import sys
import threading
import time

import pytest

from frontdoor import identities_file, signed
from k8s_schema import load_bundle
from playbook import render
from traefik_stack import (ADDRESSES, HOST, SERVING_KEYS, SERVING_MODELS, EchoBackend, ServingStack, find,
                           frontdoor_dns, frontdoor_for, frontdoor_services)

MODELS = [m["name"] for m in SERVING_MODELS]
KEYS = SERVING_KEYS
LIMITS = {"ingress_rate_limit": {"average": 2, "period": "1s", "burst": 6},
          "ingress_address_rate_limit": {"average": 5, "period": "1s", "burst": 24, "ip_depth": 0},
          "ingress_in_flight": {"enabled": True, "amount": 2}}


@pytest.fixture(scope="module")
def limited_bundle(tmp_path_factory):
    dest = tmp_path_factory.mktemp("limited") / "bundle"
    result = render(dest, extra_vars={"llmserve_models": SERVING_MODELS, "llmserve_auth_mode": "api-key",
                                      "llmserve_api_keys": KEYS, **LIMITS})
    assert result.returncode == 0, result.stdout[-4000:]
    return load_bundle(dest)


@pytest.fixture(scope="module")
def limited(limited_bundle, serving_pki, serving_logs):
    with contextlib.ExitStack() as stack:
        echoes = {n: stack.enter_context(EchoBackend(n, ADDRESSES["echo"])) for n in MODELS}
        door = stack.enter_context(frontdoor_for(limited_bundle, {n: e.url for n, e in echoes.items()},
                                                 ADDRESSES["frontdoor"], identities=identities_file(KEYS),
                                                 log_dir=serving_logs))
        serving = stack.enter_context(ServingStack(limited_bundle, serving_pki, HOST, frontdoor_services(door),
                                                   serving_logs, dns=frontdoor_dns(limited_bundle, door)))
        serving.frontdoor, serving.echoes = door, echoes
        yield serving


def arrived(stack):
    return sum(len(e.seen) for e in stack.echoes.values())


def key(index):
    return {"Authorization": "Bearer " + KEYS[index]["key"]}


PATHS = ["/v1/models"] + [f"/models/{m}/v1/models" for m in MODELS]


def test_one_identity_is_limited_across_every_model_path_and_another_is_not(limited):
    """20 requests of one key from one address, spread over every model path, as fast as they go: the identity's
    burst (6) and rate pass, the rest are OpenAI 429s with Retry-After; a second key from the same address is
    served at once (its own budget)."""
    statuses, started = [], time.monotonic()
    conn = limited.client.connection(source_ip="127.0.0.31")
    try:
        for index in range(20):
            response = limited.client.request("GET", PATHS[index % len(PATHS)], headers=key(0), conn=conn)
            statuses.append(response.status)
            if response.status == 429:
                error = response.json()["error"]
                assert error["code"] == "rate_limit_exceeded" and response.headers["Retry-After"].isdigit(), response
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    allowed = 6 + 2 * elapsed
    print(f"\none identity, 20 requests in {elapsed:.2f}s over {len(PATHS)} paths: {statuses.count(200)} x 200, "
          f"{statuses.count(429)} x 429 (the limit allows {allowed:.1f})")
    assert set(statuses) == {200, 429}
    assert 6 <= statuses.count(200) <= allowed + 1
    other = limited.client.request("GET", "/v1/models", headers=key(1), source_ip="127.0.0.31")
    assert other.status == 200, other


def test_bogus_keys_from_one_address_share_the_address_budget(limited):
    """40 requests with 20 different bogus keys from one address: 401 while the address's burst lasts, then 429
    before the gateway is asked; no backend sees any; a valid key from that address is limited too, from another
    address it is not."""
    before = arrived(limited)
    statuses = []
    conn = limited.client.connection(source_ip="127.0.0.32")
    try:
        for index in range(40):
            bogus = {"Authorization": "Bearer sk-guess-%02d-0000000000000000" % (index % 20)}
            statuses.append(limited.client.request("GET", "/v1/models", headers=bogus, conn=conn).status)
        blocked = limited.client.request("POST", "/v1/completions", {"model": "tiny-a"}, headers=key(2), conn=conn)
    finally:
        conn.close()
    print(f"\n20 bogus keys x 2 from one address: {statuses.count(401)} x 401, {statuses.count(429)} x 429; "
          f"then a valid key from it: {blocked.status}")
    assert set(statuses) == {401, 429} and statuses.count(401) <= 24 + 5
    assert statuses[-1] == 429 and blocked.status == 429
    assert arrived(limited) == before
    fine = limited.client.request("POST", "/v1/completions", {"model": "tiny-a"}, headers=key(2), source_ip="127.0.0.33")
    assert fine.status == 200, fine


def test_in_flight_counts_per_identity_across_paths(limited):
    """Four slow streams of one identity at once over two paths: 2 run (the in-flight limit), 2 are OpenAI 429s;
    another identity streams meanwhile."""
    body = {"model": "tiny-a", "stream": True, "events": 8, "gap": 0.25}
    barrier = threading.Barrier(5)

    def one(args):
        path, headers, source = args
        conn = limited.client.connection(source_ip=source, timeout=60)
        try:
            conn.connect()
            barrier.wait(30)
            if headers is key(1):
                time.sleep(0.3)
            data = json.dumps(body).encode()
            conn.request("POST", path, body=data, headers=limited.client._headers(headers, data))
            response = conn.getresponse()
            raw = response.read()
            return response.status, raw
        finally:
            conn.close()

    # Identities whose rate budget (burst 6) the tests before left full: 4 requests pass it, the in-flight limit counts.
    time.sleep(3)
    mine = key(2)
    jobs = [("/v1/completions", mine, "127.0.0.34"), ("/models/tiny-b/v1/completions", mine, "127.0.0.34"),
            ("/v1/completions", mine, "127.0.0.34"), ("/models/tiny-b/v1/completions", mine, "127.0.0.34"),
            ("/v1/completions", key(1), "127.0.0.34")]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(one, jobs))
    statuses = [status for status, dummy in results]
    print(f"\nin-flight 2 per identity: {statuses[:4]} for one identity, {statuses[4]} for another")
    assert sorted(statuses[:4]) == [200, 200, 429, 429], results
    assert statuses[4] == 200
    for status, raw in results:
        if status == 200:
            assert raw.rstrip().endswith(b"data: [DONE]"), raw[-200:]
        else:
            assert json.loads(raw)["error"]["code"] == "rate_limit_exceeded"


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise LookupError("no VmHWM")


def memory_limit_mib(bundle):
    (deployment,) = find(bundle, "Deployment", "llmserve-frontdoor")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi"), limit
    return int(limit[:-2])


HEALTH_PROBE = """
import os, sys, time, urllib.request
url, stop_file = sys.argv[1:]
while not os.path.exists(stop_file):
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=5) as answer:
        answer.read()
    print(time.monotonic() - started, flush=True)
    time.sleep(0.05)
"""


def readiness_timeout_s(bundle):
    (deployment,) = find(bundle, "Deployment", "llmserve-frontdoor")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container["readinessProbe"]["timeoutSeconds"]


def test_sixteen_10mib_bodies_stay_within_the_memory_limit_with_health_answering(limited_bundle, serving_logs):
    """The rendered front door alone (the config and memory limit of the bundle), 16 concurrent 10 MiB bodies of
    many small JSON objects (the costliest to parse) from 16 identities: its peak resident memory stays below the
    rendered limit with margin, /healthz (probed from another process) answers well inside the rendered readiness
    timeout throughout, and every body is routed by its model."""
    config_limit = json.loads(find(limited_bundle, "ConfigMap", "llmserve-frontdoor")[0]["data"]["config.json"])
    size = config_limit["max_request_body_bytes"]
    items = b",".join([b'{"a":1}'] * ((size - 100) // 8))
    body = b'{"messages": [' + items + b'], "model": "tiny-a", "max_tokens": 1}'
    assert size - 100 < len(body) <= size
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(EchoBackend("tiny-a", ADDRESSES["echo"]))
        sink_urls = {n: sink.url for n in MODELS}
        door = stack.enter_context(frontdoor_for(limited_bundle, sink_urls, ADDRESSES["frontdoor-1"], log_dir=serving_logs))
        # The stand-in's answer holds no body; the front door's buffer is what is measured. /healthz is probed from a
        # process of its own, as the kubelet does, so the senders' threads in this one do not delay it.
        stop_file = serving_logs / "healthz-probe.stop"
        prober = subprocess.Popen([sys.executable, "-c", HEALTH_PROBE, door.admin_url + "/healthz", str(stop_file)],
                                  stdout=subprocess.PIPE, text=True)

        def send(index):
            conn = http.client.HTTPConnection(door.config["listen"]["host"], door.config["listen"]["port"], timeout=300)
            try:
                conn.request("POST", "/v1/chat/completions", body=body,
                             headers=dict(signed("flood-%02d" % index), **{"Content-Type": "application/json"}))
                response = conn.getresponse()
                answer = json.loads(response.read())
                return response.status, answer.get("model") or answer.get("error", {}).get("code")
            finally:
                conn.close()

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(send, range(16)))
        elapsed = time.monotonic() - started
        stop_file.touch()
        health = [float(line) for line in prober.communicate(timeout=30)[0].split()]
        # The process and its workers (config workers > 1): the pod's memory is all of them.
        peak = sum(peak_rss_mib(pid) for pid in [door.proc.pid] + door.children())
        limit = memory_limit_mib(limited_bundle)
    print(f"\n16 x {len(body) / 2 ** 20:.1f} MiB bodies in {elapsed:.1f}s: peak RSS {peak:.0f} MiB of the {limit} MiB limit; "
          f"healthz p50 {sorted(health)[len(health) // 2] * 1000:.1f} ms, max {max(health) * 1000:.1f} ms over {len(health)} probes")
    # Each body is routed by its model, or (on a machine slower than the slot wait allows for four at a time) refused
    # as designed: 503 overloaded, never dropped or misrouted.
    assert set(results) <= {(200, "tiny-a"), (503, "overloaded")} and results.count((200, "tiny-a")) >= 8, results
    assert peak < 0.8 * limit
    # What the kubelet enforces: every probe answered well inside the rendered readiness timeout (a pod that missed it
    # would be taken out of the Service in the middle of the flood). The figures above are what this machine measured.
    assert len(health) >= 10 and max(health) < readiness_timeout_s(limited_bundle) / 3, health
