"""Who used what, run for real: the rendered catalog with quotas, a real Redis (with persistence), two front doors,
the real Traefik in front of them and real vLLM on CPU behind. The tokens the gateway counts are compared with the
usage vLLM returned, quotas with what each replica refuses, and Redis is killed and brought back mid-run.

Traefik reaches the gateway on the front doors' ports as the rendered Service's endpoints; the Redis Deployment of the
bundle is rendered only (no Kubernetes runs here): the test's redis-server plays its Service."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import time

import pytest

from frontdoor import signed
from playbook import render
from k8s_schema import load_bundle
from redis_server import PASSWORD, RedisServer
from traefik_stack import (ADDRESSES, HOST, SERVING_MODELS, ServingStack, find, frontdoor_dns, frontdoor_for,
                           frontdoor_services, redis_dns)

USAGE_KEYS = [{"name": "ada", "key": "sk-usage-ada-0123456789abcdef", "groups": ["course"]},
              {"name": "ben", "key": "sk-usage-ben-0123456789abcdef", "groups": ["course", "lab"]},
              {"name": "cy", "key": "sk-usage-cy-0123456789abcdef", "groups": ["staff"]}]
# The course shares one small budget; staff are counted but not limited by tokens.
QUOTAS = {"course": {"per": "group", "tokens_per_day": 60}, "staff": {"requests_per_minute": 1000}}
REDIS_ENV = {"LLMSERVE_REDIS_PASSWORD": PASSWORD}


@pytest.fixture(scope="module")
def usage_bundle(tmp_path_factory):
    dest = tmp_path_factory.mktemp("usage-render")
    result = render(dest, extra_vars={"llmserve_models": SERVING_MODELS, "llmserve_auth_mode": "api-key",
                                      "llmserve_api_keys": USAGE_KEYS, "llmserve_quotas": QUOTAS})
    assert result.returncode == 0, result.stdout[-4000:]
    return load_bundle(dest)


def rendered_config(bundle):
    (config_map,) = find(bundle, "ConfigMap", "llmserve-frontdoor")
    return json.loads(config_map["data"]["config.json"])


def local_quotas(bundle, redis, **changes):
    """The rendered quotas section with its Redis Service (a cluster DNS name) played by the test's redis-server."""
    quotas = rendered_config(bundle)["quotas"]
    quotas["redis"] = dict(quotas["redis"], host=redis.host, port=redis.port)
    quotas.update(changes)
    return quotas


@pytest.fixture(scope="module")
def usage_redis(tmp_path_factory, serving_logs):
    with RedisServer(serving_logs, data_dir=tmp_path_factory.mktemp("redis-data")) as redis:
        yield redis


def urls_of(vllms, router):
    return {"tiny-a": vllms["tiny-a"].url, "tiny-b": vllms["tiny-b"].url,
            "tiny-multi": (router.url, vllms["tiny-multi-0"].url)}


@contextlib.contextmanager
def doors_and_traefik(bundle, redis, vllms, router, pki, logs, **changes):
    urls = urls_of(vllms, router)
    quotas = local_quotas(bundle, redis, **changes)
    with contextlib.ExitStack() as stack:
        doors = [stack.enter_context(frontdoor_for(bundle, urls, ADDRESSES[name], log_dir=logs, quotas=quotas,
                                                   identities=usage_identities(), env=REDIS_ENV))
                 for name in ("frontdoor", "frontdoor-1")]
        serving = stack.enter_context(ServingStack(bundle, pki, HOST, frontdoor_services(*doors), logs,
                                                   dns=dict(frontdoor_dns(bundle, doors[0]), **redis_dns(bundle, redis))))
        serving.frontdoors = doors
        yield serving


def usage_identities():
    from frontdoor import identities_file
    return identities_file(USAGE_KEYS)


@pytest.fixture(scope="module")
def usage_path(usage_bundle, usage_redis, serving_vllms, serving_router, serving_pki, serving_logs):
    with doors_and_traefik(usage_bundle, usage_redis, serving_vllms, serving_router, serving_pki, serving_logs) as serving:
        yield serving


def key_of(name):
    return {"Authorization": "Bearer " + next(k["key"] for k in USAGE_KEYS if k["name"] == name)}


def tokens_counted(doors, user, kinds=("prompt", "completion")):
    total = 0
    for door in doors:
        for kind, value in re.findall(r'llmserve_usage_tokens_total\{user="%s",group="[^"]*",model="[^"]*",kind="(\w+)"\} (\d+)'
                                      % re.escape(user), door.metrics()):
            total += int(value) if kind in kinds else 0
    return total


def sse_events(raw):
    return [e for e in raw.split(b"\n\n") if e.strip()]


def normalised(event):
    """An SSE event with the fields that differ between two runs of the same request (id, created) blanked."""
    return re.sub(rb'"(id|created)":("[^"]*"|\d+)', rb'"\1":_', event)


def direct_stream(vllm, body):
    from frontdoor import INTERNAL_KEY
    conn = http.client.HTTPConnection(vllm.host, vllm.port, timeout=120)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"Authorization": "Bearer " + INTERNAL_KEY, "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def chat(model, stream=False, max_tokens=5, **extra):
    return dict({"model": model, "messages": [{"role": "user", "content": "Count: one, two,"}], "max_tokens": max_tokens,
                 "temperature": 0, "stream": stream}, **extra)


def test_the_tokens_counted_for_a_user_are_the_usage_vllm_returned(usage_path, serving_vllms):
    """cy (staff) through Traefik and either front door: a whole chat answer, a whole completion, a stream that asked
    for usage and one that did not. The gateway's count for cy is the sum of what vLLM reported; the stream that did
    not ask has no usage chunk and is, event for event, the stream vLLM itself sends for that request."""
    client, doors = usage_path.client, usage_path.frontdoors
    before = tokens_counted(doors, "cy")
    expected = 0
    answer = client.request("POST", "/v1/chat/completions", chat("tiny-a"), headers=key_of("cy"))
    assert answer.status == 200, answer.body
    expected += json.loads(answer.body)["usage"]["total_tokens"]
    answer = client.request("POST", "/v1/completions", {"model": "tiny-b", "prompt": "The quick brown fox", "max_tokens": 3,
                                                        "temperature": 0}, headers=key_of("cy"))
    assert answer.status == 200, answer.body
    expected += json.loads(answer.body)["usage"]["total_tokens"]
    status, chunks = client.stream("/v1/chat/completions", chat("tiny-a", True, stream_options={"include_usage": True}),
                                   headers=key_of("cy"))
    events = sse_events(b"".join(c for dummy, c in chunks))
    assert status == 200 and events[-1] == b"data: [DONE]"
    usage = json.loads(events[-2][6:])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
    expected += usage["usage"]["total_tokens"]
    # Not asked (and asked against, as a client may write it): the gateway asks vLLM and takes the chunk out again.
    for options in ({}, {"stream_options": {"include_usage": False}}):
        body = chat("tiny-a", True, max_tokens=6, **options)
        status, chunks = client.stream("/v1/chat/completions", body, headers=key_of("cy"))
        through = sse_events(b"".join(c for dummy, c in chunks))
        assert status == 200 and not any(b'"usage"' in e for e in through), through
        direct_status, direct = direct_stream(serving_vllms["tiny-a"], body)
        assert direct_status == 200
        assert [normalised(e) for e in through] == [normalised(e) for e in sse_events(direct)]
        # What vLLM counts for it: the same request asking for usage, straight to vLLM.
        status, raw = direct_stream(serving_vllms["tiny-a"], dict(body, stream_options={"include_usage": True}))
        expected += json.loads(sse_events(raw)[-2][6:])["usage"]["total_tokens"]
    assert tokens_counted(doors, "cy") - before == expected
    # The request counts carry the user, the first group and the model.
    requests = sum(int(v) for d in doors for v in re.findall(
        r'llmserve_usage_requests_total\{user="cy",group="staff",model="tiny-a",code="200"\} (\d+)', d.metrics()))
    assert requests >= 4


def spend(doors, user, limit=30):
    """Completions for `user` on the front doors in turn (as Traefik signs them) until one is refused: the answers."""
    answers = []
    for index in range(limit):
        door = doors[index % len(doors)]
        conn = http.client.HTTPConnection(door.config["listen"]["host"], door.config["listen"]["port"], timeout=120)
        try:
            groups = ",".join(next(k["groups"] for k in USAGE_KEYS if k["name"] == user))
            conn.request("POST", "/v1/completions", body=json.dumps({"model": "tiny-a", "prompt": "one two three",
                                                                     "max_tokens": 4, "temperature": 0}),
                         headers=dict(signed(user, groups), **{"Content-Type": "application/json"}))
            response = conn.getresponse()
            answers.append((index % len(doors), response.status, dict(response.getheaders()), json.loads(response.read())))
        finally:
            conn.close()
        if answers[-1][1] != 200:
            break
    return answers


def test_a_group_quota_is_one_budget_across_replicas_and_restarts(usage_bundle, usage_redis, usage_path, serving_vllms,
                                                                  serving_router, serving_logs):
    """course (60 tokens a day, shared): ada and ben spend it through both front doors; the request after it is spent
    gets 429 insufficient_quota with Retry-After on both replicas and through Traefik; staff (cy) is not affected.
    A front door restarted, then Redis restarted, still refuse: the counters are in Redis, on disk."""
    doors = usage_path.frontdoors
    answers = spend(doors, "ada") + spend(doors, "ben")
    served = [a for a in answers if a[1] == 200]
    spent = sum(a[3]["usage"]["total_tokens"] for a in served)
    refused = [a for a in answers if a[1] != 200]
    assert {a[0] for a in served} == {0, 1}, "both replicas served"
    assert spent >= 60 and spent - served[-1][3]["usage"]["total_tokens"] < 60, (spent, answers)
    for dummy, status, headers, body in refused:
        assert status == 429 and body["error"]["type"] == "insufficient_quota" and body["error"]["code"] == "insufficient_quota"
        assert 0 < int(headers["Retry-After"]) <= 86400
    for door_index in (0, 1):
        (dummy, status, headers, body), = spend([doors[door_index]], "ada", limit=1)
        assert status == 429 and body["error"]["code"] == "insufficient_quota"
    through = usage_path.client.request("POST", "/v1/completions", {"model": "tiny-a", "prompt": "x", "max_tokens": 1},
                                        headers=key_of("ben"))
    assert through.status == 429 and json.loads(through.body)["error"]["code"] == "insufficient_quota", through.body
    assert int(through.headers["Retry-After"]) > 1
    assert all(a[1] == 200 for a in spend(doors, "cy", limit=4))
    # A new front door process, then a Redis restart (persistence on): the course stays refused.
    config_quotas = local_quotas(usage_bundle, usage_redis)
    with frontdoor_for(usage_bundle, urls_of(serving_vllms, serving_router), ADDRESSES["frontdoor"], quotas=config_quotas,
                       identities=usage_identities(), env=REDIS_ENV, log_dir=serving_logs) as fresh:
        assert spend([fresh], "ada", limit=1)[0][1] == 429
        usage_redis.stop()
        usage_redis.start()
        assert refused_once_store_answers(fresh, "ben")
    refusals = sum(int(v) for d in doors for v in re.findall(
        r'llmserve_quota_refusals_total\{group="course",limit="tokens_per_day"\} (\d+)', d.metrics()))
    assert refusals >= len(refused) + 2


def store_errors(door):
    return int(re.search(r"llmserve_quota_store_errors_total (\d+)", door.metrics()).group(1))


def store_up(door):
    return int(re.search(r"^llmserve_quota_store_up (\d+)$", door.metrics(), re.M).group(1))


def refused_once_store_answers(door, user, timeout_s=20):
    """True when the user's next request with the store answering is refused. A request served while the gateway had
    not reached the restarted Redis yet (allow: served uncounted, a store error counted) is sent again."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        errors = store_errors(door)
        status = spend([door], user, limit=1)[0][1]
        if status == 429:
            return True
        if store_errors(door) == errors:
            return False  # the store answered and let the request through: its counters were lost
        time.sleep(0.5)
    return False


@pytest.mark.parametrize("policy", ["allow", "deny"])
def test_redis_killed_mid_run(usage_bundle, serving_vllms, serving_router, serving_logs, tmp_path, policy):
    """Redis killed under load: `allow` serves every request (uncounted) and reports the store down; `deny` answers
    503 quota_unavailable. Every request gets an answer either way, and once Redis is back, counting resumes."""
    with RedisServer(serving_logs) as redis:
        quotas = local_quotas(usage_bundle, redis, on_redis_error=policy)
        with frontdoor_for(usage_bundle, urls_of(serving_vllms, serving_router), ADDRESSES["frontdoor-1"], quotas=quotas,
                           identities=usage_identities(), env=REDIS_ENV, log_dir=serving_logs) as door:
            assert spend([door], "cy", limit=2)[-1][1] == 200
            redis.kill()
            down = [spend([door], "cy", limit=1)[0] for dummy in range(6)]
            statuses = [a[1] for a in down]
            if policy == "allow":
                assert statuses == [200] * 6
            else:
                assert statuses == [503] * 6 and all(a[3]["error"]["code"] == "quota_unavailable" for a in down)
            assert store_up(door) == 0
            redis.start()
            deadline = time.monotonic() + 20  # the gateway pings the store every health interval (1 s here)
            while store_up(door) != 1:
                assert time.monotonic() < deadline, door.log.read_text()[-2000:]
                time.sleep(0.2)
            assert spend([door], "cy", limit=1)[0][1] == 200
            minute_keys = redis.command_reply("KEYS", "llmserve:quota:u:staff:cy:requests:m*")
            assert minute_keys and int(redis.command_reply("GET", minute_keys[0])) >= 1
            assert store_errors(door) >= 1


@pytest.fixture(scope="module")
def limited_usage_bundle(tmp_path_factory):
    """The usage catalog with a per-identity rate limit small enough to cross in a test: 5 a minute, burst 5."""
    dest = tmp_path_factory.mktemp("usage-limited-render")
    result = render(dest, extra_vars={"llmserve_models": SERVING_MODELS, "llmserve_auth_mode": "api-key",
                                      "llmserve_api_keys": USAGE_KEYS, "llmserve_quotas": QUOTAS,
                                      "ingress_rate_limit": {"average": 5, "period": "1m", "burst": 5}})
    assert result.returncode == 0, result.stdout[-4000:]
    return load_bundle(dest)


def test_two_traefiks_count_one_identity_limit_together_in_redis(limited_usage_bundle, serving_pki, serving_logs):
    """Two Traefik processes with the rendered llm-rate-limit (its redis option, the role's credentials Secret) on one
    Redis, in front of one front door: one identity's 20 requests, alternating between them, pass 5 in all (the
    burst), not 5 on each; the rest are 429 rate_limit_exceeded in OpenAI's format; the limiter's keys are in Redis."""
    from traefik_stack import EchoBackend

    bundle = limited_usage_bundle
    (middleware,) = find(bundle, "Middleware", "llm-rate-limit")
    assert middleware["spec"]["rateLimit"]["redis"]["secret"], middleware
    names = [m["name"] for m in SERVING_MODELS]
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer(serving_logs))
        echoes = {n: stack.enter_context(EchoBackend(n, ADDRESSES["echo"])) for n in names}
        door = stack.enter_context(frontdoor_for(bundle, {n: e.url for n, e in echoes.items()}, ADDRESSES["frontdoor"],
                                                 quotas=local_quotas(bundle, redis), identities=usage_identities(),
                                                 env=REDIS_ENV, log_dir=serving_logs))
        dns = dict(frontdoor_dns(bundle, door), **redis_dns(bundle, redis))
        traefiks = [stack.enter_context(ServingStack(bundle, serving_pki, HOST, frontdoor_services(door), serving_logs, dns=dns))
                    for dummy in range(2)]
        answers = [traefiks[i % 2].client.request("POST", "/v1/completions", {"model": "tiny-a", "prompt": "x"},
                                                  headers=key_of("cy")) for i in range(20)]
        keys = redis.command_reply("KEYS", "rate:*")
    statuses = [a.status for a in answers]
    assert statuses.count(200) == 5 and set(statuses) == {200, 429}, statuses
    assert {json.loads(a.body)["error"]["code"] for a in answers if a.status == 429} == {"rate_limit_exceeded"}
    assert {i % 2 for i, a in enumerate(answers) if a.status == 200} == {0, 1}, "both Traefiks let some through"
    assert any("cy" in k for k in keys), keys
