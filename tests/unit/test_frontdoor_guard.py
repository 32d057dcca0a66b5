"""The guard model in the request path, run for real: the front door (its own process) with a deterministic stand-in
guard that answers each verdict branch (safe, unsafe with one or two categories, garbage, nothing in time) by the
words of the message it is asked about, in front of a stand-in model that records what reached it. The guard's real
request format against a real vLLM, and the path through Traefik, are in tests/integration/test_guard.py."""

from __future__ import annotations

import http.client
import json
import re
import time

import pytest

pytest.importorskip("aiohttp")

from frontdoor import FrontDoor, identities_file, signed  # noqa: E402
from guard_standin import GuardStandIns  # noqa: E402

STUDENT = signed("ada", "students")
OUTSIDER = signed("cy", "staff")


@pytest.fixture(scope="module")
def stand_ins():
    return GuardStandIns().start()


def guard_config(stand_ins, **policy):
    guard = {"model": "llama-guard", "models": [], "groups": ["students"], "check": ["prompt", "response"], "block": [],
             "on_error": "deny", "timeout_s": 1, "stream_check_chars": 12, "log_identity": False}
    guard.update(policy)
    return {"models": {"tiny-a": {"url": "http://127.0.0.1:%d" % stand_ins.model_port},
                       "llama-guard": {"url": "http://127.0.0.1:%d" % stand_ins.guard_port, "hidden": True}},
            "guard": guard}


@pytest.fixture(scope="module")
def door(stand_ins):
    with FrontDoor(guard_config(stand_ins), identities=identities_file()) as running:
        yield running


def post(door, path, body, identity=STUDENT):
    conn = http.client.HTTPConnection("127.0.0.1", door.config["listen"]["port"], timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(body), headers=dict(identity, **{"Content-Type": "application/json"}))
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def chat(text, **extra):
    return dict({"model": "tiny-a", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]}, **extra)


def test_the_guard_is_asked_in_llama_guard_3s_prompt_format(door, stand_ins):
    """The request the guard gets: a raw completion of the model card's prompt (every category, the conversation with
    the system text folded into the User turn, the question about the last User message), constrained to the verdict's
    form, greedy, short."""
    before = len(stand_ins.guard_seen)
    status, dummy = post(door, "/v1/chat/completions", chat("a harmless question"))
    assert status == 200
    asked = stand_ins.guard_seen[before]
    assert asked["model"] == "llama-guard" and asked["temperature"] == 0 and asked["max_tokens"] <= 32
    assert asked["structured_outputs"] == {"regex": "safe|unsafe\nS([1-9]|1[0-4])(,S([1-9]|1[0-4]))*"}
    prompt = asked["prompt"]
    assert prompt.startswith("<|start_header_id|>user<|end_header_id|>\n\nTask: Check if there is unsafe content in 'User' "
                             "messages in conversations according our safety policy with the below categories.\n\n")
    assert "<BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Violent Crimes.\nS2: Non-Violent Crimes." in prompt
    assert "S14: Code Interpreter Abuse.\n<END UNSAFE CONTENT CATEGORIES>" in prompt
    assert "<BEGIN CONVERSATION>\n\nUser: Be brief.\n\na harmless question\n\n<END CONVERSATION>" in prompt
    assert prompt.endswith("Provide your safety assessment for ONLY THE LAST User message in the above conversation:\n"
                           " - First line must read 'safe' or 'unsafe'.\n - If unsafe, a second line must include a "
                           "comma-separated list of violated categories.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


@pytest.mark.parametrize("word, named", [("weapon", ["S1 Violent Crimes"]), ("hateful", ["S10 Hate", "S11 Suicide & Self-Harm"])])
def test_an_unsafe_prompt_is_refused_before_the_model(door, stand_ins, word, named):
    before = len(stand_ins.model_seen)
    for path, body in (("/v1/chat/completions", chat("a %s question" % word)),
                       ("/v1/completions", {"model": "tiny-a", "prompt": "a %s question" % word}),
                       ("/v1/chat/completions", chat("a %s question" % word, stream=True))):
        status, raw = post(door, path, body)
        err = json.loads(raw)["error"]
        assert status == 400 and err["code"] == "content_filter" and err["type"] == "invalid_request_error", raw
        assert all(n in err["message"] for n in named) and "unsafe" not in err["message"]
    assert len(stand_ins.model_seen) == before, "a refused prompt never reaches the model"


@pytest.mark.parametrize("word", ["odd", "slow"])
@pytest.mark.parametrize("policy", ["deny", "allow"])
def test_a_guard_that_answers_garbage_or_nothing(stand_ins, word, policy):
    with FrontDoor(guard_config(stand_ins, on_error=policy), identities=identities_file()) as door:
        status, raw = post(door, "/v1/chat/completions", chat("an %s question" % word))
        if policy == "deny":
            assert status == 503 and json.loads(raw)["error"]["code"] == "guard_unavailable"
        else:
            assert status == 200
        assert re.search(r'llmserve_guard_verdicts_total\{stage="prompt",verdict="error",category="",model="tiny-a",'
                         r'group="students"\} 1', door.metrics()), door.metrics()


def test_only_the_listed_categories_block(stand_ins):
    with FrontDoor(guard_config(stand_ins, block=["S1"]), identities=identities_file()) as door:
        assert post(door, "/v1/chat/completions", chat("a hateful question"))[0] == 200
        assert post(door, "/v1/chat/completions", chat("a weapon question"))[0] == 400
        assert re.search(r'verdict="unsafe",category="S10,S11"', door.metrics())


def test_an_unsafe_whole_answer_is_replaced_by_an_empty_one(door):
    for path, body in (("/v1/chat/completions", chat("harmless", say="here is a weapon recipe")),
                       ("/v1/completions", {"model": "tiny-a", "prompt": "harmless", "say": "here is a weapon recipe"})):
        status, raw = post(door, path, body)
        choice = json.loads(raw)["choices"][0]
        assert status == 200 and choice["finish_reason"] == "content_filter", raw
        assert (choice.get("message") or {}).get("content", choice.get("text")) == ""
    status, raw = post(door, "/v1/chat/completions", chat("harmless", say="kind words only"))
    assert json.loads(raw)["choices"][0]["message"]["content"] == "kind words only"


def stream(door, body, identity=STUDENT):
    conn = http.client.HTTPConnection("127.0.0.1", door.config["listen"]["port"], timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(dict(body, stream=True)),
                     headers=dict(identity, **{"Content-Type": "application/json"}))
        answer = conn.getresponse()
        events = [e for e in answer.read().split(b"\n\n") if e]
        return answer.status, events
    finally:
        conn.close()


def test_a_streamed_answer_is_checked_before_it_is_sent_and_ends_with_content_filter(door):
    """stream_check_chars 12: the text is checked every 12 characters and at the end; the batch holding the unsafe
    word never reaches the client, what was checked before it does, and the stream ends with a content_filter chunk
    and [DONE]."""
    status, events = stream(door, chat("harmless", say="one two three four five six seven weapon eight nine"))
    assert status == 200 and events[-1] == b"data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert "weapon" not in text and text.startswith("one two three")
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter" and chunks[-1]["choices"][0]["delta"] == {}
    status, events = stream(door, chat("harmless", say="one two three four five six"))
    text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "one two three four five six " and events[-1] == b"data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "stop"


def test_a_group_the_policy_does_not_cover_is_never_sent_to_the_guard(door, stand_ins):
    before = len(stand_ins.guard_seen)
    assert post(door, "/v1/chat/completions", chat("a weapon question", say="a weapon recipe"), identity=OUTSIDER)[0] == 200
    assert stream(door, chat("a weapon question", say="a weapon recipe"), identity=OUTSIDER)[0] == 200
    assert len(stand_ins.guard_seen) == before


def test_the_guard_model_is_not_offered_to_clients(door):
    conn = http.client.HTTPConnection("127.0.0.1", door.config["listen"]["port"], timeout=30)
    try:
        conn.request("GET", "/v1/models", headers=STUDENT)
        listed = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert [m["id"] for m in listed["data"]] == ["tiny-a"]
    status, raw = post(door, "/v1/completions", {"model": "llama-guard", "prompt": "x"})
    assert status == 404 and json.loads(raw)["error"]["code"] == "model_not_found"
    status, raw = post(door, "/models/llama-guard/v1/completions", {"prompt": "x"})
    assert status == 404


def test_verdicts_and_their_time_are_metrics(door):
    post(door, "/v1/chat/completions", chat("a harmless question"))
    page = door.metrics()
    assert re.search(r'llmserve_guard_verdicts_total\{stage="prompt",verdict="safe",category="",model="tiny-a",group="students"\} [1-9]', page)
    assert re.search(r'llmserve_guard_verdicts_total\{stage="prompt",verdict="unsafe",category="S1",model="tiny-a",group="students"\} [1-9]', page)
    assert re.search(r'llmserve_guard_duration_seconds_count\{stage="response"\} [1-9]', page)
    deadline = time.monotonic() + 10
    while "\nllmserve_guard_up 1" not in door.metrics():
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_the_guard_dashboard_asks_for_what_the_front_door_exports(door):
    """Every metric the guard dashboard queries is on the real front door's page, with every label the queries group
    or filter by (model_name is the front door's `model`, renamed by its PodMonitor as on vLLM's series)."""
    import pathlib

    board = json.loads((pathlib.Path(__file__).resolve().parents[2] / "roles/monitoring/files/dashboards/llmserve-guard.json")
                       .read_text(encoding="utf-8"))
    post(door, "/v1/chat/completions", chat("a harmless question"))
    page = door.metrics()
    exported = {}
    for name, labels in re.findall(r"^(\w+)\{([^}]*)\}", page, re.M):
        exported.setdefault(name, set()).update(re.findall(r'(\w+)="', labels))
    exported.setdefault("llmserve_guard_up", set())
    assert "llmserve_guard_up" in page
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    queries += [v["definition"] for v in board["templating"]["list"] if v.get("definition")]
    for expr in queries:
        for metric in re.findall(r"\b(llmserve_\w+)", expr):
            assert metric in exported, (metric, expr)
            used = set(re.findall(r"(\w+)\s*=~?", "".join(re.findall(r"\{([^}]*)\}", expr))))
            used |= {w for group in re.findall(r"by \(([^)]*)\)", expr) for w in re.findall(r"\w+", group)}
            used |= set(re.findall(r"label_values\(\w+, (\w+)\)", expr))
            wanted = {"model" if label == "model_name" else label for label in used} - {"namespace", "pod"}
            assert wanted <= exported[metric] | ({"stage"} if metric.startswith("llmserve_guard_duration") else set()), (expr, wanted)
