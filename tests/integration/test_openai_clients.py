"""The serving path as OpenAI's own SDK meets it, every hop real (Traefik 3.7 -> two front doors -> vLLM on CPU, the
vllm-router for the two-replica model), and the client examples of README.md and docs/ingress.md run as written.

The examples name https://llm.university.local/ (port 443) and the CA in ~/.config/llmserve/pki/llmserve/: the test
gives them a HOME holding the test's CA there, and a name lookup that sends llm.university.local:443 to the test's
Traefik (Python: a sitecustomize wrapping socket.getaddrinfo; curl: connect-to in ~/.curlrc). The code is not edited.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

from traefik_stack import HOST, SERVING_KEYS, SERVING_MODELS, Cuts

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = [m["name"] for m in SERVING_MODELS]
SOAK_STREAMS, SOAK_CONCURRENCY = 500, 16


@pytest.fixture()
def named_host(serving):
    """The test's Traefik by address; the host name goes in the Host header and the TLS server name (no DNS here)."""
    return f"https://127.0.0.1:{serving.traefik.websecure_port}/v1"


def client(serving, base_url, key, cls=None, **kwargs):
    """An SDK client whose requests carry the ingress host as TLS server name (checked against the CA) and Host."""
    import ssl
    context = ssl.create_default_context(cafile=str(serving.pki / "ca.crt"))

    def server_name(request):
        request.extensions["sni_hostname"] = HOST

    async def async_server_name(request):
        server_name(request)
    asynchronous = cls is openai.AsyncOpenAI
    transport = (httpx.AsyncClient if asynchronous else httpx.Client)(
        verify=context, timeout=120, event_hooks={"request": [async_server_name if asynchronous else server_name]})
    return (cls or openai.OpenAI)(base_url=base_url, api_key=key, http_client=transport, default_headers={"Host": HOST},
                                  **kwargs)


def test_a_soak_of_streams_through_the_whole_path_our_hops_cut_none(serving, named_host):
    """500 streamed chats, 16 at a time, over the three models and both ways of naming them, from two identities
    (each within its in-flight limit), with AsyncOpenAI: every stream ends with its finish_reason and usage, none
    is cut by the front door, the router or vLLM; then every hop's log is checked for cut answers.

    On this 2-core machine, with four vLLMs, two front doors, the router, Traefik and the client on it, Traefik 3.7
    itself now and then aborts a stream it is relaying: its access log has the request as status 200 with no status
    from the backend, its debug log says "ReverseProxy read error during body copy: ... use of closed network
    connection" (its own side of the backend connection closed) and the front door logs that its client left
    mid-answer; about 1 stream in 3,000 here. Such a cut is counted against Traefik only when the client's cuts and the
    front doors' "client left" lines agree one for one and Traefik logged as many aborts; at most 2 of the 500 are
    allowed, and any other cut fails."""
    keys = [SERVING_KEYS[0]["key"], SERVING_KEYS[1]["key"]]
    # The SDK's own retry policy (2 retries, its default) retries only a request that failed before its answer began
    # (a connection error raised while sending; openai/_base_client.py): a stream cut once it has begun is never
    # retried, and fails below. The retries taken are counted from the SDK's log and printed.
    retried = []

    class Retries(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("Retrying request"):
                retried.append(record.getMessage())
    sdk_log = logging.getLogger("openai")
    handler, level = Retries(), sdk_log.level
    sdk_log.addHandler(handler)
    sdk_log.setLevel(logging.INFO)

    async def run():
        clients = [client(serving, named_host, key, openai.AsyncOpenAI, max_retries=2) for key in keys]
        # Each identity keeps within its in-flight limit (8 by default): 16 at a time in all.
        gates = [asyncio.Semaphore(SOAK_CONCURRENCY // len(keys)) for dummy in keys]
        outcomes = []

        async def one(index):
            model = MODELS[index % len(MODELS)]
            sdk, gate = clients[index % 2], gates[index % 2]
            async with gate:
                text, finish, usage = "", None, None
                stream = await sdk.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": f"Soak {index}: tell me about GPUs."}],
                    max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True},
                    extra_body={"ignore_eos": True})
                async for chunk in stream:
                    for choice in chunk.choices:
                        text += choice.delta.content or ""
                        finish = choice.finish_reason or finish
                    usage = chunk.usage or usage
                outcomes.append((model, finish, usage.completion_tokens if usage else None, len(text)))
        started = time.monotonic()
        results = await asyncio.gather(*(one(i) for i in range(SOAK_STREAMS)), return_exceptions=True)
        for sdk in clients:
            await sdk.close()
        return results, outcomes, time.monotonic() - started

    cuts = Cuts(serving)
    try:
        results, outcomes, elapsed = asyncio.run(run())
    finally:
        sdk_log.removeHandler(handler)
        sdk_log.setLevel(level)
    errors = [repr(r)[:200] for r in results if isinstance(r, BaseException)]
    # What Traefik and the front doors logged during the soak: the streams Traefik aborted (200 to the client, no
    # status from the backend) and the answers the front doors saw their client (Traefik) leave.
    aborted, left = cuts.aborted(), cuts.left()
    print(f"\n{SOAK_STREAMS} streams, {SOAK_CONCURRENCY} at a time, in {elapsed:.0f}s: {len(outcomes)} complete, "
          f"{len(errors)} failed {errors[:3]}; the SDK retried {len(retried)} requests before their answer began; "
          f"Traefik aborted {len(aborted)} {[e.get('StartUTC') for e in aborted]}, the front doors saw {left} leave")
    # Every cut the client saw is one the front door was still answering when Traefik left, among those Traefik
    # aborted (a client that closes after the last event is an abort in Traefik's log too, and cuts nothing).
    assert len(errors) == left <= len(aborted), (errors, aborted, left)
    assert len(errors) <= 2, errors
    assert len(retried) <= SOAK_STREAMS // 50, retried
    assert len(outcomes) == SOAK_STREAMS - len(errors)
    assert all(finish == "length" and tokens == 12 for dummy, finish, tokens, dummy in outcomes), outcomes[:5]
    for door in serving.frontdoors:
        log = door.log.read_text(errors="replace")
        assert "Cannot write to closing transport" not in log and "Traceback" not in log, log[-3000:]
        assert "broke off" not in log


def test_the_sdks_errors_carry_openais_codes(serving, named_host):
    good = client(serving, named_host, SERVING_KEYS[2]["key"], max_retries=0)
    with pytest.raises(openai.AuthenticationError) as wrong:
        client(serving, named_host, "sk-not-a-real-key", max_retries=0).models.list()
    assert wrong.value.code == "invalid_api_key" and wrong.value.status_code == 401
    with pytest.raises(openai.NotFoundError) as missing:
        good.chat.completions.create(model="mixtral-8x7b", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.APIStatusError) as large:
        good.completions.create(model="tiny-a", prompt="x" * (11 * 2 ** 20), max_tokens=1)
    assert large.value.status_code == 413 and large.value.code == "request_too_large"
    limited = None
    for dummy in range(200):
        try:
            good.models.list()
        except openai.RateLimitError as refused:
            limited = refused
            break
    assert limited is not None and limited.code == "rate_limit_exceeded"
    assert limited.response.headers["retry-after"].isdigit()


def examples(path, fence):
    """The fenced blocks of one language in a document that talk to the API (name the ingress host)."""
    text = (ROOT / path).read_text(encoding="utf-8")
    return [block for block in re.findall(r"```%s\n(.*?)```" % fence, text, re.S) if HOST in block]


@pytest.fixture()
def example_home(serving, tmp_path):
    """A HOME with the CA where the docs say it is, a curlrc and a sitecustomize that send the host to Traefik."""
    pki = tmp_path / ".config" / "llmserve" / "pki" / "llmserve"
    pki.mkdir(parents=True)
    shutil.copy(serving.pki / "ca.crt", pki / "ca.crt")
    port = serving.traefik.websecure_port
    (tmp_path / ".curlrc").write_text(f"connect-to = {HOST}:443:127.0.0.1:{port}\n", encoding="utf-8")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import socket\n_real = socket.getaddrinfo\n"
        "def _lookup(host, port, *a, **k):\n"
        f"    if host == {HOST!r} and int(port or 443) == 443:\n"
        f"        return _real('127.0.0.1', {port}, *a, **k)\n"
        "    return _real(host, port, *a, **k)\n"
        "socket.getaddrinfo = _lookup\n", encoding="utf-8")
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=str(site), LLMSERVE_API_KEY=SERVING_KEYS[2]["key"])
    env.pop("SSL_CERT_FILE", None)
    return env


def run_example(serving, command, env, timeout):
    """One documented example, run as written. An example that streams can meet Traefik's own rare mid-stream cut
    (see traefik_stack.Cuts); when it fails and Traefik's access log and the front door's log both show exactly one
    such cut during the run, it is run once more. Any other failure, or a second one, is the example's."""
    def run():
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)

    cuts = Cuts(serving)
    done = run()
    if done.returncode != 0 and cuts.traefik_cut(1):
        print(f"\nTraefik cut a stream of an example (its access log and the front door's agree); run again: {command}")
        done = run()
    return done


@pytest.mark.parametrize("path", ["README.md", "docs/ingress.md"])
def test_the_python_examples_run_as_written(serving, example_home, path, tmp_path):
    blocks = examples(path, "python")
    assert blocks, f"{path} has no Python example naming {HOST}"
    for index, block in enumerate(blocks):
        script = tmp_path / f"example{index}.py"
        script.write_text(block, encoding="utf-8")
        done = run_example(serving, [sys.executable, str(script)], example_home, 180)
        assert done.returncode == 0, f"{path} example {index}:\n{block}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        assert done.stdout.strip(), block


@pytest.mark.parametrize("path", ["README.md", "docs/ingress.md"])
def test_the_curl_examples_run_as_written(serving, example_home, path):
    blocks = [b for b in examples(path, "sh") if b.lstrip().startswith("curl")]
    assert blocks, f"{path} has no curl example naming {HOST}"
    for block in blocks:
        done = run_example(serving, ["bash", "-c", "set -euo pipefail\n" + block], example_home, 120)
        assert done.returncode == 0, f"{path}:\n{block}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        assert '"error"' not in done.stdout and done.stdout.strip(), (block, done.stdout[-2000:])
