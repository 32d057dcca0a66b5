"""The guard model, run for real: a real vLLM on CPU serving the guard role (the tiny test model, asked in Llama Guard
3's prompt format with its answer constrained to the verdict's form, as the front door asks a real Llama Guard), and
the rendered catalog with a guard policy served through the real Traefik and front door, where a refused prompt never
reaches the model.

What is not real: the tiny model is no classifier (its verdicts are as good as random, but always well-formed: the
constraint is what is tested); in the Traefik path a deterministic stand-in guard answers, so the refusal is certain."""

from __future__ import annotations

import contextlib
import http.client
import json
import re

import pytest

from frontdoor import FrontDoor, INTERNAL_KEY, identities_file, signed
from guard_standin import GuardStandIns
from k8s_schema import load_bundle
from playbook import render
from vllm_server import VllmServer
from traefik_stack import (ADDRESSES, HOST, SERVING_MODELS, EchoBackend, ServingStack, find, frontdoor_dns,
                           frontdoor_for, frontdoor_services)

KEYS = [{"name": "ada", "key": "sk-guard-ada-0123456789abcdef", "groups": ["students"]},
        {"name": "cy", "key": "sk-guard-cy-0123456789abcdef00", "groups": ["staff"]}]
GUARD_ENTRY = {"name": "tiny-guard", "model": "meta-llama/Llama-Guard-3-1B", "role": "guard", "params_b": 1.5,
               "dtype": "bfloat16", "max_model_len": 512}
POLICY = {"enabled": True, "model": "tiny-guard", "groups": ["students"], "check": ["prompt", "response"]}


@pytest.fixture(scope="module")
def guard_vllm(serving_logs):
    """The tiny model as the guard: Llama Guard 3's prompt is about 740 of its tokens, so its context is stretched to
    1024 (VLLM_ALLOW_LONG_MAX_MODEL_LEN; random weights lose nothing by it)."""
    with VllmServer("tiny-guard", max_model_len=1024, api_key=INTERNAL_KEY, log_dir=serving_logs,
                    env={"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}) as server:
        server.wait_ready(300)
        yield server


def test_a_real_vllm_guard_takes_the_request_and_its_answer_is_a_verdict(guard_vllm):
    """The front door asks the real vLLM (as the guard) for each prompt of a covered group: vLLM accepts the request
    (the raw prompt of Llama Guard 3's format, the verdict's regular expression) and every answer parses as a verdict:
    the metrics count safe or unsafe verdicts, never an error; the client gets 200 or 400 content_filter accordingly.
    A group the policy does not cover is not sent to the guard."""
    with contextlib.ExitStack() as stack:
        echo = stack.enter_context(EchoBackend("tiny-a"))
        config = {"models": {"tiny-a": {"url": echo.url}, "tiny-guard": {"url": guard_vllm.url, "hidden": True}},
                  "guard": {"model": "tiny-guard", "groups": ["students"], "check": ["prompt"], "on_error": "deny",
                            "timeout_s": 60}}
        door = stack.enter_context(FrontDoor(config, identities=identities_file()))
        statuses = []
        for text in ("How do I bake bread?", "Tell me about the moon.", "Write a poem about rain."):
            conn = http.client.HTTPConnection("127.0.0.1", door.config["listen"]["port"], timeout=120)
            conn.request("POST", "/v1/chat/completions", body=json.dumps({"model": "tiny-a", "messages": [{"role": "user", "content": text}]}),
                         headers=dict(signed("ada", "students"), **{"Content-Type": "application/json"}))
            answer = conn.getresponse()
            statuses.append((answer.status, json.loads(answer.read())))
            conn.close()
        page = door.metrics()
    verdicts = dict((v, int(n)) for v, n in re.findall(r'llmserve_guard_verdicts_total\{stage="prompt",verdict="(\w+)",[^}]*\} (\d+)', page))
    assert sum(verdicts.values()) == 3 and "error" not in verdicts, (verdicts, statuses)
    for status, body in statuses:
        assert status == 200 or (status == 400 and body["error"]["code"] == "content_filter"), body
    assert sum(1 for s, dummy in statuses if s == 400) == sum(n for v, n in verdicts.items() if v == "unsafe")


@pytest.fixture(scope="module")
def guard_bundle(tmp_path_factory):
    dest = tmp_path_factory.mktemp("guard-render")
    result = render(dest, extra_vars={"llmserve_models": SERVING_MODELS + [GUARD_ENTRY], "llmserve_auth_mode": "api-key",
                                      "llmserve_api_keys": KEYS, "llmserve_guard": POLICY, "llmserve_gpu_count": 5})
    assert result.returncode == 0, result.stdout[-4000:]
    return load_bundle(dest)


def test_through_traefik_a_refused_prompt_never_reaches_the_model(guard_bundle, serving_pki, serving_logs):
    """Real Traefik and the front door with the rendered policy; the models are echo backends that record what reaches
    them, the guard a deterministic stand-in: a refused prompt is a 400 content_filter naming the category and the
    model's log has no line for it; a harmless one is served; the guard is not in /v1/models."""
    names = [m["name"] for m in SERVING_MODELS]
    stand_ins = GuardStandIns().start()
    with contextlib.ExitStack() as stack:
        echoes = {n: stack.enter_context(EchoBackend(n, ADDRESSES["echo"])) for n in names}
        urls = dict({n: e.url for n, e in echoes.items()}, **{"tiny-guard": "http://127.0.0.1:%d" % stand_ins.guard_port})
        door = stack.enter_context(frontdoor_for(guard_bundle, urls, ADDRESSES["frontdoor"], identities=identities_file(KEYS),
                                                 log_dir=serving_logs))
        serving = stack.enter_context(ServingStack(guard_bundle, serving_pki, HOST, frontdoor_services(door), serving_logs,
                                                   dns=frontdoor_dns(guard_bundle, door)))
        ada = {"Authorization": "Bearer " + KEYS[0]["key"]}
        refused = serving.client.request("POST", "/v1/chat/completions",
                                         {"model": "tiny-a", "messages": [{"role": "user", "content": "build a weapon"}]}, headers=ada)
        seen_after_refusal = sum(len(e.seen) for e in echoes.values())
        served = serving.client.request("POST", "/v1/chat/completions",
                                        {"model": "tiny-a", "messages": [{"role": "user", "content": "a harmless question"}]}, headers=ada)
        posts = [seen for e in echoes.values() for seen in e.seen if seen[0] == "POST"]
        listed = serving.client.request("GET", "/v1/models", headers=ada)
    assert refused.status == 400, refused.body
    err = json.loads(refused.body)["error"]
    assert err["code"] == "content_filter" and "S1 Violent Crimes" in err["message"]
    assert seen_after_refusal == 0, "the refused prompt reached a model"
    assert served.status == 200 and len(posts) == 1, posts
    assert "tiny-guard" not in [m["id"] for m in json.loads(listed.body)["data"]]
    assert find(guard_bundle, "Deployment", "vllm-tiny-guard")
