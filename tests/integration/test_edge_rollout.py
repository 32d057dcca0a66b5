"""Rollouts and lost pods do not cut answers: real Traefik (the pinned k3s release's) -> two real front doors (rendered
config) -> the real vllm-router -> stand-in backends that stream one event a second (a 40 s answer; vLLM on CPU
cannot make one that long with the tiny model's context), all on loopback.

What Kubernetes does when it deletes a pod is played by the test: the pod's endpoint leaves the Service's
EndpointSlices in the API stand-in (Traefik drops it), the preStop pause passes, then SIGTERM. Cluster DNS is not
real: the forwardAuth address names one front door; when that one stops, the test points the rendered middleware at
the other, as the Service's virtual IP would.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import threading
import time

import pytest

from frontdoor import identities_file
from traefik_stack import (ADDRESSES, HOST, SERVING_KEY, SERVING_KEYS, SERVING_MODELS, EchoBackend, ServingStack, find,
                           frontdoor_dns, frontdoor_for, frontdoor_services)
from vllm_router import VllmRouter

MODELS = [m["name"] for m in SERVING_MODELS]
KEY = {"Authorization": "Bearer " + SERVING_KEY}
LONG = {"prompt": "x", "stream": True, "events": 40, "gap": 1.0}


@pytest.fixture()
def rollout(serving_bundles, serving_pki, serving_logs):
    bundle = serving_bundles["api-key"]
    with contextlib.ExitStack() as stack:
        slow = stack.enter_context(EchoBackend("tiny-multi", ADDRESSES["echo"]))
        (deployment,) = find(bundle, "Deployment", "vllm-tiny-multi-router")
        router = stack.enter_context(VllmRouter.from_deployment(deployment, [slow.url], ADDRESSES["router"],
                                                                log_dir=serving_logs))
        router.wait_ready(60)
        urls = {"tiny-a": slow.url, "tiny-b": slow.url, "tiny-multi": (router.url, slow.url)}
        doors = [stack.enter_context(frontdoor_for(bundle, urls, ADDRESSES[name], identities=identities_file(SERVING_KEYS),
                                                   log_dir=serving_logs)) for name in ("frontdoor", "frontdoor-1")]
        serving = stack.enter_context(ServingStack(bundle, serving_pki, HOST, frontdoor_services(*doors), serving_logs,
                                                   dns=frontdoor_dns(bundle, doors[0])))
        serving.doors, serving.router, serving.slow, serving.bundle = doors, router, slow, bundle
        serving.client.headers.update(KEY)
        yield serving


def stream(serving, model, out):
    """A 40 s streamed answer through the ingress; out gets (status, events, ended with [DONE], seconds)."""
    started = time.monotonic()
    try:
        status, chunks = serving.client.stream("/v1/completions", dict(LONG, model=model))
    except (http.client.HTTPException, OSError) as cut:  # the answer broke off (an incomplete chunked body)
        out.append((repr(cut)[:80], 0, False, time.monotonic() - started))
        return
    body = b"".join(c for dummy, c in chunks)
    out.append((status, body.count(b"data: {"), body.rstrip().endswith(b"data: [DONE]"), time.monotonic() - started))


def in_flight(door):
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in door.metrics().splitlines()
               if line.startswith("llmserve_frontdoor_in_flight{"))


def point_auth_at(serving, door):
    """The forwardAuth middleware now names `door` (the Service's virtual IP after the other pod left)."""
    (middleware,) = [o for o in serving.objects if o.get("kind") == "Middleware" and o["metadata"]["name"] == "llm-gateway-auth"]
    middleware["spec"]["forwardAuth"]["address"] = "http://%s:%d/auth" % (door.config["auth"]["host"], door.config["auth"]["port"])
    serving.api.upsert(middleware)


def keep_asking(serving, stop, results):
    while not stop.is_set():
        response = serving.client.request("POST", "/v1/completions", {"model": "tiny-multi", "prompt": "x"})
        results.append((time.monotonic(), response.status))
        time.sleep(0.2)


def test_sigterm_to_a_front_door_lets_its_40s_stream_finish_while_the_other_serves(rollout):
    out = []
    runner = threading.Thread(target=stream, args=(rollout, "tiny-a", out))
    runner.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(in_flight(d) for d in rollout.doors):
        time.sleep(0.1)
    (busy,) = [d for d in rollout.doors if in_flight(d)]
    (other,) = [d for d in rollout.doors if d is not busy]
    # Kubernetes: the endpoint goes (Traefik stops sending there), the preStop pause runs, then SIGTERM.
    rollout.withdraw("llmserve-frontdoor", busy.config["listen"]["host"])
    point_auth_at(rollout, other)
    prestop = int(find(rollout.bundle, "Deployment", "llmserve-frontdoor")[0]["spec"]["template"]["spec"]["containers"][0]
                  ["lifecycle"]["preStop"]["sleep"]["seconds"])
    time.sleep(min(prestop, 5))
    busy.terminate()
    stop, results = threading.Event(), []
    asker = threading.Thread(target=keep_asking, args=(rollout, stop, results))
    asker.start()
    runner.join(90)
    stop.set()
    asker.join(30)
    exit_code = busy.proc.wait(timeout=30)
    statuses = [status for dummy, status in results]
    print(f"\nstream through the stopping front door: {out}; {len(statuses)} new requests meanwhile: "
          f"{statuses.count(200)} x 200; the stopped front door exited with {exit_code}")
    (status, events, done, seconds) = out[0]
    assert status == 200 and events == 40 and done and seconds > 39, out
    assert statuses and set(statuses) == {200}, statuses
    assert exit_code == 0


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_routers_loss_leaves_its_model_served(rollout, how):
    """SIGTERM: the router finishes its 40 s stream (it stops accepting, then drains); SIGKILL: the stream through it
    breaks off. Either way every new request for the model is answered: the front door, refused by the router's
    port, sends it to the model's own Service. The time the model is unreachable is printed (0 s when no request
    fails)."""
    out = []
    runner = threading.Thread(target=stream, args=(rollout, "tiny-multi", out))
    runner.start()
    time.sleep(3)
    stop, results = threading.Event(), []
    asker = threading.Thread(target=keep_asking, args=(rollout, stop, results))
    asker.start()
    time.sleep(1)
    killed_at = time.monotonic()
    os.killpg(rollout.router.proc.pid, getattr(signal, how))
    time.sleep(5)
    stop.set()
    asker.join(30)
    runner.join(90)
    after = [(t - killed_at, s) for t, s in results if t >= killed_at]
    failed = [t for t, s in after if s != 200]
    print(f"\n{how} to the router: stream {out}; {len(after)} requests after it, {len(failed)} failed; "
          f"model unreachable for {(max(failed) - min(failed)) if failed else 0:.1f} s")
    assert len(after) >= 10 and not failed, after
    (status, events, done, seconds) = out[0]
    if how == "SIGTERM":
        assert status == 200 and events == 40 and done, out
    else:
        assert not done, out
