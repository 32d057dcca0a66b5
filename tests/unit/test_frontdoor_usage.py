"""The front door's usage counting, piece by piece: the large-body scanner's stream fields against json.loads, the
usage of whole answers found from their end, the stream filter that takes the usage chunk the gateway asked for out
of a stream, and the body change that asks for it. The whole path (real vLLM, Redis, Traefik) runs in
tests/integration/test_usage.py."""

from __future__ import annotations

import json
import random
import sys

import pytest

pytest.importorskip("aiohttp")
sys.path.insert(0, str(__import__("frontdoor").SCRIPT.parent))
import llmserve_frontdoor as script  # noqa: E402  pylint: disable=wrong-import-position

FINGERPRINT = "fp_0a1b2c3d"


def scan(raw):
    fields = script.top_level_fields(raw)
    try:
        while True:
            next(fields)
    except StopIteration as done:
        return done.value


def random_options(rng):
    return rng.choice([None, True, False, 1, "true", {}, {"include_usage": True}, {"include_usage": False},
                       {"continuous_usage_stats": True, "include_usage": True}, {"x": {"include_usage": True}},
                       [{"include_usage": True}]])


def test_the_scanner_finds_stream_and_include_usage_as_json_does():
    """(model, stream, include_usage) from the scanner equal what json.loads gives, on random bodies with the keys in
    any order, nested look-alikes (an inner "stream": true, "include_usage" outside stream_options), escapes in keys,
    repeated keys (the last counts) and several layouts."""
    rng = random.Random(11)
    for dummy in range(2000):
        items = [("model", rng.choice(["tiny-a", "x\u00e9", None])), ("messages", [{"role": "user", "content": "stream"}])]
        if rng.random() < 0.7:
            items.append(("stream", rng.choice([True, False, None, "true", 1])))
        if rng.random() < 0.7:
            items.append(("stream_options", random_options(rng)))
        if rng.random() < 0.3:
            items.append(("extra", {"stream": True, "stream_options": {"include_usage": True}, "include_usage": True}))
        if rng.random() < 0.2:
            items.append(("include_usage", True))
        if rng.random() < 0.2:
            items.append(("stream_options", random_options(rng)))  # a repeated key: the last one counts
        rng.shuffle(items)
        indent = rng.choice([None, 1])
        parts = [json.dumps(k) + ": " + json.dumps(v, indent=indent) for k, v in items]
        raw = ("{" + ", ".join(parts) + "}").encode()
        if rng.random() < 0.2:
            raw = raw.replace(b'"stream"', b'"str\\u0065am"', 1)
        doc = json.loads(raw)
        options = doc.get("stream_options")
        expected = (doc.get("model"), doc.get("stream") is True, isinstance(options, dict) and options.get("include_usage") is True)
        assert scan(raw) == expected, raw


def test_usage_of_a_whole_answer_is_found_from_its_end():
    """vLLM's chat answer (usage after the choices, then other fields); a content and a tool call that hold the text
    "usage": with escaped quotes do not fool it; an embeddings answer; none."""
    content = 'He wrote "usage": {"prompt_tokens": 999} in the answer'
    answer = {"id": "chatcmpl-1", "object": "chat.completion", "model": "tiny-a",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": content,
                                                   "tool_calls": [{"function": {"arguments": '{"usage": {"x": 1}}'}}]},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 12, "total_tokens": 19, "completion_tokens": 7}, "prompt_logprobs": None,
              "kv_transfer_params": None}
    raw = json.dumps(answer).encode()
    assert script.usage_of_answer(raw) == answer["usage"]
    assert script.usage_of_answer(json.dumps(answer, separators=(",", ":")).encode()) == answer["usage"]
    embeddings = {"object": "list", "data": [{"embedding": [0.1] * 64, "index": 0}], "model": "e",
                  "usage": {"prompt_tokens": 5, "total_tokens": 5}}
    assert script.usage_of_answer(json.dumps(embeddings).encode()) == {"prompt_tokens": 5, "total_tokens": 5}
    del answer["usage"]
    assert script.usage_of_answer(json.dumps(answer).encode()) is None
    account = script.Account("ada", ("course",))
    account.take({"input_tokens": 3, "output_tokens": 4})  # the Responses API's names
    assert (account.prompt, account.completion) == (3, 4)


def vllm_stream(include_usage, n=1):
    """Chat chunks as vLLM 0.32 writes them: the fingerprint on finishing chunks without usage; with usage, on the
    final usage chunk only (choices: [])."""
    events = []
    for i in range(3):
        for choice in range(n):
            finish = "stop" if i == 2 else None
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "tiny-a",
                     "choices": [{"index": choice, "delta": {"content": "t%d" % i}, "logprobs": None,
                                  "finish_reason": finish}]}
            if finish and not include_usage:
                chunk["system_fingerprint"] = FINGERPRINT
            events.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    if include_usage:
        final = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "tiny-a", "choices": [],
                 "usage": {"prompt_tokens": 9, "total_tokens": 12, "completion_tokens": 3 * n},
                 "system_fingerprint": FINGERPRINT}
        events.append(b"data: " + json.dumps(final, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def pieces(raw, rng):
    cuts = sorted(rng.sample(range(1, len(raw)), 12))
    return [raw[a:b] for a, b in zip([0] + cuts, cuts + [len(raw)])]


@pytest.mark.parametrize("n", [1, 2])
def test_a_stream_with_the_usage_chunk_asked_by_the_gateway_is_the_stream_the_client_asked_for(n):
    """Cut anywhere, the stream vLLM sent with usage, filtered, is byte for byte the stream vLLM sends without it, and
    the usage is counted; a stream the client asked usage for passes unchanged and is counted too."""
    rng = random.Random(n)
    for dummy in range(50):
        account = script.Account("ada", ("course",))
        account.strip = True
        usage = script.UsageStream(account)
        out = b"".join(usage.feed(p) for p in pieces(vllm_stream(True, n), rng)) + usage.end()
        assert out == vllm_stream(False, n)
        assert (account.prompt, account.completion) == (9, 3 * n)
        asked = script.Account("ada", ())
        usage = script.UsageStream(asked)
        out = b"".join(usage.feed(p) for p in pieces(vllm_stream(True, n), rng)) + usage.end()
        assert out == vllm_stream(True, n) and (asked.prompt, asked.completion) == (9, 3 * n)


def test_a_stream_cut_before_its_usage_chunk_is_passed_on_whole():
    account = script.Account("ada", ())
    account.strip = True
    usage = script.UsageStream(account)
    raw = vllm_stream(True).split(b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"tiny-a","choices":[]',
                                  maxsplit=1)[0]
    assert usage.feed(raw) + usage.end() == raw
    assert (account.prompt, account.completion) == (0, 0)


def test_the_body_change_asks_for_usage_and_keeps_everything_else():
    body = b'{"model": "tiny-a", "stream": true, "stream_options": {"include_usage": false, "continuous_usage_stats": true},\n "n": 2}\n'
    changed = script.with_usage_asked(body)
    assert changed.startswith(body.rstrip()[:-1])
    doc = json.loads(changed)
    assert doc == {"model": "tiny-a", "stream": True, "stream_options": {"include_usage": True}, "n": 2}
    assert scan(changed)[2] is True


def test_quota_keys_keep_users_and_groups_apart():
    """per user: a key per member; per group: one for the group; the default apart from every group; windows by the
    UTC day, hour and minute."""
    quotas = script.Quotas({"rules": [{"group": "course", "per": "group", "tokens_per_day": 5},
                                      {"group": "lab", "per": "user", "requests_per_minute": 2},
                                      {"default": True, "tokens_per_hour": 9}],
                            "redis": {"host": "127.0.0.1"}}, "", script.Metrics({}))
    now = 86400 * 20000 + 3600 * 5 + 61
    assert [r.get("group") for r in quotas.rules_of(("lab", "course"))] == ["lab", "course"]
    assert quotas.rules_of(("other",)) == quotas.default
    ada = quotas.keys(quotas.rules_of(("course",)), "ada", now)
    ben = quotas.keys(quotas.rules_of(("course",)), "ben", now)
    assert ada == ben and ada[0] == "llmserve:quota:g:course:tokens:d20000" and ada[1].endswith(":h%d" % (now // 3600))
    lab_ada, lab_ben = (quotas.keys(quotas.rules_of(("lab",)), u, now) for u in ("ada", "ben"))
    assert lab_ada != lab_ben and lab_ada[2] == "llmserve:quota:u:lab:ada:requests:m%d" % (now // 60)
    assert quotas.keys(quotas.default, "ada", now)[0] == "llmserve:quota:u::ada:tokens:d20000"
    assert script.window_left(now, 86400) == 86400 - 3600 * 5 - 61 and script.window_left(now, 60) == 59


@pytest.mark.parametrize("quotas, message", [
    ({"rules": [], "redis": {}}, "quotas must be"),
    ({"rules": [{"per": "user"}], "redis": {"host": "r"}}, "quotas.rules[0] must name a group"),
    ({"rules": [{"group": "a", "tokens_per_day": -1}], "redis": {"host": "r"}}, "quotas.rules[0].tokens_per_day must be"),
    ({"rules": [{"group": "a", "per": "team"}], "redis": {"host": "r"}}, "quotas.rules[0].per must be user or group"),
    ({"rules": [], "redis": {"host": "r"}, "on_redis_error": "maybe"}, "quotas.on_redis_error must be allow or deny"),
])
def test_a_wrong_quotas_section_is_refused_by_name(quotas, message):
    with pytest.raises(SystemExit, match=message.replace("[", r"\[").replace("]", r"\]")):
        script.check_quotas("config.json", quotas)


def test_redis_replies_are_parsed_as_their_bytes_arrive():
    """Every kind of RESP2 reply, the stream cut at every byte: nothing is handed on before it is whole, and the
    replies come out in order, with error replies as ReplyError and nulls as None."""
    raw = (b"+OK\r\n-NOSCRIPT No matching script\r\n:42\r\n$4\r\nh\xc3\xa9l\r\n$-1\r\n*2\r\n:-1\r\n$0\r\n\r\n"
           b"*3\r\n*1\r\n+PONG\r\n$-1\r\n:7\r\n*-1\r\n")
    expected = ["OK", "NOSCRIPT No matching script", 42, "h\u00e9l", None, [-1, ""], [["PONG"], None, 7], None]

    class Client:
        transport = None

        def __init__(self):
            self.got = []

        def deliver(self, answer):
            self.got.append(answer)

    for cut in range(1, len(raw)):
        client = Client()
        protocol = script.RespProtocol(client)
        protocol.data_received(raw[:cut])
        protocol.data_received(raw[cut:])
        assert client.got == expected, cut
        assert isinstance(client.got[1], script.ReplyError) and not protocol.buffer


def test_the_error_page_says_quota_unavailable_for_a_gateway_that_denies_without_its_store(tmp_path):
    """on_redis_error deny with Redis unreachable (nothing listens on its port): the gateway's own 503 and the error
    page Traefik's errors middleware puts in its place both say quota_unavailable; allow keeps the plain 503 page."""
    import http.client
    import time

    from frontdoor import FrontDoor, identities_file, signed
    from processes import free_port

    def get(door, path, port, headers=None, method="GET", body=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, json.loads(answer.read())["error"]["code"]
        finally:
            conn.close()

    for policy, page in (("deny", "quota_unavailable"), ("allow", "service_unavailable")):
        quotas = {"rules": [{"group": "course", "tokens_per_day": 5}], "on_redis_error": policy,
                  "redis": {"host": "127.0.0.1", "port": free_port(), "timeout_s": 0.2}}
        config = {"models": {"tiny-a": {"url": "http://127.0.0.1:%d" % free_port()}}, "quotas": quotas}
        with FrontDoor(config, identities=identities_file()) as door:
            deadline = time.monotonic() + 10
            while "\nllmserve_quota_store_up 0" not in door.metrics():
                assert time.monotonic() < deadline, door.log.read_text()
                time.sleep(0.1)
            assert get(door, "/error/503", door.config["auth"]["port"]) == (503, page)
            if policy == "deny":
                headers = dict(signed("ada", "course"), **{"Content-Type": "application/json"})
                assert get(door, "/v1/completions", door.config["listen"]["port"], headers, "POST",
                           b'{"model": "tiny-a"}') == (503, "quota_unavailable")
