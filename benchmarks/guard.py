"""The guard model's cost on the CPU stack, in one run: time to first token (TTFT) and total time of the same streamed
chat requests through the front door without a guard, with the prompt checked, and with the prompt and the answer
checked (stream_check_chars 64), side by side, rounds interleaved.

Real vLLM on CPU serves both the model and the guard (the tiny test model; the guard asked in Llama Guard 3's prompt
format, about 740 of its tokens, with the verdict's regular expression), the real front door in front. The figures are
this machine's and a tiny model's: what they show is the added time as a ratio, not a GPU's latency.

Run: make benchmarks, or .venv/bin/python benchmarks/guard.py [--requests 12]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import pathlib
import re
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "lib"), str(ROOT / ".venv" / "collections")]

from frontdoor import INTERNAL_KEY, FrontDoor, identities_file, signed  # noqa: E402
from vllm_server import VllmServer, ensure_vllm_venv  # noqa: E402

FIRST_TEXT = re.compile(rb'"content": ?"[^"]')  # the first event that carries text (not the role's empty one)
POLICIES = {"no guard": None, "prompt checked": ["prompt"], "prompt + answer checked": ["prompt", "response"]}


def ttft(door, text):
    """(seconds to the first content event, seconds to the end) of one streamed chat."""
    body = {"model": "tiny-model", "messages": [{"role": "user", "content": text}], "max_tokens": 48, "temperature": 0,
            "stream": True, "ignore_eos": True}
    conn = http.client.HTTPConnection("127.0.0.1", door.config["listen"]["port"], timeout=300)
    started = time.perf_counter()
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers=dict(signed("ada", "students"), **{"Content-Type": "application/json"}))
        answer = conn.getresponse()
        first = None
        while True:
            piece = answer.read1(65536)
            if not piece:
                break
            if first is None and FIRST_TEXT.search(piece):
                first = time.perf_counter() - started
        if answer.status != 200:
            raise RuntimeError("status %d" % answer.status)
        return first if first is not None else float("nan"), time.perf_counter() - started
    finally:
        conn.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=12, help="requests per case per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    logs = ROOT / "build" / "benchmarks" / "guard"
    logs.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        model = stack.enter_context(VllmServer("tiny-model", max_model_len=512, api_key=INTERNAL_KEY, log_dir=logs))
        guard = stack.enter_context(VllmServer("tiny-guard", max_model_len=1024, api_key=INTERNAL_KEY, log_dir=logs,
                                               env={"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}))
        model.wait_ready(300)
        guard.wait_ready(300)
        doors = {}
        for label, check in POLICIES.items():
            config = {"models": {"tiny-model": {"url": model.url}, "tiny-guard": {"url": guard.url, "hidden": True}},
                      "health_interval_s": 5}
            if check:
                # block: [] would let the tiny model's random verdicts refuse requests; every verdict is still asked
                # for and parsed (the cost measured), none blocks.
                config["guard"] = {"model": "tiny-guard", "check": check, "block": ["S14"], "on_error": "allow",
                                   "timeout_s": 60, "stream_check_chars": 64}
            doors[label] = stack.enter_context(FrontDoor(config, python=ensure_vllm_venv(), identities=identities_file(),
                                                         log_dir=logs))
        prompts = ["Tell me about request %d and the weather" % i for i in range(args.requests)]
        for door in doors.values():
            ttft(door, "warm up")
        results = {label: [] for label in doors}
        for dummy in range(args.rounds):
            for text in prompts:
                for label, door in doors.items():  # the cases of one prompt back to back
                    results[label].append(ttft(door, text))
    base_first = statistics.median(r[0] for r in results["no guard"])
    base_total = statistics.median(r[1] for r in results["no guard"])
    print("Guard benchmark: %d streamed chats (48 tokens) per case, vLLM on CPU for the model and the guard" % (args.requests * args.rounds))
    print("%-26s %10s %10s %12s %12s" % ("case", "TTFT p50", "x no guard", "total p50", "x no guard"))
    for label, runs in results.items():
        first, total = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print("%-26s %8.0f ms %10.2f %9.0f ms %12.2f" % (label, first * 1000, first / base_first, total * 1000, total / base_total))
    print("(logs: %s)" % logs)


if __name__ == "__main__":
    main()
