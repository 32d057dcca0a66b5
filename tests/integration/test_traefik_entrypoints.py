"""The bundled Traefik's static flags (plugins/module_utils/_traefik.py) on the real binary of the pinned version.

Traefik exits at start on a flag it does not know, which on k3s is a crash loop of the only ingress: every flag
traefik_arguments gives is started here. Then what the entry points do with path tricks, sent byte for byte over a
raw socket (no client library normalises them), with a backend that records each request line as it arrived; and
how the entry point timeouts treat a streamed answer.

Traefik runs with its file provider only (tests/lib/traefik_file.py): one router a entry point, PathPrefix(/v1/) as
the API route, TLS on websecure as the k3s chart sets it. The rendered CRs add nothing to these entry point checks.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from ansible_collections.llmserve.k3s.plugins.module_utils import _traefik
from traefik import TRAEFIK_VERSION, traefik_binary
from traefik_file import FileTraefik, RecordingBackend, raw_request, stream

ENTRY_POINTS = ("web", "websecure")
# (path, what Traefik answers): 400 for an encoded character an entry point refuses, 404 where the cleaned path
# (/./, /../, // removed after %2E is decoded) leaves the API prefix. Never anything for the backend.
REFUSED = [
    ("/v1/..%2Finvocations", 400),
    ("/v1/..%2finvocations", 400),
    ("/v1/%2e%2e%2Finvocations", 400),
    ("/v1/%2E%2E%2Ftokenize", 400),
    ("/v1/..%5Cinvocations", 400),
    ("/v1/..%5cinvocations", 400),
    ("/v1/%252e%252e%252finvocations", 400),
    ("/v1/%2F", 400),
    ("/v1/chat%00/completions", 400),
    ("/v1/chat%3B/completions", 400),
    ("/v1/chat%3F/completions", 400),
    ("/v1/chat%23/completions", 400),
    ("/v1/%2e%2e/invocations", 404),
    ("/v1/../invocations", 404),
    ("/v1/../metrics", 404),
    ("/v1/./../tokenize", 404),
]
# Cleaned before routing, and forwarded exactly as routed: what the backend gets is the path that was checked.
CLEANED = [("//v1/models", "/v1/models"), ("/v1/./models", "/v1/models"), ("/v1//models", "/v1/models"),
           ("/v1/chat/completions", "/v1/chat/completions")]


def binary_version():
    """The version the Traefik binary under test reports (traefik version)."""
    out = subprocess.run([str(traefik_binary()), "version"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    return next(line.split()[-1] for line in out.splitlines() if line.startswith("Version:"))


@pytest.fixture(scope="module")
def backend():
    with RecordingBackend() as server:
        yield server


@pytest.fixture(scope="module")
def edge(backend, tmp_path_factory):
    """Traefik with traefik_arguments for the pinned version (no redirect on web, so both entry points route)."""
    flags = _traefik.traefik_arguments({"version": TRAEFIK_VERSION, "http_redirect": False})
    with FileTraefik(backend.url, flags, tmp_path_factory.mktemp("traefik-edge")) as traefik:
        traefik.wait_ready()
        yield traefik


def port_of(traefik, entry_point):
    return traefik.web_port if entry_point == "web" else traefik.websecure_port


def test_the_binary_is_the_pinned_version():
    assert binary_version() == TRAEFIK_VERSION


def test_every_flag_is_accepted_at_start(backend, tmp_path):
    """Every option on (redirect, trusted proxies, PROXY protocol): Traefik starts and serves."""
    flags = _traefik.traefik_arguments({"version": TRAEFIK_VERSION, "http_redirect": True,
                                        "trusted_ips": ["10.0.0.0/8"], "proxy_protocol_trusted_ips": ["192.0.2.10/32"]})
    with FileTraefik(backend.url, flags, tmp_path) as traefik:
        traefik.wait_ready()
        status, data = raw_request(traefik.web_port, "GET /v1/models HTTP/1.1")
        assert status == 301 and b"Location: https://localhost/v1/models" in data
        status, data = raw_request(traefik.websecure_port, "GET /v1/models HTTP/1.1", tls=True)
        assert status == 200, data[:300]


def test_a_flag_this_version_does_not_know_stops_traefik(backend, tmp_path):
    """The check above can fail: the flags for 3.7.12 (aliasHeadersStrategy) on the pinned binary exit at start."""
    if _traefik.parse_version(binary_version()) >= (3, 7, 12):
        pytest.skip("this binary knows aliasHeadersStrategy")
    flags = _traefik.traefik_arguments({"version": "3.7.12"})
    with FileTraefik(backend.url, flags, tmp_path) as traefik, pytest.raises(RuntimeError, match="aliasHeadersStrategy"):
        traefik.wait_ready()


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path,status", REFUSED)
def test_path_tricks_never_reach_the_backend(edge, backend, entry_point, method, path, status):
    before = len(backend.lines)
    body = b'{"model": "x"}' if method == "POST" else None
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))} if body else None
    got, data = raw_request(port_of(edge, entry_point), "%s %s HTTP/1.1" % (method, path),
                            tls=entry_point == "websecure", headers=headers, body=body)
    assert got == status, data[:300]
    assert backend.lines[before:] == []


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize("path,forwarded", CLEANED)
def test_the_backend_gets_the_path_that_was_routed(edge, backend, entry_point, path, forwarded):
    before = len(backend.lines)
    status, data = raw_request(port_of(edge, entry_point), "GET %s HTTP/1.1" % path, tls=entry_point == "websecure")
    assert status == 200, data[:300]
    assert backend.lines[before:] == ["GET %s HTTP/1.1" % forwarded]


def test_without_the_flags_traefik_forwards_an_encoded_slash(backend, tmp_path):
    """Traefik's own defaults pass /v1/..%2Finvocations on, still encoded: a backend that decodes serves /invocations."""
    with FileTraefik(backend.url, [], tmp_path) as traefik:
        traefik.wait_ready()
        before = len(backend.lines)
        status, dummy = raw_request(traefik.web_port, "GET /v1/..%2Finvocations HTTP/1.1")
        assert status == 200
        assert backend.lines[before:] == ["GET /v1/..%2Finvocations HTTP/1.1"]


# Streams: one event a second, EVENTS seconds long, each entry point; a clean end has [DONE] and the final 0-chunk.
EVENTS = 6
SHORT = "3s"


def stream_through(backend, flags, log_dir):
    with FileTraefik(backend.url, flags, log_dir) as traefik:
        traefik.wait_ready()
        return {ep: stream(port_of(traefik, ep), "/v1/chat/completions?events=%d&interval=1" % EVENTS,
                           tls=ep == "websecure", timeout=EVENTS + 30, body=b'{"model": "x", "stream": true}')
                for ep in ENTRY_POINTS}


def both(option, value):
    return ["--entryPoints.%s.transport.respondingTimeouts.%s=%s" % (ep, option, value) for ep in ENTRY_POINTS]


def test_a_read_timeout_does_not_cut_an_answer(backend, tmp_path):
    """readTimeout bounds reading the request: Go clears the deadline once the body is read, so a stream twice as long
    as the readTimeout ends cleanly (Traefik's default, 60s, is left alone for that reason)."""
    flags = _traefik.traefik_arguments({"version": TRAEFIK_VERSION, "http_redirect": False}) + both("readTimeout", SHORT)
    for entry_point, result in stream_through(backend, flags, tmp_path).items():
        assert result["status"] == 200 and result["done"] and result["complete"], (entry_point, result)
        assert result["seconds"] >= EVENTS, (entry_point, result)


def test_a_write_timeout_cuts_an_answer(backend, tmp_path):
    """What would cut streams: a writeTimeout is a deadline on the whole answer (no [DONE], no final chunk)."""
    started = time.monotonic()
    results = stream_through(backend, both("writeTimeout", SHORT), tmp_path)
    for entry_point, result in results.items():
        assert not result["complete"] and not result["done"], (entry_point, result)
        assert 2.5 <= result["seconds"] < EVENTS, (entry_point, result)
    assert time.monotonic() - started < 4 * EVENTS


def test_the_flags_keep_a_chart_write_timeout_from_cutting_answers(backend, tmp_path):
    """The chart writes ports.<ep>.transport.respondingTimeouts before additionalArguments; the last flag wins, so
    traefik_arguments' writeTimeout=0s keeps a writeTimeout set through the chart values from cutting streams."""
    flags = both("writeTimeout", SHORT) + _traefik.traefik_arguments({"version": TRAEFIK_VERSION, "http_redirect": False})
    for entry_point, result in stream_through(backend, flags, tmp_path).items():
        assert result["status"] == 200 and result["done"] and result["complete"], (entry_point, result)
