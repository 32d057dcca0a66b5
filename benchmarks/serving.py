"""The serving path's cost and the router policies, on the real stack the integration tests run (one run, printed).

1. Ingress overhead: a short non-streamed completion (p50/p95), time to first token of a streamed chat, and
   requests/s at concurrency 1 and 16 — straight to vLLM vs through Traefik (rendered CRs) + the front door.
   The ingress here is what the rendered bundle says: Traefik's per-address limit, its forwardAuth to the front door's
   /auth, the per-identity limits (raised for this run: they are not what is measured) and the front door, which
   sends vLLM the cluster's internal key.
2. The two-replica model behind the real vllm-router, a shared-prefix workload (5 tenants with a long system prompt
   each, from their own client addresses, through the whole ingress path): prefix cache hit rate (vLLM's own
   vllm:prefix_cache_hits / queries on each replica) and mean TTFT for cache_aware vs round_robin vs client-IP
   affinity (consistent_hash on the X-Session-ID the front door sets from the client address). Target: cache_aware
   above round_robin.

k3s is not real here (a Kubernetes API stand-in serves the rendered objects); the router gets --worker-urls, not
Kubernetes service discovery. The front door's own overhead and capacity against a zero-latency backend, beside
the router's: benchmarks/gateway.py. Run: make benchmarks, or .venv/bin/python benchmarks/serving.py
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import pathlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lib"))

# tests/lib is put on the path just above
from frontdoor import INTERNAL_KEY  # noqa: E402
from k8s_schema import load_bundle  # noqa: E402
from playbook import render  # noqa: E402
from traefik import plain_stream, traefik_binary  # noqa: E402
from traefik_stack import (ADDRESSES, HOST, SERVING_KEY, SERVING_KEYS, SERVING_MODELS, ServingStack,  # noqa: E402
                           frontdoor_dns, frontdoor_for, frontdoor_services, make_secrets)
from vllm_router import ROUTER_VERSION, VllmGroup, VllmRouter  # noqa: E402
from vllm_server import VLLM_VERSION  # noqa: E402

KEY = {"Authorization": "Bearer " + SERVING_KEY}
# vLLM trusts only the cluster's internal key (the front door sends it); the direct path uses it too.
INTERNAL = {"Authorization": "Bearer " + INTERNAL_KEY}
# The limits per address and per identity, out of the way: throughput from one key is measured, not the limiters.
UNLIMITED = {"ingress_rate_limit": {"average": 100000, "period": "1s", "burst": 100000},
             "ingress_address_rate_limit": {"average": 100000, "period": "1s", "burst": 100000, "ip_depth": 0},
             "ingress_in_flight": {"enabled": True, "amount": 1000}}
SENTENCES = ["The quick brown fox jumps over the lazy dog.", "vLLM serves large language models with paged attention.",
             "Kubernetes schedules pods on nodes with GPUs.", "Ansible configures machines from an inventory.",
             "Hello, how are you today? I am fine, thank you.", "ping pong health check ready loading unreachable"]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def ms(value):
    return f"{value * 1000:7.2f} ms"


class Plain:
    """Keep-alive HTTP/1.1 client of a plain http:// base URL (the direct paths)."""

    def __init__(self, url):
        parsed = url.split("//", 1)[1]
        host, port = parsed.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)

    def post(self, path, body, headers=None):
        data = json.dumps(body).encode()
        self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = self.conn.getresponse()
        response.read()
        return response.status


class Through:
    """Keep-alive HTTPS client of the ingress, from one client address."""

    def __init__(self, stack, source_ip="127.0.0.1"):
        self.stack, self.conn = stack, stack.client.connection(source_ip, timeout=120)

    def post(self, path, body, headers=None):
        return self.stack.client.request("POST", path, body, headers=headers, conn=self.conn).status


def timed(send, count, body, path="/v1/completions"):
    seconds = []
    headers = INTERNAL if isinstance(send, Plain) else KEY
    for _ in range(count):
        start = time.perf_counter()
        status = send.post(path, body, headers)
        seconds.append(time.perf_counter() - start)
        assert status == 200, status
    return seconds


def throughput(make_client, concurrency, per_client, body):
    def run(index):
        client = make_client(index)
        return timed(client, per_client, body)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(run, range(concurrency)))
    return concurrency * per_client / (time.perf_counter() - start)


def ingress_overhead(stack, vllms):
    body = {"model": "tiny-a", "prompt": "The quick brown fox", "max_tokens": 1, "temperature": 0}
    direct, through = Plain(vllms["tiny-a"].url), Through(stack)
    timed(direct, 5, body)
    timed(through, 5, body)  # warm both paths
    d, t = [], []
    for _ in range(40):  # interleaved: both paths see the same machine load
        d += timed(direct, 1, body)
        t += timed(through, 1, body)
    chat = {"model": "tiny-a", "messages": [{"role": "user", "content": "Hello, how are you today?"}], "stream": True,
            "max_tokens": 16, "temperature": 0}
    ttft_d, ttft_t = [], []
    direct_conn, ingress_conn = direct.conn, through.conn  # kept alive, as SDK clients keep them
    for _ in range(20):
        # A pause before each stream: sent back to back, vLLM's API server often sends the next answer in one burst
        # (first chunk at the end), on either path (tests/integration/test_serving.py _interleaved_streams).
        time.sleep(0.5)
        ttft_d.append(plain_stream(vllms["tiny-a"].url + "/v1/chat/completions", chat, INTERNAL, conn=direct_conn)[1][0][0])
        time.sleep(0.5)
        ttft_t.append(stack.client.stream("/v1/chat/completions", chat, conn=ingress_conn)[1][0][0])
    rps = {}
    for concurrency, per_client in ((1, 30), (16, 6)):
        # One client address per connection: the per-client rate limit (20/s) is not what is measured here.
        rps[concurrency] = (throughput(lambda i: Plain(vllms["tiny-a"].url), concurrency, per_client, body),
                            throughput(lambda i: Through(stack, f"127.0.1.{i + 1}"), concurrency, per_client, body))
    print("\n1. Ingress overhead (tiny-a on vLLM CPU; ingress = Traefik TLS + rate/in-flight limits + front door)")
    print(f"   {'':32} {'direct':>10} {'ingress':>10} {'added':>10} {'ratio':>6}")
    rows = [("completion p50", statistics.median(d), statistics.median(t)), ("completion p95", pct(d, 95), pct(t, 95)),
            ("streamed chat TTFT (median)", statistics.median(ttft_d), statistics.median(ttft_t))]
    for label, a, b in rows:
        print(f"   {label:32} {ms(a):>10} {ms(b):>10} {ms(b - a):>10} {b / a:6.2f}")
    for concurrency, (a, b) in rps.items():
        print(f"   {'req/s at concurrency %d' % concurrency:32} {a:10.1f} {b:10.1f} {b - a:10.1f} {b / a:6.2f}")


def prefix_policies(bundle, pki, vllms, log_dir):
    replicas = [vllms["tiny-multi-0"], vllms["tiny-multi-1"]]
    # Each policy run gets its own tenants' system prompts, so no run finds the cache another one warmed.
    results = {}
    policies = (("cache_aware", {}), ("round_robin", {}), ("consistent_hash (client IP)", {"client_affinity": True}))
    door_port = None
    for run, (policy, backend_extra) in enumerate(policies):
        router_policy = policy.split()[0]
        with VllmRouter([r.url for r in replicas], policy=router_policy, host=ADDRESSES["router"], log_dir=log_dir) as router:
            router.wait_ready(120, headers=INTERNAL)
            urls = {"tiny-a": vllms["tiny-a"].url, "tiny-b": vllms["tiny-a"].url, "tiny-multi": router.url}
            door = frontdoor_for(bundle, urls, ADDRESSES["frontdoor"], port=door_port, log_dir=log_dir)
            if backend_extra:
                door.config["models"]["tiny-multi"].update(backend_extra)
            with door:
                door_port = door.config["listen"]["port"]
                with ServingStack(bundle, pki, HOST, frontdoor_services(door), log_dir,
                                  dns=frontdoor_dns(bundle, door)) as stack:
                    stack.client.headers.update(KEY)
                    results[policy] = _shared_prefix_workload(stack, replicas, run)
    print("\n2. Two replicas behind vllm-router, shared-prefix workload (5 tenants x 6 streamed chat requests, "
          "each tenant a ~250-token system prompt, 2 at a time, through the ingress)")
    print(f"   {'policy':30} {'hit rate':>9} {'mean TTFT':>10}   requests (hit rate) per replica")
    for policy, (rate, ttft, spread) in results.items():
        print(f"   {policy:30} {rate:9.1%} {ms(ttft):>10}   {', '.join(f'{n} ({r})' for n, r in spread)}")
    verdict = "met" if results["cache_aware"][0] > results["round_robin"][0] else "NOT met"
    print(f"   target: cache_aware hit rate above round_robin -> {verdict}")


def settled(read, timeout=10):
    """vLLM updates its counters after the answer has gone out: read until two reads half a second apart agree."""
    last, deadline = read(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now == last:
            return now
        last = now
    return last


def _shared_prefix_workload(stack, replicas, run, tenants=5, per_tenant=6):
    def totals():
        return [(r.metric("vllm:prefix_cache_hits_total"), r.metric("vllm:prefix_cache_queries_total"),
                 r.metric("vllm:request_success_total")) for r in replicas]

    prompts = {t: f"Tenant {run}-{t} system prompt. " + " ".join(SENTENCES[(t + i) % len(SENTENCES)] for i in range(24))
               for t in range(tenants)}
    # Tenants interleaved in a fixed random order (the same for every policy): with a fixed rotation, round_robin
    # over 2 replicas would keep each tenant of an even count on one replica by accident.
    work = [(t, i) for i in range(per_tenant) for t in range(tenants)]
    random.Random(7).shuffle(work)

    def one(item):
        tenant, i = item
        body = {"model": "tiny-multi", "messages": [{"role": "system", "content": prompts[tenant]},
                                                    {"role": "user", "content": f"Question {i}: how are you?"}],
                "stream": True, "max_tokens": 4, "temperature": 0}
        status, chunks = stack.client.stream("/v1/chat/completions", body, source_ip=f"127.0.2.{tenant + 1}")
        assert status == 200, chunks[:1]
        return chunks[0][0]

    before = totals()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        ttfts = list(pool.map(one, work))
    after = settled(totals)
    hits = sum(a[0] - b[0] for a, b in zip(after, before))
    queries = sum(a[1] - b[1] for a, b in zip(after, before))
    spread = [(int(a[2] - b[2]), f"{(a[0] - b[0]) / max(1, a[1] - b[1]):.0%}") for a, b in zip(after, before)]
    return hits / queries if queries else 0.0, statistics.mean(ttfts), spread


def main():
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llmserve-bench-serving-") as tmp:
        tmp = pathlib.Path(tmp)
        result = render(tmp / "bundle", extra_vars={"llmserve_models": SERVING_MODELS, "llmserve_auth_mode": "api-key",
                                                    "llmserve_api_keys": SERVING_KEYS, **UNLIMITED})
        if result.returncode != 0:
            raise RuntimeError("render failed:\n" + result.stdout[-4000:])
        bundle = load_bundle(tmp / "bundle")
        pki = make_secrets(tmp, HOST)
        traefik = subprocess.run([str(traefik_binary()), "version"], capture_output=True, text=True, check=True)
        print(f"Serving benchmark: Traefik {traefik.stdout.split()[1]} ({traefik_binary()}), vllm-router "
              f"{ROUTER_VERSION}, vLLM {VLLM_VERSION} on CPU (tiny random Llama), {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f} at start")
        specs = {"tiny-a": ("tiny-a", ADDRESSES["tiny-a"]), "tiny-multi-0": ("tiny-multi", ADDRESSES["tiny-multi-0"]),
                 "tiny-multi-1": ("tiny-multi", ADDRESSES["tiny-multi-1"])}
        with VllmGroup(specs, env={"VLLM_API_KEY": INTERNAL_KEY}, max_model_len=512, log_dir=tmp) as vllms:
            with VllmRouter([vllms["tiny-multi-0"].url, vllms["tiny-multi-1"].url], host=ADDRESSES["router"],
                            log_dir=tmp) as router:
                router.wait_ready(120, headers=INTERNAL)
                urls = {"tiny-a": vllms["tiny-a"].url, "tiny-b": vllms["tiny-a"].url, "tiny-multi": router.url}
                with frontdoor_for(bundle, urls, ADDRESSES["frontdoor"], log_dir=tmp) as door:
                    with ServingStack(bundle, pki, HOST, frontdoor_services(door), tmp,
                                      dns=frontdoor_dns(bundle, door)) as stack:
                        stack.client.headers.update(KEY)
                        ingress_overhead(stack, vllms)
            prefix_policies(bundle, pki, vllms, tmp)
    print(f"\n(one run, {time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
