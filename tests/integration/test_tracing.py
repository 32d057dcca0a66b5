"""Distributed tracing, run for real: one request through the real Traefik (the rendered HelmChartConfig's tracing
flags), the real front door (the rendered config's `tracing`) and a real vLLM on CPU (the rendered
--otlp-traces-endpoint and OTEL_* environment) gives spans from all three in one trace, each child pointing at its
parent, received and decoded by a real OTLP receiver (tests/lib/otlp_receiver.py, gRPC). With tracing off the front
door imports no exporter, sends nothing and adds no trace header. The collector's cluster address is replaced by the
receiver's (resolve() in traefik_stack), nothing else in what was rendered.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request

import pytest

from frontdoor import INTERNAL_KEY, signed
from k8s_schema import load_bundle
from otlp_receiver import OtlpReceiver
from playbook import render
from traefik_stack import (ADDRESSES, AUTH_MODES, HOST, SERVING_KEY, SERVING_MODELS, EchoBackend, ServingStack, find,
                           frontdoor_config, frontdoor_dns, frontdoor_for, frontdoor_services)
from vllm_server import VllmServer

COLLECTOR = "otel-collector.monitoring.svc.cluster.local:4317"
TRACING = {"enabled": True, "endpoint": "grpc://" + COLLECTOR, "sample_rate": 1.0}
# version-trace id-parent id-flags; flags bit 0: sampled (bit 1, "random trace id", is W3C Trace Context level 2's).
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
NAMES = [m["name"] for m in SERVING_MODELS]


@pytest.fixture(scope="module")
def traced_bundle(tmp_path_factory):
    """The serving catalog rendered with llmserve_tracing on (an existing collector's gRPC address)."""
    dest = tmp_path_factory.mktemp("tracing-bundle")
    result = render(dest, extra_vars={"llmserve_models": SERVING_MODELS, **AUTH_MODES["api-key"], "llmserve_tracing": TRACING})
    assert result.returncode == 0, result.stdout[-3000:]
    return load_bundle(dest)


@pytest.fixture
def receiver():
    with OtlpReceiver() as running:
        yield running


def rendered_door_tracing(bundle, receiver):
    """The rendered front door config's tracing entry, sending to the receiver instead of the cluster's collector."""
    tracing = frontdoor_config(bundle, {n: "http://unused" for n in NAMES})["tracing"]
    assert tracing["endpoint"] == COLLECTOR and tracing["protocol"] == "grpc"
    return dict(tracing, endpoint=receiver.grpc_endpoint)


def post(door, headers=None):
    """POST /v1/completions straight to a front door's API port (with the identity Traefik's forwardAuth would set);
    the echo backend's answer: what reached it."""
    request = urllib.request.Request(door.url + "/v1/completions", data=json.dumps({"model": "tiny-a", "prompt": "hi"}).encode(),
                                     headers={"Content-Type": "application/json", **signed("serving-user", "lab"),
                                              **(headers or {})}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
        return {k.lower(): v for k, v in json.loads(resp.read())["headers"].items()}


def loaded_libraries(pid):
    return open("/proc/%d/maps" % pid, encoding="utf-8").read()


@contextlib.contextmanager
def echo_door(bundle, tracing, log_dir, env=None):
    with contextlib.ExitStack() as stack:
        echoes = {n: stack.enter_context(EchoBackend(n, ADDRESSES["echo"])) for n in NAMES}
        door = frontdoor_for(bundle, {n: e.url for n, e in echoes.items()}, ADDRESSES["frontdoor"], log_dir=log_dir, env=env)
        door.config.pop("tracing")
        if tracing:
            door.config["tracing"] = tracing
        yield stack.enter_context(door), echoes


def test_front_door_records_its_span_and_sends_its_own_context_on(traced_bundle, receiver, tmp_path):
    with echo_door(traced_bundle, rendered_door_tracing(traced_bundle, receiver), tmp_path) as (door, echoes):
        # No trace yet: the front door starts one (sample_rate 1.0) and the backend's parent is the gateway span.
        first_headers = post(door)
        started = TRACEPARENT.match(first_headers.get("traceparent", ""))
        # A caller's sampled trace: continued (same trace id), the gateway span its child, tracestate kept.
        caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        continued = post(door, {"traceparent": "00-%s-%s-01" % (caller_trace, caller_span), "tracestate": "vendor=1"})
        # A caller's unsampled trace: nothing recorded, the decision passed on.
        unsampled = post(door, {"traceparent": "00-%s-%s-00" % ("1" * 32, "2" * 16)})
        assert door.proc.pid and "cygrpc" in loaded_libraries(door.proc.pid)  # the gRPC exporter is loaded when on
    # The door has stopped: its exporter has sent everything it held.
    spans = receiver.wait_for(lambda s: len([x for x in s if x["name"] == "llmserve.gateway"]) >= 2, 20)
    gateway = {s["trace_id"]: s for s in spans if s["name"] == "llmserve.gateway" and s["service"] == "llmserve-gateway"}
    assert started and int(started.group(3), 16) & 1, sorted(first_headers.items())
    first = gateway[started.group(1)]
    assert first["span_id"] == started.group(2) and first["parent_id"] == ""
    assert first["attributes"]["llmserve.model"] == "tiny-a"
    assert first["attributes"]["http.response.status_code"] == 200
    assert first["attributes"]["llmserve.backend"] == echoes["tiny-a"].url
    assert "enduser.id" not in first["attributes"]  # record_identity is off by default
    second = gateway[caller_trace]
    assert second["parent_id"] == caller_span
    assert TRACEPARENT.match(continued["traceparent"]).group(1, 2) == (caller_trace, second["span_id"])
    assert int(TRACEPARENT.match(continued["traceparent"]).group(3), 16) & 1
    assert continued["tracestate"] == "vendor=1"
    assert "1" * 32 not in gateway
    assert TRACEPARENT.match(unsampled["traceparent"]).group(1) == "1" * 32
    assert not int(TRACEPARENT.match(unsampled["traceparent"]).group(3), 16) & 1


def test_tracing_off_sends_nothing_and_adds_no_header(traced_bundle, receiver, tmp_path):
    """The rendered config without its tracing entry (what a render with tracing off writes: test_tracing_render.py),
    with the OpenTelemetry SDK's own environment pointing at the receiver: were anything in the front door to set up
    an exporter, it would send there."""
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + receiver.grpc_endpoint}
    with echo_door(traced_bundle, None, tmp_path, env=env) as (door, dummy):
        plain = post(door)
        given = "00-%s-%s-01" % ("a" * 32, "b" * 16)
        passed = post(door, {"traceparent": given, "tracestate": "vendor=2"})
        assert "cygrpc" not in loaded_libraries(door.proc.pid)
        time.sleep(2)
    assert "traceparent" not in plain and "tracestate" not in plain
    assert passed["traceparent"] == given and passed["tracestate"] == "vendor=2"  # forwarded untouched
    assert receiver.spans() == [] and receiver.exports == {"grpc": 0, "http": 0}


@pytest.fixture(scope="module")
def traced_vllm(traced_bundle, tmp_path_factory):
    """One real vLLM (tiny random Llama as tiny-a) started with the rendered Deployment's tracing argument and
    environment; its collector address is filled in by the test (a receiver per test)."""
    (deployment,) = find(traced_bundle, "Deployment", "vllm-tiny-a")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    traced = args[args.index("--otlp-traces-endpoint"):args.index("--otlp-traces-endpoint") + 2]
    env = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("OTEL_")}
    assert traced == ["--otlp-traces-endpoint", "grpc://" + COLLECTOR]
    assert env["OTEL_SERVICE_NAME"] == "tiny-a"
    with OtlpReceiver() as receiver:
        with VllmServer("tiny-a", extra_args=["--otlp-traces-endpoint", "grpc://" + receiver.grpc_endpoint],
                        env=dict(env, VLLM_API_KEY=INTERNAL_KEY), log_dir=tmp_path_factory.mktemp("traced-vllm")) as server:
            server.wait_ready(300)
            yield server, receiver


def test_one_trace_from_traefik_through_the_front_door_to_vllm(traced_bundle, traced_vllm, serving_pki, tmp_path):
    vllm, receiver = traced_vllm
    receiver.clear()
    with contextlib.ExitStack() as stack:
        echoes = {n: stack.enter_context(EchoBackend(n, ADDRESSES["echo"])) for n in NAMES if n != "tiny-a"}
        urls = dict({n: e.url for n, e in echoes.items()}, **{"tiny-a": vllm.url})
        door = stack.enter_context(frontdoor_for(traced_bundle, urls, ADDRESSES["frontdoor"], log_dir=tmp_path,
                                                 tracing=rendered_door_tracing(traced_bundle, receiver)))
        dns = dict(frontdoor_dns(traced_bundle, door), **{COLLECTOR: receiver.grpc_endpoint})
        serving = stack.enter_context(ServingStack(traced_bundle, serving_pki, HOST, frontdoor_services(door), tmp_path, dns=dns))
        assert "--tracing.otlp.grpc.endpoint=" + receiver.grpc_endpoint in serving.traefik.rendered_args
        answer = serving.client.request("POST", "/v1/completions", {"model": "tiny-a", "prompt": "Hello", "max_tokens": 4},
                                        headers={"Authorization": "Bearer " + SERVING_KEY})
        assert answer.status == 200, answer.body[:300]

        def complete(spans):
            doors = [s for s in spans if s["name"] == "llmserve.gateway" and s["attributes"].get("llmserve.model") == "tiny-a"]
            return doors and any(s["name"] == "llm_request" and s["trace_id"] == doors[0]["trace_id"] for s in spans) \
                and any(s["service"] == "traefik" and s["trace_id"] == doors[0]["trace_id"] for s in spans)
        spans = receiver.wait_for(complete, 30)
    (gateway,) = [s for s in spans if s["name"] == "llmserve.gateway"]
    trace = [s for s in spans if s["trace_id"] == gateway["trace_id"]]
    by_id = {s["span_id"]: s for s in trace}
    traefik = [s for s in trace if s["service"] == "traefik"]
    (llm_request,) = [s for s in trace if s["name"] == "llm_request"]
    # Traefik's spans: one tree whose root is its entry point's span; the gateway's parent is one of them.
    assert sum(1 for s in traefik if s["parent_id"] == "") == 1
    assert by_id[gateway["parent_id"]]["service"] == "traefik"
    assert gateway["service"] == "llmserve-gateway"
    assert gateway["attributes"]["http.response.status_code"] == 200
    assert gateway["attributes"]["llmserve.backend"] == vllm.url
    # vLLM's request span is the gateway span's child, under the model's own service name, with its request figures.
    assert llm_request["parent_id"] == gateway["span_id"]
    assert llm_request["service"] == "tiny-a"
    attributes = llm_request["attributes"]
    assert attributes.get("gen_ai.usage.prompt_tokens", 0) >= 1, attributes
    assert attributes["gen_ai.usage.completion_tokens"] == 4, attributes
    for latency in ("gen_ai.latency.time_to_first_token", "gen_ai.latency.e2e", "gen_ai.latency.time_in_queue",
                    "gen_ai.latency.time_in_model_prefill", "gen_ai.latency.time_in_model_decode"):
        assert attributes.get(latency, -1) >= 0, (latency, attributes)
    assert attributes["gen_ai.latency.e2e"] >= attributes["gen_ai.latency.time_to_first_token"] > 0, attributes
    # Nested in time too: each child inside its parent.
    parent = by_id[gateway["parent_id"]]
    assert parent["start_ns"] <= gateway["start_ns"] <= llm_request["start_ns"] <= llm_request["end_ns"] <= gateway["end_ns"]
